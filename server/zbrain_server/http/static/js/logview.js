// A job's log, followed live. Lines arrive in bursts of thousands; the view
// keeps the tab responsive and its memory bounded however many there are:
//  - arriving lines wait in a queue and are drawn at most every DRAW_EVERY_MS,
//    a chunk at a time (one DocumentFragment), never all at once; lines that
//    would leave the page before they were seen are never drawn;
//  - the page holds at most DOM_CAP lines; older ones leave the DOM and stay
//    in memory, up to KEPT_CAP lines, from where "Show earlier" brings them
//    back a step at a time (the DOM then holds up to DOM_MAX); beyond that
//    they are dropped, and the whole log is one link away ("Raw log");
//  - it follows the end only while the reader is at the end.
// stdout, stderr and the worker's own notes are told apart by class and by a
// tag; each attempt starts with a separator. A line is one element whose
// text is set as text; its exact time is looked up when hovered.

import { el, exactTime, replace } from "./dom.js";

export const DOM_CAP = 2000;
export const KEPT_CAP = 50_000;
// "Show earlier" lets the DOM grow to this many lines, no further.
export const DOM_MAX = 10_000;
const CHUNK = 1000; // lines drawn at most per draw
const DRAW_EVERY_MS = 100; // ten updates a second are live enough to read
const EARLIER_STEP = 1000;

const STREAMS = {
  LOG_STREAM_STDOUT: ["stdout", "out"],
  LOG_STREAM_STDERR: ["stderr", "err"],
  LOG_STREAM_SYSTEM: ["system", "sys"],
};

export class LogView {
  /** @param {string} rawUrl where the whole log can be read as it is stored. */
  constructor(rawUrl) {
    this.kept = []; // every line still in memory, oldest first (at most KEPT_CAP)
    this.dropped = 0; // lines no longer in memory
    this.queue = []; // lines received but not drawn yet (and end notes)
    this.firstShown = 0; // index in `kept` of the first line in the DOM
    this.drawnCount = 0; // lines in the DOM
    this.cap = DOM_CAP; // lines the DOM may hold now: grows with "Show earlier"
    this.lastAttempt = null;
    this.frame = null;
    this.lastDraw = 0;
    this.counter = el("span", { class: "muted", id: "log-count" }, "0 lines");
    this.earlier = el("button", { type: "button", id: "log-earlier", hidden: true, onclick: () => this.showEarlier() }, "Show earlier");
    this.note = el("p", { class: "muted log-note", hidden: true });
    this.lines = el("div", { class: "log-lines", id: "log-lines", role: "log", "aria-live": "off",
      onmouseover: (event) => this.explain(event.target) });
    this.scroller = el("div", { class: "log", id: "log" }, this.earlier, this.note, this.lines);
    this.node = el(
      "div",
      { class: "log-view" },
      el("div", { class: "log-bar" },
        el("span", { class: "legend" },
          el("span", { class: "line stdout", dataset: { tag: "out" } }, "stdout"), " ",
          el("span", { class: "line stderr", dataset: { tag: "err" } }, "stderr"), " ",
          el("span", { class: "line system", dataset: { tag: "sys" } }, "system")),
        this.counter,
        el("a", { href: rawUrl, class: "button-link", target: "_blank", rel: "noopener" }, "Raw log")),
      this.scroller,
    );
  }

  /** Take new lines (in sequence order); they are drawn on the next frames. */
  add(lines) {
    for (const line of lines) {
      this.kept.push(line);
      this.queue.push(line);
    }
    const over = this.kept.length - KEPT_CAP;
    if (over > 0) {
      this.kept.splice(0, over);
      this.dropped += over;
      this.firstShown = Math.max(0, this.firstShown - over);
    }
    // Lines that would leave the DOM at once need never enter it.
    if (this.queue.length > this.cap) {
      this.queue.splice(0, this.queue.length - this.cap);
      this.restartFrom(this.kept.length - this.queue.length);
    }
    const total = this.dropped + this.kept.length;
    this.counter.textContent = `${total.toLocaleString("en")} line${total === 1 ? "" : "s"}`;
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame((now) => this.draw(now));
  }

  /** Clear the DOM so drawing resumes at kept[index] (the queue holds the rest). */
  restartFrom(index) {
    this.lines.replaceChildren();
    this.drawnCount = 0;
    this.firstShown = Math.max(0, index);
    this.lastAttempt = null;
    this.cap = DOM_CAP;
  }

