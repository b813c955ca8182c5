// The console's shell: a hash router (#/jobs, #/jobs/<id>, ...) so the server
// serves one page and every link is a plain anchor; the account corner (who
// is signed in, sign out); notices. Each page module exports
// render(root, params, app) and may answer a function that stops what it
// started (streams, timers) when the page is left.

import * as api from "./api.js";
import { el, refreshTimes, replace } from "./dom.js";
import * as jobPage from "./pages/job.js";
import * as jobsPage from "./pages/jobs.js";
import * as orgsPage from "./pages/orgs.js";
import * as overviewPage from "./pages/overview.js";
import * as signInPage from "./pages/signin.js";
import * as submitPage from "./pages/submit.js";
import * as tokensPage from "./pages/tokens.js";
import * as workersPage from "./pages/workers.js";

const main = document.getElementById("main");
const account = document.getElementById("account");
const notice = document.getElementById("notice");

/** What pages share: the session, navigation and notices. */
const app = {
  session: null, // set when signed in: {tokenId, orgId, role}
  navigate(hash) {
    if (window.location.hash === hash) route();
    else window.location.hash = hash;
  },
  /** Show a short message at the top; errors stay until the next page. */
  notify(message, kind = "info") {
    notice.hidden = false;
    notice.className = `notice ${kind}`;
    notice.textContent = message;
  },
  /** The org pages default to: the session's, else the server's default. */
  get defaultOrg() {
    return (this.session && this.session.orgId) || "";
  },
};

/** Split "#/jobs/ID?state=x" into the page, its path parts and the query. */
function parseHash() {
  const hash = window.location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query) };
}

function pageFor(parts) {
  switch (parts[0]) {
    case undefined:
    case "overview":
      return { module: overviewPage, name: "overview" };
    case "jobs":
      return parts[1] ? { module: jobPage, name: "jobs" } : { module: jobsPage, name: "jobs" };
    case "workers":
      return { module: workersPage, name: "workers" };
    case "orgs":
      return { module: orgsPage, name: "orgs" };
    case "submit":
      return { module: submitPage, name: "submit" };
    case "signin":
      return { module: signInPage, name: "signin" };
    case "tokens":
      return { module: tokensPage, name: "tokens" };
    default:
      return null;
  }
}

let leave = null;

function route() {
  if (leave) leave();
  leave = null;
  notice.hidden = true;
  const { parts, query } = parseHash();
  const page = pageFor(parts);
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", page !== null && link.dataset.page === page.name);
  }
  const root = el("section", { class: `page page-${page ? page.name : "missing"}` });
  replace(main, root);
  if (!page) {
    replace(root, el("h1", {}, "Not found"), el("p", {}, "No page here. ", el("a", { href: "#/jobs" }, "See the jobs.")));
    return;
  }
  try {
    leave = page.module.render(root, { parts, query }, app) || null;
  } catch (error) {
    app.notify(error.message, "error");
  }
}

function showAccount() {
  if (!app.session || !app.session.signedIn) {
    document.getElementById("tokens-link").hidden = true;
    replace(account);
    return;
  }
  // Admins manage tokens; the link is shown to them only (the server decides anyway).
  document.getElementById("tokens-link").hidden = app.session.role !== "admin";
  const who = [app.session.orgId, app.session.role, app.session.tokenId && `token ${app.session.tokenId}`]
    .filter(Boolean)
    .join(" · ");
  replace(
    account,
    el("span", { class: "who", title: who }, who),
    el("button", { type: "button", class: "link", id: "sign-out", onclick: signOut }, "Sign out"),
  );
}

async function signOut() {
  try {
    await api.signOut();
  } catch (error) {
    app.notify(`Signing out failed: ${error.message}`, "error");
    return;
  }
  app.session = null;
  showAccount();
  app.navigate("#/signin");
}

/** Called by the sign-in page once a session exists. */
app.signedIn = (session, next) => {
  app.session = session;
  showAccount();
  app.navigate(next || "#/jobs");
};

// Any API call answered 401 lands here: ask for a token, then come back.
window.addEventListener("zbrain:signed-out", () => {
  app.session = null;
  showAccount();
  const { parts } = parseHash();
  if (parts[0] !== "signin") {
    const back = window.location.hash || "#/";
    app.navigate(`#/signin?next=${encodeURIComponent(back)}`);
  }
});

window.addEventListener("hashchange", route);
setInterval(() => refreshTimes(main), 10_000);

async function start() {
  let session = null;
  try {
    session = await api.currentSession();
  } catch {
    // The page itself will say what is wrong when it calls the API.
  }
  app.session = session && session.signedIn ? session : null;
  showAccount();
  if (session && session.authRequired && !session.signedIn && parseHash().parts[0] !== "signin") {
    // Straight to the sign-in page, coming back here after (no hashchange, one render).
    const back = window.location.hash || "#/";
    window.history.replaceState(null, "", `#/signin?next=${encodeURIComponent(back)}`);
  }
  route();
}

start();
