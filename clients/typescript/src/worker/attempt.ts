/**
 * One attempt of a job on this worker: run the handler within the job's
 * timeout, stop it when told, and queue the result the way the Python SDK
 * reports it.
 *
 * @module
 */
import { type MessageInitShape, create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { CanceledError, InternalError } from "../errors.js";
import { LogLineSchema, LogStream } from "../gen/zbrain/v1/job_pb.js";
import { AttemptOutcome, type AttemptResultSchema, type Lease } from "../gen/zbrain/v1/job_service_pb.js";
import { ConnectRequestSchema, type LeaseRef, LeaseRefSchema } from "../gen/zbrain/v1/worker_service_pb.js";
import { type Job, jobFrom } from "../models.js";
import { type Outbox, leaseKey } from "./outbox.js";

/**
 * Why an attempt must stop before its handler finishes:
 * - `canceled`: a user canceled the job (reported CANCELED);
 * - `timed-out`: it ran past the job's timeout (reported TIMED_OUT, retried while retries remain);
 * - `shutdown`: the worker is shutting down and the grace ran out (reported INTERRUPTED, retried);
 * - `lease-lost`: the server gave the job to someone else or forgot the lease (nothing is reported).
 */
export type StopReason = "canceled" | "timed-out" | "shutdown" | "lease-lost";

const STOP_WORDS: Readonly<Record<StopReason, string>> = {
  canceled: "canceled by user",
  "timed-out": "timed out",
  shutdown: "worker shutting down",
  "lease-lost": "lease lost",
};

/**
 * The reason of an attempt's aborted signal (`signal.throwIfAborted()` throws
 * it): a cancellation, saying why and, from the server, in its words.
 */
export class AttemptStoppedError extends CanceledError {
  constructor(
    readonly reason: StopReason,
    readonly detail: string,
  ) {
    super(`the attempt was stopped: ${detail ? `${STOP_WORDS[reason]} (${detail})` : STOP_WORDS[reason]}`);
  }
}

/** What a handler gets: the job, and how to report on it while it runs. */
export interface JobContext {
  /** Everything the server sent about the job. */
  readonly job: Job;
  /** The job's input, parsed (null when there is none). */
  readonly input: unknown;
  /** The job's environment variables. Nothing sets them in this process: use them as the job needs. */
  readonly env: Readonly<Record<string, string>>;
  /** Which attempt this is, from 1. */
  readonly attempt: number;
  /**
   * Aborted when the attempt must stop (canceled, timed out, worker
   * shutting down, lease lost); its `reason` is an AttemptStoppedError.
   * Stop promptly: a handler still running a few seconds later is reported
   * stopped all the same and its result ignored.
   */
  readonly signal: AbortSignal;
  /** W3C trace context (`traceparent`, ...) of the call that submitted the job, to continue its trace. */
  readonly traceContext: Readonly<Record<string, string>>;
  /**
   * Send one line of output (STDOUT unless said otherwise); lines are batched
   * to the server as soon as the stream is free. A line longer than 16 KiB is
   * cut, with a visible marker.
   */
  readonly log: (text: string, stream?: LogStream) => void;
}

/**
 * Runs one attempt. What it returns (or resolves to) is the job's output,
 * serialised with JSON.stringify; `undefined` and `null` mean no output. A
 * throw (or rejection) fails the attempt with the error's name and message.
 */
export type Handler = (context: JobContext) => unknown;

/** A line longer than this many UTF-8 bytes is cut, as the server and the process executor cut it. */
const MAX_LINE_BYTES = 16 << 10;
const TRUNCATION_MARK = " …[line truncated]";
/** An output this big could not travel in one message to the server (16 MiB); it fails the attempt instead. */
const MAX_OUTPUT_BYTES = 15 << 20;

/** A leased attempt: the job, its lease, and what stops it. */
export class Attempt {
  readonly ref: LeaseRef;
  readonly key: string;
  readonly job: Job;
  readonly traceContext: Readonly<Record<string, string>>;
  /** Settles once the attempt was reported (or abandoned); set by whoever starts it. */
  done: Promise<void> = Promise.resolve();
  private readonly controller = new AbortController();
  private stopped: { readonly reason: StopReason; readonly detail: string } | undefined;

  constructor(lease: Lease) {
    if (lease.job === undefined) {
      throw new InternalError("the server sent a lease without its job");
    }
    this.job = jobFrom(lease.job);
    this.ref = create(LeaseRefSchema, { jobId: this.job.id, leaseEpoch: lease.leaseEpoch });
    this.key = leaseKey(this.ref);
    this.traceContext = lease.traceContext;
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get stopReason(): StopReason | undefined {
    return this.stopped?.reason;
  }

  /** Tell the handler to stop; the first reason given wins. */
  stop(reason: StopReason, detail = ""): void {
    if (this.stopped === undefined) {
      this.stopped = { reason, detail };
      this.controller.abort(new AttemptStoppedError(reason, detail));
    }
  }

  /** The result to report for a handler that was told to stop, whatever it returned. */
  stoppedResult(): AttemptResultInit | undefined {
    switch (this.stopped?.reason) {
      case "timed-out":
        return { outcome: AttemptOutcome.TIMED_OUT, error: `timed out after ${this.job.timeoutMs / 1000}s` };
      case "canceled":
        return {
          outcome: AttemptOutcome.CANCELED,
          error: this.stopped.detail ? `${STOP_WORDS.canceled} (${this.stopped.detail})` : STOP_WORDS.canceled,
        };
      case "shutdown":
        return { outcome: AttemptOutcome.INTERRUPTED, error: "the worker shut down before the job finished" };
      default:
        return undefined;
    }
  }
}

type AttemptResultInit = MessageInitShape<typeof AttemptResultSchema>;

/** How the runner reports what it cannot tell the server. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
}

/**
 * Run an attempt with `handler` and queue its result in `outbox`. Resolves
 * to whether a result was queued: nothing is reported for a lost lease, since
 * a newer attempt (or nobody) owns the job now.
 */
export async function runAttempt(
  attempt: Attempt,
  handler: Handler,
  outbox: Outbox,
  settings: { readonly stopGraceMs: number; readonly logger: Logger },
): Promise<boolean> {
  const { job } = attempt;
  const timer = setTimeout(() => attempt.stop("timed-out", `after ${job.timeoutMs / 1000}s`), job.timeoutMs);
  let reported = false;
  const context: JobContext = {
    job,
    input: job.input,
    env: job.env,
    attempt: job.attempt,
    signal: attempt.signal,
    traceContext: attempt.traceContext,
    log: (text, stream = LogStream.STDOUT) => {
      if (!reported) {
        outbox.log(
          attempt.ref,
          create(LogLineSchema, { stream, attempt: job.attempt, time: timestampNow(), text: truncated(text) }),
        );
      }
    },
  };
  let result: AttemptResultInit;
  try {
    const work = Promise.resolve().then(() => handler(context));
    result = succeeded(await untilStopped(work, attempt, settings));
  } catch (error) {
    result = { outcome: AttemptOutcome.FAILED, error: describe(error) };
  } finally {
    clearTimeout(timer);
    reported = true; // lines logged from now on would follow the result: dropped
  }
  if (attempt.stopReason === "lease-lost") {
    return false;
  }
  outbox.send(
    create(ConnectRequestSchema, {
      message: { case: "result", value: { lease: attempt.ref, result: attempt.stoppedResult() ?? result } },
    }),
  );
  return true;
}

/**
 * The handler's result; or, once the attempt was told to stop and the
 * handler has not settled within the stop grace, undefined (the handler runs
 * on, unobserved: JavaScript cannot stop a promise from outside).
 */
function untilStopped<T>(
  work: Promise<T>,
  attempt: Attempt,
  settings: { readonly stopGraceMs: number; readonly logger: Logger },
): Promise<T | undefined> {
  return new Promise<T | undefined>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const giveUp = () => {
      timer = setTimeout(() => {
        settings.logger.warn(
          `zbrain worker: the handler of job ${attempt.job.id} did not stop within ` +
            `${settings.stopGraceMs} ms of being told to; reporting it stopped and ignoring its result`,
        );
        resolve(undefined);
      }, settings.stopGraceMs);
    };
    if (attempt.signal.aborted) {
      giveUp();
    } else {
      attempt.signal.addEventListener("abort", giveUp, { once: true });
    }
    work.then(resolve, reject).finally(() => {
      clearTimeout(timer);
      attempt.signal.removeEventListener("abort", giveUp);
    });
  });
}