  atEnd() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 40;
  }

  draw(now) {
    this.frame = null;
    if (now - this.lastDraw < DRAW_EVERY_MS) {
      this.schedule();
      return;
    }
    this.lastDraw = now;
    const follow = this.atEnd();
    const batch = this.queue.splice(0, CHUNK);
    const fragment = document.createDocumentFragment();
    for (const line of batch) this.appendLine(fragment, line);
    this.lines.append(fragment);
    // A reader at the end goes back to the small DOM; one reading earlier
    // lines keeps them (up to the cap "Show earlier" set).
    if (follow) this.cap = DOM_CAP;
    this.trim();
    if (follow) this.scroller.scrollTop = this.scroller.scrollHeight;
    if (this.queue.length) this.schedule();
  }

  appendLine(parent, line) {
    if (line.note !== undefined) {
      parent.append(el("div", { class: "line system end", dataset: { tag: "—" } }, line.note));
      return;
    }
    if (line.attempt !== this.lastAttempt) {
      this.lastAttempt = line.attempt;
      parent.append(el("div", { class: "attempt-sep", dataset: { attempt: String(line.attempt || 0) } }, `Attempt ${line.attempt || "?"}`));
    }
    const [kind, tag] = STREAMS[line.stream] || STREAMS.LOG_STREAM_SYSTEM;
    // Built by hand: this runs for every line, and el() is general.
    const node = document.createElement("div");
    node.className = `line ${kind}`;
    node.dataset.seq = line.sequence;
    node.dataset.tag = tag;
    node.textContent = line.text ?? "";
    parent.append(node);
    this.drawnCount += 1;
  }

  /** Give a hovered line its exact time (from memory, by its sequence). */
  explain(target) {
    const node = target.closest && target.closest(".line[data-seq]");
    if (!node || node.title || !this.kept.length) return;
    const line = this.kept[Number(node.dataset.seq) - Number(this.kept[0].sequence)];
    if (line && line.time) node.title = `${exactTime(line.time)} · attempt ${line.attempt} · line ${line.sequence}`;
  }

  /** Keep at most `cap` lines in the DOM, removing from the top. */
  trim() {
    let extra = this.drawnCount - this.cap;
    while (extra > 0 && this.lines.firstChild) {
      const first = this.lines.firstChild;
      if (first.dataset.seq !== undefined) {
        extra -= 1;
        this.drawnCount -= 1;
        this.firstShown += 1;
      }
      first.remove();
    }
    this.showEarlierButton();
  }

  showEarlierButton() {
    this.earlier.hidden = this.firstShown === 0 || this.drawnCount >= DOM_MAX;
    const hidden = this.dropped + (this.earlier.hidden ? this.firstShown : 0);
    this.note.hidden = hidden === 0;
    if (hidden) replace(this.note, `${hidden.toLocaleString("en")} earlier lines are only in the raw log.`);
  }

  /** Bring back the EARLIER_STEP lines before the first one shown (the DOM cap grows with it). */
  showEarlier() {
    const room = DOM_MAX - this.drawnCount;
    const start = Math.max(0, this.firstShown - Math.min(EARLIER_STEP, room));
    const fragment = document.createDocumentFragment();
    const height = this.scroller.scrollHeight;
    const before = this.drawnCount;
    const newest = this.lastAttempt; // of the last line drawn, for the lines still to come
    this.lastAttempt = null;
    for (const line of this.kept.slice(start, this.firstShown)) this.appendLine(fragment, line);
    // The first line already shown may now need its attempt separator no more.
    const next = this.lines.firstChild;
    if (next && next.classList.contains("attempt-sep") && Number(next.dataset.attempt) === this.lastAttempt) next.remove();
    this.lastAttempt = newest;
    this.cap = Math.max(this.cap, this.drawnCount);
    this.firstShown = start;
    this.lines.prepend(fragment);
    this.scroller.scrollTop += this.scroller.scrollHeight - height; // keep the reader's place
    this.showEarlierButton();
    return this.drawnCount - before;
  }

  /** Say, after the lines received so far, that the log is complete or what stopped it. */
  status(text) {
    this.queue.push({ note: text });
    this.schedule();
  }
}
