/**
 * What a worker owes its server: log lines, results and control messages,
 * kept across broken streams until a stream has written them (the Python
 * SDK's `_outbox`, message for message).
 *
 * A message leaves the outbox only once it was written, so when a stream
 * breaks mid-way the rest waits for the next one. A write is not a delivery,
 * though: the last results written are remembered and sent again on the next
 * stream (a repeat of one already applied is refused by its lease epoch).
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { LogLine } from "../gen/zbrain/v1/job_pb.js";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type LeaseRef,
  type WorkerResult,
} from "../gen/zbrain/v1/worker_service_pb.js";

/**
 * A LeaseBatch or WorkerResults holds entries up to about this size; a bigger
 * entry travels alone. Far below any peer's message limit (the server takes
 * 16 MiB), and past where batching pays. The same as the Python SDK.
 */
export const BATCH_BYTES = 1 << 20;
const MAX_LINES_PER_MESSAGE = 5000;
const MAX_RESULTS_PER_MESSAGE = 500;
const FLUSH_TIMEOUT_MS = 5000;

/** A lease as a map key. */
export function leaseKey(ref: { jobId: string; leaseEpoch: bigint }): string {
  return `${ref.jobId}@${ref.leaseEpoch}`;
}

interface PendingLines {
  readonly ref: LeaseRef;
  readonly lines: LogLine[];
}

/** Lines and control messages waiting for the stream, in the order owed. */
export class Outbox {
  /** The server's welcome says it reads WorkerResults. */
  batchResults = false;
  leaseTtlMs = 30_000;
  private readonly lines = new Map<string, PendingLines>();
  private control: ConnectRequest[] = [];
  /**
   * The last results written on the current stream (at most a lease TTL old,
   * and a few per slot), to send again after a break. An older result lost
   * with a dying server costs a retry.
   */
  private written: { readonly at: number; readonly message: ConnectRequest }[] = [];
  private wake: () => void = () => {};
  private idle: (() => void) | undefined;

  constructor(private readonly concurrency: number) {}

  // -- what the worker queues --------------------------------------------------

  log(ref: LeaseRef, line: LogLine): void {
    const key = leaseKey(ref);
    let pending = this.lines.get(key);
    if (pending === undefined) {
      pending = { ref, lines: [] };
      this.lines.set(key, pending);
    }
    pending.lines.push(line);
    this.wake();
  }

  send(message: ConnectRequest): void {
    this.control.push(message);
    this.wake();
  }

  // -- what it holds -----------------------------------------------------------

  /** Whether lines or control messages wait to be written. */
  owes(): boolean {
    return this.lines.size > 0 || this.control.length > 0;
  }

  /** The leases with lines or a result still to be written. */
  leases(): LeaseRef[] {
    const held = [...this.lines.values()].map((pending) => pending.ref);
    for (const message of this.control) {
      if (message.message.case === "result" && message.message.value.lease !== undefined) {
        held.push(message.message.value.lease);
      }
    }
    return held;
  }

  /**
   * A stream broke: the results it last wrote go first on the next one, and
   * heartbeats are dropped (the next hello claims the leases anyway).
   */
  afterBreak(): void {
    const replay = this.written.map(({ message }) => message);
    this.written = [];
    this.control = [...replay, ...this.control.filter((message) => message.message.case !== "heartbeat")];
  }

  /** Forget everything owed (the leases are lost, or the worker stops). */
  clear(): void {
    this.lines.clear();
    this.control = [];
    this.written = [];
  }

  // -- writing -----------------------------------------------------------------

  /**
   * The messages of one stream, for as long as it lives: the stream's only
   * writer. The transport asks for the next message once it has written the
   * last, so a message is dropped from the outbox only after that. Every
   * line queued so far goes out before the next control message, so an
   * attempt's lines always reach the server before its result.
   */
  async *pump(stop: AbortSignal): AsyncGenerator<ConnectRequest, void, undefined> {
    while (!stop.aborted) {
      while (this.owes()) {
        const first = this.lines.entries().next();
        if (!first.done) {
          const [key, pending] = first.value;
          const batch = linesBatch(pending.lines);
          yield create(ConnectRequestSchema, {
            message: { case: "logs", value: { lease: pending.ref, lines: batch } },
          });
          if (stop.aborted) {
            return; // maybe written, maybe not: sent again on the next stream
          }
          pending.lines.splice(0, batch.length);
          if (pending.lines.length === 0 && this.lines.get(key) === pending) {
            this.lines.delete(key);
          }
          continue;
        }
        const sent = this.nextControl();
        const results = sent.flatMap((message) => (message.message.case === "result" ? [message.message.value] : []));
        yield sent.length > 1
          ? create(ConnectRequestSchema, { message: { case: "results", value: { results } } })
          : (sent[0] as ConnectRequest);
        if (stop.aborted) {
          return;
        }
        this.control.splice(0, sent.length);
        this.remember(sent.filter((message) => message.message.case === "result"));
      }
      this.idle?.();
      await new Promise<void>((resolve) => {
        const woken = () => {
          stop.removeEventListener("abort", woken);
          this.wake = () => {};
          resolve();
        };
        this.wake = woken;
        stop.addEventListener("abort", woken);
      });
    }
  }

  /**
   * What to write next from the control queue: its first message or, when
   * the server reads WorkerResults, the run of results heading it, up to
   * about BATCH_BYTES (a bigger result goes alone).
   */
  private nextControl(): ConnectRequest[] {
    const batch = this.control.slice(0, 1);
    const first = batch[0];
    if (!this.batchResults || first?.message.case !== "result") {
      return batch;
    }
    let size = resultBytes(first.message.value);
    for (const message of this.control.slice(1, MAX_RESULTS_PER_MESSAGE)) {
      if (message.message.case !== "result") {
        break;
      }
      size += resultBytes(message.message.value);
      if (size > BATCH_BYTES) {
        break;
      }
      batch.push(message);
    }
    return batch;
  }

  private remember(results: ConnectRequest[]): void {
    const now = performance.now();
    this.written.push(...results.map((message) => ({ at: now, message })));
    const oldest = now - this.leaseTtlMs;
    const keep = 4 * this.concurrency;
    this.written = this.written.filter(({ at }) => at >= oldest).slice(-keep);
  }

  /**
   * Wait until everything queued was written, or FLUSH_TIMEOUT_MS passed (a
   * stream that stopped taking writes).
   */
  async flush(): Promise<void> {
    if (!this.owes()) {
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.idle = resolve;
      timer = setTimeout(resolve, FLUSH_TIMEOUT_MS);
      this.wake();
    });
    clearTimeout(timer);
    this.idle = undefined;
  }
}

/** The lines of the next WorkerLogs: up to MAX_LINES_PER_MESSAGE and about BATCH_BYTES. */
function linesBatch(lines: LogLine[]): LogLine[] {
  let size = 0;
  let count = 0;
  for (const line of lines) {
    size += Buffer.byteLength(line.text) + 32;
    if (count > 0 && (size > BATCH_BYTES || count >= MAX_LINES_PER_MESSAGE)) {
      break;
    }
    count += 1;
  }
  return lines.slice(0, count);
}

/** About the encoded size of a result: its text fields dominate. */
function resultBytes(result: WorkerResult): number {
  const outcome = result.result;
  return (
    64 +
    (result.lease?.jobId.length ?? 0) +
    Buffer.byteLength(outcome?.outputJson ?? "") +
    Buffer.byteLength(outcome?.error ?? "")
  );
}
