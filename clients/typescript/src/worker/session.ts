/**
 * One WorkerService.Connect stream: hello, welcome, then reading what the
 * server pushes while the outbox writes what the worker owes (the Python
 * SDK's `_session`).
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { errorFromCall } from "../errors.js";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  type LeaseRef,
  type WorkerService,
} from "../gen/zbrain/v1/worker_service_pb.js";
import { durationMs } from "../models.js";
import { deferred, waitAtMost } from "./deferred.js";
import type { Outbox } from "./outbox.js";

/** How long `close()` waits for the server to end the stream before cutting it. */
const CLOSE_TIMEOUT_MS = 5000;

/** Statuses no reconnect can fix: the worker stops and says why. */
const FATAL: ReadonlySet<Code> = new Set([Code.InvalidArgument, Code.Unauthenticated, Code.PermissionDenied]);

/** The stream to the server ended; the worker reconnects. */
export class SessionEnded extends Error {
  constructor(
    readonly reason: string,
    /** The server had welcomed the worker: reconnect quickly. */
    readonly welcomed: boolean,
  ) {
    super(reason);
    this.name = "SessionEnded";
  }
}

/** Who the worker says it is on every stream it opens. */
export interface Hello {
  readonly workerId: string;
  readonly orgs: readonly string[];
  readonly concurrency: number;
  readonly labels: Readonly<Record<string, string>>;
  /** Random, one per Worker: WorkerHello.incarnation_id. */
  readonly incarnationId: string;
}

/** The WorkerHello for a new stream, claiming the leases kept through a lost one. */
export function helloMessage(hello: Hello, held: readonly LeaseRef[], draining: boolean): ConnectRequest {
  return create(ConnectRequestSchema, {
    message: {
      case: "hello",
      value: {
        workerId: hello.workerId,
        orgIds: [...hello.orgs],
        // Draining, it comes back only to report: no free slots.
        concurrency: draining ? Math.max(1, held.length) : hello.concurrency,
        labels: { ...hello.labels },
        leases: [...held],
        acceptsLeaseBatches: true,
        incarnationId: hello.incarnationId,
      },
    },
  });
}

/** What the worker does with a stream's events. */
export interface SessionHooks {
  onWelcome(): void;
  onMessage(message: ConnectResponse): void;
  /** The heartbeat to send now, if the worker holds leases. */
  heartbeat(): ConnectRequest | undefined;
}

/**
 * One stream. `run` resolves only when `close()` ended it; otherwise it
 * rejects with SessionEnded when the stream breaks, or with the ZBrainError
 * of a status no reconnect fixes.
 */
export class Session {
  private call: AbortController | undefined;
  private readonly writerStop = new AbortController();
  private readonly ended = deferred();
  private readonly drainAck = deferred();
  /** Set by close(): an end is expected, not a loss. */
  private stopping = false;

  constructor(
    private readonly workers: Client<typeof WorkerService>,
    private readonly outbox: Outbox,
    private readonly hooks: SessionHooks,
    private readonly server: string,
  ) {}

  get open(): boolean {
    return this.call !== undefined;
  }

  /** Resolves when the server acknowledged a WorkerDrain, or the stream ended. */
  get drainAcknowledged(): Promise<void> {
    return this.drainAck.promise;
  }

  async run(hello: ConnectRequest): Promise<void> {
    const call = new AbortController();
    this.call = call;
    const welcomed = deferred<boolean>();
    let wasWelcomed = false;
    let heartbeats: NodeJS.Timeout | undefined;
    try {
      const responses = this.workers
        .connect(this.requests(hello, welcomed.promise), { signal: call.signal })
        [Symbol.asyncIterator]();
      const first = await responses.next();
      if (first.done || first.value.message.case !== "welcome") {
        throw new SessionEnded("the server did not welcome the worker", false);
      }
      wasWelcomed = true;
      const welcome = first.value.message.value;
      this.outbox.leaseTtlMs = durationMs(welcome.leaseTtl) || 30_000;
      this.outbox.batchResults = welcome.acceptsResultBatches;
      const interval = durationMs(welcome.heartbeatInterval) || 10_000;
      this.hooks.onWelcome();
      welcomed.resolve(true);
      heartbeats = setInterval(() => {
        const message = this.hooks.heartbeat();
        if (message !== undefined) {
          this.outbox.send(message);
        }
      }, interval);
      for (let next = await responses.next(); !next.done; next = await responses.next()) {
        if (next.value.message.case === "drainAcknowledged") {
          this.drainAck.resolve();
        }
        this.hooks.onMessage(next.value);
      }
      if (!this.stopping) {
        throw new SessionEnded("the server closed the stream", true);
      }
    } catch (error) {
      if (error instanceof SessionEnded) {
        throw error;
      }
      const failure = ConnectError.from(error);
      if (FATAL.has(failure.code)) {
        throw errorFromCall(failure, this.server);
      }
      if (!this.stopping) {
        throw new SessionEnded(failure.rawMessage || Code[failure.code], wasWelcomed);
      }
    } finally {
      clearInterval(heartbeats);
      this.call = undefined;
      welcomed.resolve(false);
      this.writerStop.abort();
      this.drainAck.resolve(); // nothing more can arrive on this stream
      call.abort();
      this.ended.resolve();
    }
  }

  /** The request stream: the hello, then, once welcomed, whatever the outbox owes. */
  private async *requests(hello: ConnectRequest, welcomed: Promise<boolean>): AsyncGenerator<ConnectRequest> {
    yield hello;
    if (await welcomed) {
      yield* this.outbox.pump(this.writerStop.signal);
    }
  }

  /**
   * End the stream once everything queued is written, and wait for the server
   * to end it: cutting it at once could drop the last results in flight.
   */
  async close(): Promise<void> {
    const call = this.call;
    if (call === undefined) {
      return;
    }
    this.stopping = true;
    await this.outbox.flush();
    this.writerStop.abort(); // the request stream ends; the server then ends the call
    await waitAtMost(this.ended.promise, CLOSE_TIMEOUT_MS);
    call.abort();
  }
}
