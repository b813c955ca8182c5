// Sign in with a token. The token goes in the request body, once, and comes
// back as an HttpOnly session cookie: the page never keeps it.

import * as api from "../api.js";
import { append, el, replace } from "../dom.js";

export function render(root, { query }, app) {
  const token = el("input", {
    id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    spellcheck: "false", placeholder: "zb_…",
  });
  const problem = el("p", { class: "error", id: "signin-error", role: "alert", hidden: true });
  const button = el("button", { type: "submit", id: "signin-submit" }, "Sign in");
  const form = el(
    "form",
    { class: "card narrow", id: "signin-form" },
    el("label", { for: "token" }, "Token"),
    token,
    el("p", { class: "muted" }, "A token made with `zbrain token create` (or by an admin)."),
    problem,
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    problem.hidden = true;
    try {
      const session = await api.signIn(token.value.trim());
      token.value = "";
      app.signedIn(session, query.get("next"));
    } catch (error) {
      problem.hidden = false;
      replace(problem, error.message);
    } finally {
      button.disabled = false;
    }
  });
  append(root, el("h1", {}, "Sign in"), form);
  token.focus();
}
