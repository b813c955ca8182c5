// Overview: jobs by state per org, the oldest waiting job, and the last
// hour's queue depth and throughput as a chart drawn here (SVG).
//
// Everything is read through List, the same bounded pages the jobs table
// uses, so the page costs the server a few indexed reads whatever is stored:
// counts stop at COUNT_CAP ("500+"), and the chart reads at most
// HOUR_PAGES pages of the jobs submitted in the last hour (it says so when
// there were more).

import * as api from "../api.js";
import { append, el, replace, stateBadge, timeCell } from "../dom.js";

const STATES = [
  "PENDING", "RUNNING", "RETRYING", "BLOCKED", "SCHEDULED", "SUCCEEDED", "FAILED", "CANCELED",
].map((name) => `JOB_STATE_${name}`);
const COUNT_CAP = 500;
const HOUR_PAGES = 5;
const PAGE = 1000;
const MINUTES = 60;
const REFRESH_MS = 10_000;

async function countState(orgId, state, signal) {
  const page = await api.listJobs({ orgId, states: [state], pageSize: COUNT_CAP }, signal);
  const count = (page.jobs || []).length;
  return page.nextPageToken ? `${count}+` : String(count);
}

async function oldestWaiting(orgId, signal) {
  const page = await api.listJobs(
    { orgId, states: ["JOB_STATE_PENDING"], order: "LIST_ORDER_OLDEST_FIRST", pageSize: 1 }, signal);
  return (page.jobs || [])[0] || null;
}

/** Jobs submitted in the last hour (at most HOUR_PAGES pages), and whether there were more. */
async function lastHour(orgId, since, signal) {
  const jobs = [];
  let pageToken = "";
  for (let pages = 0; pages < HOUR_PAGES; pages += 1) {
    const page = await api.listJobs(
      { orgId, createdAfter: since.toISOString(), order: "LIST_ORDER_OLDEST_FIRST", pageSize: PAGE, pageToken },
      signal);
    jobs.push(...(page.jobs || []));
    pageToken = page.nextPageToken || "";
    if (!pageToken) return { jobs, more: false };
  }
  return { jobs, more: true };
}

/** Per minute: jobs finished in it, and jobs waiting at its end. */
function series(jobs, since) {
  const start = since.getTime();
  const finished = new Array(MINUTES).fill(0);
  const depth = new Array(MINUTES).fill(0);
  for (const job of jobs) {
    const created = Date.parse(job.createTime);
    const firstStart = (job.attempts && job.attempts[0] && job.attempts[0].startTime) || job.startTime;
    const left = Math.min(
      firstStart ? Date.parse(firstStart) : Infinity,
      job.finishTime ? Date.parse(job.finishTime) : Infinity,
    );
    if (job.finishTime) {
      const minute = Math.floor((Date.parse(job.finishTime) - start) / 60_000);
      if (minute >= 0 && minute < MINUTES) finished[minute] += 1;
    }
    for (let minute = 0; minute < MINUTES; minute += 1) {
      const end = start + (minute + 1) * 60_000;
      if (created <= end && left > end) depth[minute] += 1;
    }
  }
  return { finished, depth };
}

/** A small bar (throughput) and line (queue depth) chart, drawn as SVG. */
function chart({ finished, depth }) {
  const width = 600;
  const height = 160;
  const pad = 24;
  const top = Math.max(1, ...finished, ...depth);
  const x = (minute) => pad + (minute / MINUTES) * (width - 2 * pad);
  const y = (value) => height - pad - (value / top) * (height - 2 * pad);
  const barWidth = (width - 2 * pad) / MINUTES - 1;
  const bars = finished.map((value, minute) =>
    el("svg:rect", { x: x(minute), y: y(value), width: Math.max(barWidth, 1), height: height - pad - y(value), class: "bar-finished" },
      el("svg:title", {}, `${value} finished in minute ${minute - MINUTES} to ${minute - MINUTES + 1}`)));
  const points = depth.map((value, minute) => `${x(minute + 0.5)},${y(value)}`).join(" ");
  return el("svg:svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", id: "hour-chart", role: "img",
      "aria-label": "Queue depth and jobs finished per minute over the last hour" },
    el("svg:line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, class: "axis" }),
    el("svg:text", { x: pad, y: height - 6, class: "tick" }, "−60 min"),
    el("svg:text", { x: width - pad, y: height - 6, class: "tick end" }, "now"),
    el("svg:text", { x: pad, y: pad - 8, class: "tick" }, String(top)),
    bars,
    el("svg:polyline", { points, class: "line-depth" }));
}

