// One org's settings (OrgService): its limits, quotas with what it uses,
// retention, and whether it or some of its jobs are paused. Admins (and
// everyone when the server runs without auth) get the controls; others see
// the settings read-only. The server decides either way: a refused change
// shows its message.

import * as api from "../api.js";
import { append, el, facts, parseLabels, replace, timeCell } from "../dom.js";

const REFRESH_MS = 3000;
// The settings UpdateOrgSettings takes, with how each is shown.
const LIMITS = [
  ["maxRunningJobs", "Max running jobs", "integer"],
  ["maxStartsPerSecond", "Max starts per second", "number"],
  ["maxWaitingJobs", "Max waiting jobs", "integer"],
  ["maxLogBytes", "Log quota (bytes)", "integer"],
  ["maxArtifactBytes", "Artifact quota (bytes)", "integer"],
  ["retentionDays", "Retention (days)", "integer"],
];

function bytes(n) {
  return `${n.toLocaleString("en")} bytes`;
}

/** "1,200 of 4,096 bytes (29%)", or the usage alone when there is no quota. */
function usage(used, quota) {
  if (!quota) return `${bytes(used)} stored, no quota`;
  return `${used.toLocaleString("en")} of ${bytes(quota)} (${Math.round((used / quota) * 100)}%)`;
}

function selectorText(selector) {
  return Object.entries(selector.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

function canChange(app) {
  return !app.session || app.session.role === "admin";
}

export function render(root, { query }, app) {
  const orgId = query.get("org") || app.defaultOrg || "default";
  const orgInput = el("input", { id: "org-id", value: orgId, required: true, spellcheck: "false" });
  const pick = el("form", { class: "search", id: "org-form" }, orgInput, el("button", { type: "submit" }, "Show"));
  pick.addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = orgInput.value.trim();
    if (wanted) app.navigate(`#/orgs?org=${encodeURIComponent(wanted)}`);
  });
  const status = el("div", { id: "org-status" });
  const settingsCard = el("section", { class: "card" }, el("h2", {}, "Limits and quotas"));
  const pauseCard = el("section", { class: "card" }, el("h2", {}, "Pause"));
  append(root,
    el("div", { class: "page-head" }, el("h1", {}, "Org ", el("span", { class: "mono", id: "org-name" }, orgId))),
    el("div", { class: "toolbar" }, pick),
    status,
    el("div", { class: "grid" }, settingsCard, pauseCard));

  let settings = null;
  let editing = false; // a form being filled in is not replaced by the refresh
  let aborter = new AbortController();

  async function load() {
    if (editing) return;
    aborter.abort();
    aborter = new AbortController();
    try {
      settings = await api.getOrgSettings(orgId, aborter.signal);
    } catch (error) {
      if (error.name !== "AbortError") app.notify(error.message, "error");
      return;
    }
    show();
  }

  async function act(button, action) {
    button.disabled = true;
    try {
      settings = await action();
      editing = false;
      show();
    } catch (error) {
      app.notify(error.message, "error");
      button.disabled = false;
    }
  }

  function show() {
    const selectors = settings.pausedSelectors || [];
    replace(status, facts([
      ["State", el("span", { id: "org-paused", class: settings.paused ? "badge state-paused" : "badge state-running",
        dataset: { paused: String(Boolean(settings.paused)) } }, settings.paused ? "paused" : "running")],
      selectors.length && ["Paused selectors", el("span", { id: "org-paused-selectors" },
        selectors.map((s) => el("span", { class: "chip mono" }, selectorText(s))))],
      ["Log bytes", el("span", { id: "org-log-usage" }, usage(Number(settings.logBytesUsed || 0), Number(settings.maxLogBytes || 0)))],
      ["Artifact bytes", el("span", { id: "org-artifact-usage" },
        usage(Number(settings.artifactBytesUsed || 0), Number(settings.maxArtifactBytes || 0)))],
      settings.updateTime && ["Changed", timeCell(settings.updateTime)],
    ]));
    showSettings();
    showPause(selectors);
  }

  function showSettings() {
    if (!canChange(app)) {
      replace(settingsCard, el("h2", {}, "Limits and quotas"), facts(LIMITS.map(([field, name]) =>
        [name, el("span", { dataset: { setting: field } }, Number(settings[field] || 0) ? String(settings[field]) : "none")])));
      return;
    }
    const inputs = LIMITS.map(([field, name, kind]) => [field, name, el("input", {
      id: `setting-${field}`, type: "number", min: "0", step: kind === "integer" ? "1" : "any",
      value: String(settings[field] || 0), onfocus: () => { editing = true; },
    })]);
    const form = el("form", { class: "filters", id: "settings-form" },
      inputs.map(([, name, input]) => el("label", {}, name, input)),
      el("div", { class: "buttons" }, el("button", { type: "submit", id: "save-settings" }, "Save")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const changes = {};
      for (const [field, , input] of inputs) {
        if (Number(input.value) !== Number(settings[field] || 0)) changes[field] = Number(input.value);
      }
      act(event.submitter || form.querySelector("button"), async () => {
        const updated = await api.updateOrgSettings(orgId, changes);
        app.notify("Settings saved.");
        return updated;
      });
    });
    replace(settingsCard, el("h2", {}, "Limits and quotas"),
      el("p", { class: "muted" }, "0 means the org has none of its own: the server's default applies."), form);
  }

  function showPause(selectors) {
    if (!canChange(app)) {
      replace(pauseCard, el("h2", {}, "Pause"), el("p", { class: "muted" }, "Only an admin can pause or resume the org."));
      return;
    }
    const whole = settings.paused
      ? el("button", { type: "button", id: "org-resume", onclick: (event) => act(event.target, () => api.resumeOrg(orgId)) }, "Resume org")
      : el("button", { type: "button", id: "org-pause", class: "danger",
        onclick: (event) => act(event.target, () => api.pauseOrg(orgId)) }, "Pause org");
    const selectorInput = el("input", { id: "pause-selector", placeholder: "pipeline=nightly", onfocus: () => { editing = true; } });
    const selectorForm = el("form", { class: "filters", id: "pause-selector-form" },
      el("label", {}, "Labels", selectorInput),
      el("div", { class: "buttons" }, el("button", { type: "submit" }, "Pause these jobs")));
    selectorForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const labels = parseLabels(selectorInput.value);
      if (!Object.keys(labels).length) {
        app.notify("Give labels as key=value, separated by commas.", "error");
        return;
      }
      act(event.submitter || selectorForm.querySelector("button"), () => api.pauseOrg(orgId, labels));
    });
    replace(pauseCard, el("h2", {}, "Pause"),
      el("p", { class: "muted" }, "Paused jobs wait; submits are still accepted and running jobs finish."),
      el("div", { class: "actions" }, whole),
      selectors.length ? el("ul", { class: "links", id: "paused-selectors" }, selectors.map((selector) =>
        el("li", {}, el("span", { class: "chip mono" }, selectorText(selector)), " ",
          el("button", { type: "button", class: "link", onclick: (event) =>
            act(event.target, () => api.resumeOrg(orgId, selector.labels || {})) }, "resume")))) : null,
      selectorForm);
  }

  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => {
    aborter.abort();
    clearInterval(timer);
  };
}
