// Jobs: one page of List at a time (page tokens, never offsets, so the
// millionth job is as cheap as the first), filtered by state, org, labels and
// submission time, and kept live by the events stream: states change in
// place, and new jobs appear at the top of the first page.

import * as api from "../api.js";
import { append, el, parseLabels, replace, shortId, stateBadge, stateName, timeCell } from "../dom.js";
import { followEvents } from "../live.js";

const STATES = [
  "PENDING", "RUNNING", "RETRYING", "BLOCKED", "SCHEDULED", "SUCCEEDED", "FAILED", "CANCELED",
].map((name) => `JOB_STATE_${name}`);
const PAGE_SIZE = 50;
// New jobs re-read the first page at most this often, whatever the submit rate.
const REFRESH_EVERY_MS = 1000;

/** Filters as the page's address holds them (#/jobs?state=...&org=...). */
function filtersFrom(query, app) {
  const labels = {};
  for (const pair of query.getAll("label")) {
    const at = pair.indexOf("=");
    if (at > 0) labels[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return {
    states: query.getAll("state").filter((s) => STATES.includes(s)),
    orgId: query.has("org") ? query.get("org") : app.defaultOrg,
    labels,
    createdAfter: query.get("after") || "",
    createdBefore: query.get("before") || "",
    unmatched: query.get("unmatched") === "1",
    pageToken: query.get("page") || "",
    pageSize: PAGE_SIZE,
  };
}

/** The address of the jobs page for these filters. */
function hashFor(filters) {
  const query = new URLSearchParams();
  for (const state of filters.states) query.append("state", state);
  if (filters.orgId) query.set("org", filters.orgId);
  for (const [key, value] of Object.entries(filters.labels)) query.append("label", `${key}=${value}`);
  if (filters.createdAfter) query.set("after", filters.createdAfter);
  if (filters.createdBefore) query.set("before", filters.createdBefore);
  if (filters.unmatched) query.set("unmatched", "1");
  if (filters.pageToken) query.set("page", filters.pageToken);
  const text = query.toString();
  return text ? `#/jobs?${text}` : "#/jobs";
}

/** An RFC 3339 time as a datetime-local input's value (local time), and back. */
function toLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return new Date(date.getTime() - date.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
}
function fromLocalInput(value) {
  return value ? new Date(value).toISOString() : "";
}

// Page tokens already passed, so "Newer" can step back; kept per filter set.
let passed = { key: "", tokens: [] };

function filterForm(filters, app) {
  const id = el("input", { id: "search-id", name: "id", placeholder: "Job id", spellcheck: "false", autocomplete: "off" });
  const search = el(
    "form",
    { class: "search", id: "search-form", role: "search" },
    id,
    el("button", { type: "submit" }, "Open"),
  );
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = id.value.trim();
    if (wanted) app.navigate(`#/jobs/${encodeURIComponent(wanted)}`);
  });

  const stateBoxes = STATES.map((state) =>
    el(
      "label",
      { class: "chip" },
      el("input", { type: "checkbox", name: "state", value: state, checked: filters.states.includes(state) }),
      stateName(state),
    ),
  );
  const org = el("input", { id: "filter-org", name: "org", value: filters.orgId, placeholder: "default" });
  const labels = el("input", {
    id: "filter-labels", name: "labels", placeholder: "team=data, tier=1",
    value: Object.entries(filters.labels).map(([k, v]) => `${k}=${v}`).join(", "),
  });
  const after = el("input", { id: "filter-after", type: "datetime-local", value: toLocalInput(filters.createdAfter) });
  const before = el("input", { id: "filter-before", type: "datetime-local", value: toLocalInput(filters.createdBefore) });
  // Runnable jobs no connected worker can take (their `requires` match no worker's labels).
  const unmatched = el("input", { id: "filter-unmatched", type: "checkbox", checked: filters.unmatched });
  const form = el(
    "form",
    { class: "filters", id: "filters" },
    el("fieldset", { class: "states" }, el("legend", {}, "State"), stateBoxes),
    el("label", {}, "Org", org),
    el("label", {}, "Labels", labels),
    el("label", {}, "Submitted after", after),
    el("label", {}, "before", before),
    el("label", { class: "chip", title: "Waiting jobs no connected worker matches" }, unmatched, "unmatched"),
    el("div", { class: "buttons" },
      el("button", { type: "submit", id: "apply-filters" }, "Apply"),
      el("a", { href: "#/jobs?org=", class: "button-link" }, "Clear")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = parseLabels(labels.value);
    app.navigate(
      hashFor({
        states: stateBoxes.map((box) => box.firstChild).filter((box) => box.checked).map((box) => box.value),
        orgId: org.value.trim(),
        labels: chosen,
        createdAfter: fromLocalInput(after.value),
        createdBefore: fromLocalInput(before.value),
        unmatched: unmatched.checked,
        pageToken: "",
      }),
    );
  });
  return el("div", { class: "toolbar" }, search, el("details", { class: "filter-box", open: hasFilters(filters) }, el("summary", {}, "Filters"), form));
}