function succeeded(output: unknown): AttemptResultInit {
  if (output === undefined || output === null) {
    return { outcome: AttemptOutcome.SUCCEEDED, exitCode: 0 };
  }
  let outputJson: string | undefined;
  try {
    outputJson = JSON.stringify(output);
  } catch (error) {
    return { outcome: AttemptOutcome.FAILED, error: `the handler's output is not JSON: ${describe(error)}` };
  }
  if (outputJson === undefined) {
    return { outcome: AttemptOutcome.FAILED, error: `the handler returned a ${typeof output}, which JSON cannot hold` };
  }
  const bytes = Buffer.byteLength(outputJson);
  if (bytes > MAX_OUTPUT_BYTES) {
    return {
      outcome: AttemptOutcome.FAILED,
      error: `the handler's output is ${bytes} bytes of JSON; at most ${MAX_OUTPUT_BYTES} fit (upload big results elsewhere)`,
    };
  }
  return { outcome: AttemptOutcome.SUCCEEDED, outputJson, exitCode: 0 };
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : `thrown: ${String(error)}`;
}

/**
 * The line cut to MAX_LINE_BYTES of UTF-8, with the marker: the server would
 * cut it the same way, and cutting here keeps a huge line from making a huge
 * message.
 */
function truncated(text: string): string {
  if (text.length <= MAX_LINE_BYTES / 4 || Buffer.byteLength(text) <= MAX_LINE_BYTES) {
    return text;
  }
  // Decoding a cut in the middle of a character yields U+FFFD, dropped here.
  return (
    Buffer.from(text)
      .subarray(0, MAX_LINE_BYTES)
      .toString()
      .replace(/\uFFFD$/, "") + TRUNCATION_MARK
  );
}
