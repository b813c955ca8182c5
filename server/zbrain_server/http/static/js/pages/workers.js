// Workers connected to this server (ListWorkers), read again every few
// seconds and whenever a worker connects or leaves (the events stream).

import * as api from "../api.js";
import { append, el, replace, timeCell } from "../dom.js";
import { followEvents } from "../live.js";

const REFRESH_MS = 3000;

function workerRow(worker) {
  const used = worker.slotsUsed || 0;
  const slots = worker.slots || 0;
  const meter = el("span", { class: "meter", title: `${used} of ${slots} slots in use` }, el("span", { class: "fill" }));
  meter.firstChild.style.width = `${slots ? (used / slots) * 100 : 0}%`;
  return el("tr", { dataset: { workerId: worker.id } },
    el("td", { class: "mono" }, worker.id, worker.draining ? el("span", { class: "chip" }, "draining") : null),
    el("td", {}, (worker.orgIds || []).join(", ")),
    el("td", { class: "num" }, `${used} / ${slots} `, meter),
    el("td", {}, (worker.leaseJobIds || []).map((id) =>
      el("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "mono lease", title: id }, id.slice(0, 8)))),
    el("td", {}, timeCell(worker.lastHeardTime)),
    el("td", { class: "wide" }, timeCell(worker.connectTime)),
    el("td", { class: "wide mono" }, worker.address || ""),
    el("td", { class: "wide mono replica" }, worker.replicaId || "—"),
    el("td", { class: "wide" }, Object.entries(worker.labels || {}).map(([k, v]) => el("span", { class: "chip mono" }, `${k}=${v}`))));
}

export function render(root, _params, app) {
  const body = el("tbody", { id: "workers-body" });
  append(root,
    el("div", { class: "page-head" }, el("h1", {}, "Workers")),
    el("div", { class: "table-wrap" },
      el("table", { class: "workers", id: "workers-table" },
        el("thead", {}, el("tr", {},
          el("th", {}, "Worker"), el("th", {}, "Orgs"), el("th", {}, "Slots"), el("th", {}, "Leases"),
          el("th", {}, "Last heard"), el("th", { class: "wide" }, "Connected"),
          el("th", { class: "wide" }, "Address"), el("th", { class: "wide", title: "The server replica the worker is connected to" }, "Replica"),
          el("th", { class: "wide" }, "Labels"))),
        body)));

  let aborter = new AbortController();
  async function load() {
    aborter.abort();
    aborter = new AbortController();
    const workers = [];
    let pageToken = "";
    try {
      do {
        const page = await api.listWorkers({ pageToken, pageSize: 1000 }, aborter.signal);
        workers.push(...(page.workers || []));
        pageToken = page.nextPageToken || "";
      } while (pageToken);
    } catch (error) {
      if (error.name !== "AbortError") app.notify(error.message, "error");
      return;
    }
    replace(body, workers.length
      ? workers.map(workerRow)
      : el("tr", { class: "empty" }, el("td", { colspan: 9 }, "No worker is connected. Start one with `zbrain worker`.")));
  }

  load();
  const timer = setInterval(load, REFRESH_MS);
  const presence = followEvents({ orgId: app.defaultOrg, topic: "workers/", onEvents: load });
  return () => {
    aborter.abort();
    clearInterval(timer);
    presence.close();
  };
}