export function render(root, _params, app) {
  const orgsInput = el("input", { id: "overview-orgs", placeholder: "orgs, comma-separated (default: those seen)" });
  const form = el("form", { class: "inline", id: "overview-form" }, orgsInput, el("button", { type: "submit" }, "Show"));
  const table = el("div", { class: "table-wrap", id: "by-state" });
  const oldest = el("div", { id: "oldest" });
  const hour = el("div", { id: "hour" });
  append(root,
    el("div", { class: "page-head" }, el("h1", {}, "Overview")),
    form,
    el("section", { class: "card" }, el("h2", {}, "Jobs by state"), table),
    el("section", { class: "card" }, el("h2", {}, "Oldest waiting job"), oldest),
    el("section", { class: "card" }, el("h2", {}, "Last hour"),
      el("p", { class: "legend" }, el("span", { class: "key finished" }), " jobs finished per minute  ",
        el("span", { class: "key depth" }), " jobs waiting"),
      hour));

  let aborter = new AbortController();
  let chosen = [];
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    chosen = orgsInput.value.split(",").map((org) => org.trim()).filter(Boolean);
    load();
  });

  async function orgs(signal) {
    if (chosen.length) return chosen;
    const seen = new Set([app.defaultOrg]);
    try {
      const page = await api.listWorkers({ pageSize: 100 }, signal);
      for (const worker of page.workers || []) for (const org of worker.orgIds || []) seen.add(org);
    } catch (error) {
      if (error.name === "AbortError") throw error;
    }
    // "" is the server's default org; name it once.
    if (seen.has("") && seen.size > 1 && seen.has("default")) seen.delete("");
    return [...seen];
  }

  async function load() {
    aborter.abort();
    aborter = new AbortController();
    const { signal } = aborter;
    try {
      const names = await orgs(signal);
      // An org the caller may not read (a worker serving it and ours) is left out.
      const counts = await Promise.all(names.map((org) =>
        Promise.all(STATES.map((s) => countState(org, s, signal))).catch((error) => {
          if (error.name === "AbortError") throw error;
          return null;
        })));
      replace(table, el("table", { class: "by-state" },
        el("thead", {}, el("tr", {}, el("th", {}, "Org"), STATES.map((s) => el("th", {}, stateBadge(s))))),
        el("tbody", {}, names.map((org, i) => counts[i] && el("tr", { dataset: { org } },
          el("th", {}, org || "default"),
          counts[i].map((count, j) => el("td", { class: "num" },
            el("a", { href: `#/jobs?org=${encodeURIComponent(org)}&state=${STATES[j]}` }, count))))))));
      const first = names[0];
      const waiting = await oldestWaiting(first, signal);
      replace(oldest, waiting
        ? el("p", {}, el("a", { href: `#/jobs/${encodeURIComponent(waiting.id)}`, class: "mono" }, waiting.id),
            ` in ${first || "default"}, submitted `, timeCell(waiting.createTime))
        : el("p", { class: "muted" }, `No job is waiting in ${first || "default"}.`));
      const since = new Date(Date.now() - MINUTES * 60_000);
      const { jobs, more } = await lastHour(first, since, signal);
      replace(hour, chart(series(jobs, since)),
        el("p", { class: "muted" }, `${jobs.length} jobs submitted in the last hour in ${first || "default"}`,
          more ? ` (the first ${jobs.length} only)` : "", "."));
    } catch (error) {
      if (error.name !== "AbortError") app.notify(error.message, "error");
    }
  }

  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => {
    aborter.abort();
    clearInterval(timer);
  };
}