function hasFilters(filters) {
  return Boolean(
    filters.states.length || Object.keys(filters.labels).length || filters.createdAfter || filters.createdBefore
      || filters.unmatched,
  );
}

/** One table row; `cells` lets the live stream update it in place. */
function jobRow(job) {
  const state = el("td", { class: "state" }, stateBadge(job.state));
  const attempt = el("td", { class: "wide num" }, String(job.attempt || 0));
  const updated = el("td", { class: "wide" }, timeCell(job.updateTime));
  const row = el(
    "tr",
    { dataset: { jobId: job.id } },
    el("td", { class: "id" }, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, title: job.id }, shortId(job.id))),
    state,
    el("td", { class: "cmd" }, el("code", {}, (job.cmd || []).join(" "))),
    el("td", { class: "wide" }, job.orgId),
    attempt,
    el("td", {}, timeCell(job.createTime)),
    updated,
  );
  return { row, state, attempt, updated };
}

export function render(root, { query }, app) {
  const filters = filtersFrom(query, app);
  const key = JSON.stringify({ ...filters, pageToken: "" });
  if (passed.key !== key) passed = { key, tokens: [] };

  const body = el("tbody", { id: "jobs-body" });
  const status = el("span", { class: "live-status", id: "live-status" }, "connecting…");
  const banner = el("p", { class: "banner", id: "new-jobs", hidden: true });
  const pager = el("nav", { class: "pager", "aria-label": "Pages" });
  append(
    root,
    el("div", { class: "page-head" }, el("h1", {}, "Jobs"), status),
    filterForm(filters, app),
    banner,
    el(
      "div", { class: "table-wrap" },
      el("table", { class: "jobs", id: "jobs-table" },
        el("thead", {}, el("tr", {},
          el("th", {}, "Job"), el("th", {}, "State"), el("th", {}, "Command"),
          el("th", { class: "wide" }, "Org"), el("th", { class: "wide" }, "Attempt"),
          el("th", {}, "Submitted"), el("th", { class: "wide" }, "Updated"))),
        body),
    ),
    pager,
  );

  const rows = new Map();
  const firstPage = !filters.pageToken;
  let aborter = new AbortController();
  let refreshTimer = null;
  let lastRefresh = 0;
  let unseen = 0;

  async function load() {
    aborter.abort();
    aborter = new AbortController();
    let page;
    try {
      page = await api.listJobs(filters, aborter.signal);
    } catch (error) {
      if (error.name !== "AbortError") app.notify(error.message, "error");
      return;
    }
    lastRefresh = Date.now();
    rows.clear();
    const jobs = page.jobs || [];
    replace(body, jobs.map((job) => {
      const parts = jobRow(job);
      rows.set(job.id, parts);
      return parts.row;
    }));
    if (!jobs.length) {
      body.append(el("tr", { class: "empty" }, el("td", { colspan: 7 }, "No jobs match.")));
    }
    showPager(page.nextPageToken || "");
  }

  function showPager(next) {
    const newer = passed.tokens.length || filters.pageToken
      ? el("button", { type: "button", id: "newer", onclick: () => {
          const previous = passed.tokens.pop() || "";
          app.navigate(hashFor({ ...filters, pageToken: previous }));
        } }, "← Newer")
      : null;
    const older = next
      ? el("button", { type: "button", id: "older", onclick: () => {
          passed.tokens.push(filters.pageToken);
          app.navigate(hashFor({ ...filters, pageToken: next }));
        } }, "Older →")
      : null;
    replace(pager, newer, older);
  }

  function refreshSoon() {
    if (refreshTimer) return;
    const wait = Math.max(0, lastRefresh + REFRESH_EVERY_MS - Date.now());
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      load();
    }, wait);
  }

  function onEvents(events) {
    for (const event of events) {
      const shown = rows.get(event.jobId);
      const change = event.jobStateChanged;
      if (shown && change) {
        replace(shown.state, stateBadge(change.toState));
        if (change.attempt) replace(shown.attempt, String(change.attempt));
        replace(shown.updated, timeCell(event.time));
        shown.row.classList.remove("flash");
        void shown.row.offsetWidth; // restart the highlight
        shown.row.classList.add("flash");
      } else if (event.jobSubmitted) {
        if (firstPage) refreshSoon();
        else unseen += 1;
      }
    }
    if (unseen) {
      banner.hidden = false;
      replace(banner, `${unseen} new job${unseen === 1 ? "" : "s"} since this page was read. `,
        el("a", { href: hashFor({ ...filters, pageToken: "" }) }, "Show the newest"));
    }
  }

  const stream = followEvents({
    orgId: filters.orgId,
    topic: "jobs/",
    onEvents,
    onState: (state) => {
      status.textContent = state === "live" ? "● live" : state;
      status.dataset.state = state;
      if (state === "live") refreshSoon(); // catch what happened while away
    },
  });
  load();

  return () => {
    aborter.abort();
    clearTimeout(refreshTimer);
    stream.close();
  };
}
