// Tokens, for admins: list, create (the secret shown once, here only) and
// revoke (the token's sessions and streams end within a second).

import * as api from "../api.js";
import { append, el, enumWords, replace, timeCell } from "../dom.js";

const ROLES = ["TOKEN_ROLE_CLIENT", "TOKEN_ROLE_WORKER", "TOKEN_ROLE_ADMIN"];

export function render(root, _params, app) {
  const body = el("tbody", { id: "tokens-body" });
  const org = el("input", { id: "token-org", required: true, placeholder: "team-a" });
  const role = el("select", { id: "token-role" }, ROLES.map((r) => el("option", { value: r }, enumWords(r, "TOKEN_ROLE_"))));
  const description = el("input", { id: "token-description", placeholder: "what it is for" });
  const created = el("div", { id: "token-created", hidden: true, class: "card" });
  const form = el("form", { class: "filters", id: "token-form" },
    el("label", {}, "Org", org), el("label", {}, "Role", role), el("label", {}, "Description", description),
    el("div", { class: "buttons" }, el("button", { type: "submit" }, "Create token")));
  append(root,
    el("div", { class: "page-head" }, el("h1", {}, "Tokens")),
    el("section", { class: "card" }, el("h2", {}, "New token"), form),
    created,
    el("div", { class: "table-wrap" },
      el("table", { id: "tokens-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "Token"), el("th", {}, "Org"), el("th", {}, "Role"),
          el("th", { class: "wide" }, "Description"), el("th", {}, "Created"), el("th", {}, "State"))),
        body)));

  async function load() {
    try {
      const tokens = await api.listTokens("");
      replace(body, tokens.map((token) => el("tr", { dataset: { tokenId: token.id } },
        el("td", { class: "mono" }, token.id),
        el("td", {}, token.orgId),
        el("td", {}, enumWords(token.role, "TOKEN_ROLE_")),
        el("td", { class: "wide" }, token.description || ""),
        el("td", {}, timeCell(token.createTime)),
        el("td", {}, token.revokeTime
          ? el("span", { class: "muted" }, "revoked ", timeCell(token.revokeTime))
          : el("button", { type: "button", class: "danger", onclick: () => revoke(token.id) }, "Revoke")))));
    } catch (error) {
      app.notify(error.message, "error");
    }
  }

  async function revoke(id) {
    try {
      await api.revokeToken(id);
      app.notify(`Token ${id} revoked.`);
      load();
    } catch (error) {
      app.notify(error.message, "error");
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const answer = await api.createToken(org.value.trim(), role.value, description.value.trim());
      created.hidden = false;
      replace(created, el("h2", {}, `Token ${answer.token.id}`),
        el("p", {}, "Copy it now: it is shown only this once."),
        el("pre", { class: "json", id: "token-secret" }, answer.secret));
      load();
    } catch (error) {
      app.notify(error.message, "error");
    }
  });
  load();
}
