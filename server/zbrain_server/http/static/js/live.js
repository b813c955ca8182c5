// Live streams over WebSocket with resume: each item carries a sequence
// number; the stream remembers the last one handed on and, when the
// connection drops (network, server restart, or the server cutting off a
// reader that fell behind), reconnects with from=<last>, so nothing is
// missed and, items at or below <last> being dropped, nothing is seen twice.

const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 5000;
const NORMAL_CLOSURE = 1000; // the stream ended (a finished job's log)
// The server closes with 4000 + the google.rpc code of why the stream ended.
// Reconnecting cannot help after these: the request itself was refused.
const CODE_BASE = 4000;
const FINAL = new Set([3, 5, 7, 9, 12, 16].map((code) => CODE_BASE + code));
const UNAUTHENTICATED = CODE_BASE + 16;
const OUT_OF_RANGE = CODE_BASE + 11; // asked for events retention removed
const ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo";

/** The ErrorInfo metadata `resume_after_sequence` of a stream's last error frame, if any. */
function resumePoint(status) {
  for (const detail of (status && status.details) || []) {
    if (detail["@type"] === ERROR_INFO && detail.metadata && detail.metadata.resume_after_sequence) {
      return Number(detail.metadata.resume_after_sequence);
    }
  }
  return null;
}

/**
 * Follow a stream.
 * @param {string} path e.g. "/v1/events:stream".
 * @param {object} options
 * @param {Record<string, string>} [options.query] further query parameters.
 * @param {number} [options.from] resume after this sequence (omitted: the server's default).
 * @param {boolean} [options.fromEnd] with no sequence to resume from, start after the
 *   last event stored when the socket opens instead of replaying the history.
 * @param {(message: object) => object[]} options.items the sequenced items of one message.
 * @param {(items: object[]) => void} options.onItems new items, in order, never twice.
 * @param {(state: string, detail?: string) => void} [options.onState] "live", "reconnecting", "ended", "failed".
 * @returns {{close: () => void}}
 */
export function follow(path, options) {
  let last = options.from ?? null;
  let socket = null;
  let closed = false;
  let delay = RETRY_FIRST_MS;
  let timer = null;
  let lastError = null; // the {"error": Status} frame a socket sends before closing
  const onState = options.onState || (() => {});

  function connect() {
    const url = new URL(path, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    for (const [name, value] of Object.entries(options.query || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    if (last !== null) url.searchParams.set("from", String(last));
    else if (options.fromEnd) url.searchParams.set("from_end", "true");
    socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      delay = RETRY_FIRST_MS;
      onState("live");
    });
    socket.addEventListener("message", (message) => {
      let parsed;
      try {
        parsed = JSON.parse(message.data);
      } catch {
        return; // not ours to show; the sequence check keeps the stream whole
      }
      if (parsed.error) {
        lastError = parsed.error;
        return;
      }
      const fresh = [];
      for (const item of options.items(parsed) || []) {
        const sequence = Number(item.sequence);
        if (last !== null && sequence <= last) continue;
        last = sequence;
        fresh.push(item);
      }
      if (fresh.length) options.onItems(fresh);
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      if (closed) return;
      const error = lastError;
      lastError = null;
      if (event.code === OUT_OF_RANGE && resumePoint(error) !== null) {
        // What we asked for is gone: go on from the oldest that is kept.
        last = Math.max(last ?? 0, resumePoint(error));
        connect();
        return;
      }
      if (event.code === NORMAL_CLOSURE || FINAL.has(event.code)) {
        closed = true;
        onState(event.code === NORMAL_CLOSURE ? "ended" : "failed", event.reason);
        // A revoked token or an ended session: the console asks for a token.
        if (event.code === UNAUTHENTICATED) window.dispatchEvent(new CustomEvent("zbrain:signed-out"));
        return;
      }
      onState("reconnecting", event.reason);
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    });
  }

  connect();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (socket) socket.close(NORMAL_CLOSURE, "page left");
    },
  };
}

// A page reads its state fresh once its events stream is live (the socket is
// open only after the server fixed where it starts), so nothing older than
// that is needed: the first stream a page load opens starts at the server's
// end (from_end), never replaying the retained history. Events are numbered
// across the server, so the highest sequence seen since is where the next
// stream resumes, on a reconnect or on moving between pages. It is kept in
// memory only: after a reload, or against a server whose store was replaced,
// a remembered sequence could lie beyond the server's newest and the stream
// would stay silent.
let seenSequence = null;

/** Follow events (StreamEventsResponse messages) of an org and topic prefix. */
export function followEvents({ orgId, topic, onEvents, onState }) {
  return follow("/v1/events:stream", {
    query: { org_id: orgId, topic },
    from: seenSequence,
    fromEnd: true,
    items: (message) => message.events,
    onItems: (events) => {
      seenSequence = Math.max(seenSequence ?? 0, Number(events[events.length - 1].sequence));
      onEvents(events);
    },
    onState,
  });
}

/** Follow a job's log lines (StreamLogsResponse messages) until the job ends. */
export function followLogs(jobId, { from, onLines, onState }) {
  return follow(`/v1/jobs/${encodeURIComponent(jobId)}/logs:stream`, {
    from,
    items: (message) => message.lines,
    onItems: onLines,
    onState,
  });
}
