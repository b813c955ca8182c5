// One job: its spec, state, attempts, dependencies, output and artifacts,
// and its log following live. The job is read again whenever the events
// stream says it changed, so the state shown is never older than the stream.

import * as api from "../api.js";
import {
  TERMINAL, append, duration, durationSeconds, el, enumWords, facts, prettyJson, replace,
  secondsBetween, stateBadge, stateName, timeCell,
} from "../dom.js";
import { followEvents, followLogs } from "../live.js";
import { LogView } from "../logview.js";

const CAUSE = "TRANSITION_CAUSE_";
// How often a waiting job is read again: what holds it (a pause, a limit, no
// matching worker) changes without an event of the job's own.
const WAITING_REFRESH_MS = 2000;
const WAITING = new Set(["JOB_STATE_PENDING", "JOB_STATE_RETRYING"]);

function jobLink(id) {
  return el("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "mono" }, id);
}

function section(title, ...content) {
  return el("section", { class: "card" }, el("h2", {}, title), content);
}

/**
 * Environment variables with their values hidden until clicked; `revealed`
 * (the names shown) outlives a re-render when the job changes.
 */
function envTable(env, revealed) {
  const names = Object.keys(env || {}).sort();
  if (!names.length) return el("p", { class: "muted" }, "None.");
  return el("table", { class: "env", id: "env" },
    el("tbody", {}, names.map((name) => {
      const value = el("span", { class: "secret" });
      const toggle = el("button", { type: "button", class: "link reveal" });
      const paint = () => {
        const shown = revealed.has(name);
        value.textContent = shown ? env[name] : "••••••";
        toggle.textContent = shown ? "hide" : "show";
      };
      toggle.addEventListener("click", () => {
        if (!revealed.delete(name)) revealed.add(name);
        paint();
      });
      paint();
      return el("tr", {}, el("th", { class: "mono" }, name), el("td", { class: "mono" }, value), el("td", {}, toggle));
    })));
}

function labelList(labels) {
  const pairs = Object.entries(labels || {});
  if (!pairs.length) return el("span", { class: "muted" }, "none");
  return pairs.map(([k, v]) => el("span", { class: "chip mono" }, `${k}=${v}`));
}

/** The attempts as a table and a bar each, on one time axis. */
function attemptsTimeline(job) {
  const attempts = job.attempts || [];
  if (!attempts.length) return el("p", { class: "muted" }, "No attempt yet.");
  const begin = Math.min(...attempts.map((a) => Date.parse(a.startTime)));
  const end = Math.max(...attempts.map((a) => (a.endTime ? Date.parse(a.endTime) : Date.now())));
  const span = Math.max(end - begin, 1);
  return el("table", { class: "attempts", id: "attempts" },
    el("thead", {}, el("tr", {},
      el("th", {}, "#"), el("th", {}, "Worker"), el("th", {}, "Started"), el("th", {}, "Took"),
      el("th", {}, "Outcome"), el("th", { class: "wide" }, "Timeline"))),
    el("tbody", {}, attempts.map((attempt) => {
      const from = Date.parse(attempt.startTime);
      const to = attempt.endTime ? Date.parse(attempt.endTime) : Date.now();
      const bar = el("span", { class: `bar ${attempt.endTime ? "" : "running"}` });
      bar.style.marginLeft = `${((from - begin) / span) * 100}%`;
      bar.style.width = `${Math.max(((to - from) / span) * 100, 1)}%`;
      const outcome = attempt.endTime ? enumWords(attempt.cause, CAUSE) : "running";
      return el("tr", {},
        el("td", { class: "num" }, String(attempt.number)),
        el("td", { class: "mono" }, attempt.workerId || "—"),
        el("td", {}, timeCell(attempt.startTime)),
        el("td", {}, duration(secondsBetween(attempt.startTime, attempt.endTime))),
        el("td", {}, el("span", { class: `outcome ${attempt.endTime ? "" : "running"}` }, outcome),
          attempt.error ? el("div", { class: "error-text" }, attempt.error) : null),
        el("td", { class: "wide timeline" }, bar));
    })));
}

function dependencies(job) {
  const parts = [];
  for (const dep of job.dependsOn || []) {
    parts.push(el("li", {}, "waits for ", dep.jobId ? jobLink(dep.jobId) : dep.ref,
      ` (${enumWords(dep.condition, "DEPENDENCY_CONDITION_") || "succeeded"})`));
  }
  for (const child of job.childIds || []) parts.push(el("li", {}, "needed by ", jobLink(child)));
  if (job.rerunOf) parts.push(el("li", {}, "reruns ", jobLink(job.rerunOf)));
  for (const rerun of job.rerunIds || []) parts.push(el("li", {}, "rerun as ", jobLink(rerun)));
  return parts.length ? el("ul", { class: "links", id: "dependencies" }, parts) : null;
}

const RESOURCES = [
  ["memoryBytes", "memory", (n) => `${n.toLocaleString("en")} bytes`],
  ["cpuSeconds", "CPU", (n) => `${n} s`],
  ["processes", "processes", String],
  ["openFiles", "open files", String],
  ["fileSizeBytes", "file size", (n) => `${n.toLocaleString("en")} bytes`],
];

/** The job's own resource limits (JobSpec.resources), or nothing when it set none. */
function resourceFacts(resources) {
  const set = RESOURCES.filter(([field]) => Number(resources?.[field] || 0) > 0)
    .map(([field, name, show]) => `${name} ${show(Number(resources[field]))}`);
  return set.length ? ["Resources", el("span", { id: "resources" }, set.join(", "))] : null;
}

/** The spec of a job, as Submit takes it, to submit it again. */
function specOf(job) {
  return {
    orgId: job.orgId, cmd: job.cmd, inputJson: job.inputJson, env: job.env, timeout: job.timeout,
    maxRetries: job.maxRetries, priority: job.priority, labels: job.labels,
    concurrencyKey: job.concurrencyKey, concurrencyLimit: job.concurrencyLimit, requires: job.requires,
    resources: job.resources,
  };
}

export function render(root, { parts }, app) {
  const id = parts[1];
  const head = el("div", { class: "page-head" });
  const actions = el("div", { class: "actions", id: "actions" });
  const summary = el("div", { id: "summary" });
  const details = el("div", { class: "grid" });
  const logs = new LogView(`/v1/jobs/${encodeURIComponent(id)}/logs`);
  // The log right under the summary: while a job runs, it is what one came for.
  append(root, head, actions, summary, section("Log", logs.node), details);
  replace(head, el("h1", {}, "Job ", el("span", { class: "mono", id: "job-id" }, id)));

  let job = null;
  const revealed = new Set();
  let events = null;
  let logStream = null;
  let reloadTimer = null;
  let aborter = new AbortController();

  async function load() {
    aborter.abort();
    aborter = new AbortController();
    try {
      job = await api.getJob(id, aborter.signal);
    } catch (error) {
      if (error.name === "AbortError") return;
      if (error.httpStatus === 404) {
        replace(summary, el("p", { class: "error", id: "not-found" }, error.message));
        replace(details);
        return;
      }
      app.notify(error.message, "error");
      return;
    }
    show();
    if (!events) watch();
  }

  function reloadSoon() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(load, 150);
  }

  function show() {
    replace(head, el("h1", {}, "Job ", el("span", { class: "mono", id: "job-id" }, job.id)), stateBadge(job.state));
    const transition = job.lastTransition || {};
    replace(summary, facts([
      ["State", el("span", { id: "job-state" }, stateBadge(job.state), " ",
        transition.reason && transition.reason !== stateName(job.state) ? el("span", { class: "muted" }, transition.reason) : null,
        job.cancelRequested && !TERMINAL.has(job.state) ? el("span", { class: "muted" }, " (cancel requested)") : null)],
      ["Org", job.orgId],
      ["Attempts", `${job.attempt || 0} of ${(job.maxRetries || 0) + 1}`],
      ["Submitted", timeCell(job.createTime)],
      job.startTime && ["Started", timeCell(job.startTime)],
      job.finishTime && ["Finished", timeCell(job.finishTime)],
      job.nextRunTime && !TERMINAL.has(job.state) && ["Next run", timeCell(job.nextRunTime)],
      job.workerId && ["Worker", el("span", { class: "mono" }, job.workerId)],
      job.waitingReason && !TERMINAL.has(job.state)
        && ["Why not running", [el("span", { class: "waiting", id: "waiting-reason" }, job.waitingReason), " ",
          el("a", { href: `#/orgs?org=${encodeURIComponent(job.orgId)}` }, "the org's limits")]],
      job.lastError && ["Last error", el("span", { class: "error-text", id: "last-error" }, job.lastError)],
    ]));
    showActions();
    const timeout = durationSeconds(job.timeout);
    replace(details,
      section("Command",
        el("ol", { class: "argv", id: "argv" }, (job.cmd || []).map((arg) => el("li", {}, el("code", {}, arg)))),
        facts([
          ["Timeout", Number.isFinite(timeout) ? duration(timeout) : "server default"],
          ["Retries", String(job.maxRetries || 0)],
          ["Priority", String(job.priority || 0)],
          ["Labels", el("span", { id: "labels" }, labelList(job.labels))],
          job.concurrencyKey && ["Concurrency key", el("span", { id: "concurrency" },
            el("span", { class: "mono" }, job.concurrencyKey), ` (at most ${job.concurrencyLimit || 1} running)`)],
          Object.keys(job.requires || {}).length && ["Requires", el("span", { id: "requires" }, labelList(job.requires))],
          resourceFacts(job.resources),
        ])),
      section("Input", el("pre", { class: "json", id: "input" }, prettyJson(job.inputJson) || "null")),
      section("Environment", envTable(job.env, revealed)),
      section("Attempts", attemptsTimeline(job)),
      dependencies(job) && section("Dependencies", dependencies(job)),
      job.outputJson ? section("Output", el("pre", { class: "json", id: "output" }, prettyJson(job.outputJson))) : null,
      section("Artifacts", artifactList(job)),
    );
  }

  function artifactList(current) {
    const artifacts = current.artifacts || [];
    if (!artifacts.length) return el("p", { class: "muted" }, "None.");
    return el("ul", { class: "artifacts", id: "artifacts" }, artifacts.map((artifact) =>
      el("li", {},
        el("a", { href: api.artifactUrl(current.id, artifact.name), download: artifact.name.split("/").pop() }, artifact.name),
        el("span", { class: "muted" }, ` ${Number(artifact.sizeBytes || 0).toLocaleString("en")} bytes`),
        el("span", { class: "mono muted sha", title: `sha256 ${artifact.sha256}` }, ` ${artifact.sha256.slice(0, 12)}`))));
  }

  function showActions() {
    const buttons = [];
    if (!TERMINAL.has(job.state)) {
      buttons.push(el("button", { type: "button", id: "cancel", class: "danger", disabled: job.cancelRequested,
        onclick: (event) => act(event.target, async () => {
          const answer = await api.cancelJob(job.id);
          app.notify(`Cancel: ${enumWords(answer.outcome, "CANCEL_OUTCOME_")}.`);
          job = answer.job || job;
          show();
        }) }, job.cancelRequested ? "Cancel requested" : "Cancel"));
    } else {
      buttons.push(el("button", { type: "button", id: "rerun", onclick: (event) => act(event.target, async () => {
        const rerun = await api.rerunJob(job.id);
        app.navigate(`#/jobs/${encodeURIComponent(rerun.id)}`);
      }) }, "Rerun"));
    }
    buttons.push(el("button", { type: "button", id: "resubmit", onclick: (event) => act(event.target, async () => {
      const copy = await api.submitJob(specOf(job));
      app.navigate(`#/jobs/${encodeURIComponent(copy.id)}`);
    }) }, "Resubmit"));
    replace(actions, buttons);
  }

  async function act(button, action) {
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      app.notify(error.message, "error");
      button.disabled = false;
    }
  }

  function watch() {
    events = followEvents({
      orgId: job.orgId,
      topic: `jobs/${job.id}/state`,
      onEvents: reloadSoon,
      onState: (state) => {
        if (state === "live") reloadSoon(); // changes made while disconnected
      },
    });
    logStream = followLogs(job.id, {
      from: 0,
      onLines: (lines) => logs.add(lines),
      onState: (state, detail) => {
        if (state === "ended") {
          logs.status("end of log");
          reloadSoon();
        } else if (state === "failed") {
          logs.status(`log stream stopped: ${detail || "refused"}`);
        }
      },
    });
  }

  load();
  const waitingTimer = setInterval(() => {
    if (job && WAITING.has(job.state)) load();
  }, WAITING_REFRESH_MS);
  return () => {
    aborter.abort();
    clearInterval(waitingTimer);
    clearTimeout(reloadTimer);
    if (events) events.close();
    if (logStream) logStream.close();
  };
}
