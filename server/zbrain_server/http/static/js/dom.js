// DOM helpers. Every string from the server or the user is set as text
// (textContent or attribute values), never parsed as HTML: a log line that
// reads "<script>" shows those characters and runs nothing.

/**
 * Build an element: el("a", {href: "#/jobs", class: "x"}, "text", child).
 * Attributes starting with "on" take functions (event listeners); `dataset`
 * takes an object. Children are nodes or strings (set as text nodes);
 * null, undefined and false are skipped.
 */
export function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  return append(node, ...children);
}

/** Append children (nodes, strings, arrays of them) to a node. */
export function append(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace a node's children. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, ...children);
}

/** A JobState name without its prefix, lower case: "JOB_STATE_RUNNING" -> "running". */
export function stateName(state) {
  return String(state || "JOB_STATE_UNSPECIFIED").replace(/^JOB_STATE_/, "").toLowerCase();
}

/** An enum value without its prefix, for people: "TRANSITION_CAUSE_LEASE_EXPIRED" -> "lease expired". */
export function enumWords(value, prefix) {
  if (!value) return "";
  return String(value).replace(prefix, "").toLowerCase().replaceAll("_", " ");
}

export const TERMINAL = new Set(["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELED"]);

/** A badge showing a job's state; its class colours it. */
export function stateBadge(state) {
  const name = stateName(state);
  return el("span", { class: `badge state-${name}`, dataset: { state: name } }, name);
}

const UNITS = [
  ["year", 365 * 86400],
  ["month", 30 * 86400],
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
  ["second", 1],
];
const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

/** "3 minutes ago" for an RFC 3339 time, relative to now. */
export function relativeTime(iso, now = Date.now()) {
  const seconds = (Date.parse(iso) - now) / 1000;
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return relative.format(Math.round(seconds / size), unit);
    }
  }
  return "";
}

/** The exact time in UTC, to the millisecond: "2026-12-02 06:40:01.123 UTC". */
export function exactTime(iso) {
  return new Date(iso).toISOString().replace("T", " ").replace("Z", " UTC");
}

/**
 * A <time> element showing a relative time, with the exact UTC time on hover
 * (title). refreshTimes() updates every such element on the page.
 */
export function timeCell(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  return el("time", { datetime: iso, title: exactTime(iso), class: "rel" }, relativeTime(iso));
}

/** Bring every relative time on the page up to date. */
export function refreshTimes(root = document) {
  const now = Date.now();
  for (const node of root.querySelectorAll("time.rel")) {
    node.textContent = relativeTime(node.getAttribute("datetime"), now);
  }
}

/** "1m 05s" for a number of seconds. */
export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${String(Math.floor(seconds % 60)).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
}

/** Seconds between two RFC 3339 times (the second defaults to now). */
export function secondsBetween(startIso, endIso) {
  const end = endIso ? Date.parse(endIso) : Date.now();
  return (end - Date.parse(startIso)) / 1000;
}

/** A protobuf Duration in JSON ("30s", "1.5s") as seconds. */
export function durationSeconds(text) {
  return text ? Number.parseFloat(text) : Number.NaN;
}

/** A definition list from [term, value] pairs; values are nodes or text. */
export function facts(pairs) {
  return el(
    "dl",
    { class: "facts" },
    pairs.filter(Boolean).map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]),
  );
}

/** A short form of a UUID for narrow tables; the full id is in the title. */
export function shortId(id) {
  return id.length > 13 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id;
}

/** Pretty-print JSON text; text that does not parse is shown as it is. */
export function prettyJson(text) {
  if (!text) return "";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** Labels from "team=data, tier=1" as a person types them; pairs without "=" are left out. */
export function parseLabels(text) {
  const labels = {};
  for (const pair of text.split(",")) {
    const at = pair.indexOf("=");
    if (at > 0) labels[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
  }
  return labels;
}
