/**
 * `Worker`: keeps a WorkerService.Connect stream open, runs the leases it is
 * pushed with a handler, reconnects when the server goes away, and drains on
 * SIGTERM. It speaks the protocol of docs/workers.md exactly as the Python
 * SDK's `zbrain.worker.Worker` does.
 *
 * @module
 */
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { create } from "@bufbuild/protobuf";
import { type Client, createClient } from "@connectrpc/connect";
import type { ZBrainClient } from "../client.js";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.js";
import type { Lease } from "../gen/zbrain/v1/job_service_pb.js";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  type LeaseRef,
  WorkerService,
} from "../gen/zbrain/v1/worker_service_pb.js";
import { Attempt, type Handler, type Logger, runAttempt } from "./attempt.js";
import { deferred, waitAtMost } from "./deferred.js";
import { Outbox, leaseKey } from "./outbox.js";
import { type Hello, Session, SessionEnded, helloMessage } from "./session.js";

const FIRST_RECONNECT_DELAY_MS = 100;
/** How long a drain waits for the server's acknowledgement before going on without it. */
const DRAIN_ACK_TIMEOUT_MS = 10_000;

export interface WorkerOptions {
  /** The connected client: the worker uses its server, token and TLS. */
  readonly client: ZBrainClient;
  /** Runs one attempt of a job; see {@link Handler}. */
  readonly handler: Handler;
  /** The organisations whose jobs it runs; the server's default one when empty. */
  readonly orgs?: readonly string[];
  /** How many jobs run at once. Default 1. */
  readonly concurrency?: number;
  /** Unique among the server's workers. Default `HOSTNAME-PID`. */
  readonly workerId?: string;
  /** Free-form labels describing the worker. */
  readonly labels?: Readonly<Record<string, string>>;
  /** How long running jobs may finish when draining before they are stopped. Default 30 000 ms. */
  readonly graceMs?: number;
  /**
   * Signals that drain the worker while `run()` serves; a second one stops
   * the running jobs at once. Default SIGTERM and SIGINT; `[]` leaves
   * signals to you (call `shutdown()`).
   */
  readonly signals?: readonly NodeJS.Signals[];
  /** How long a handler told to stop may take to settle before it is reported stopped anyway. Default 5 000 ms. */
  readonly stopGraceMs?: number;
  /** The longest pause between reconnection attempts. Default 10 000 ms. */
  readonly reconnectMaxMs?: number;
  /** Where the worker says what it does. Default: the console. */
  readonly logger?: Logger;
}

/**
 * Runs the jobs a ZBrain server leases to it with a handler.
 *
 * ```ts
 * const worker = new Worker({ client, orgs: ["greetings"], concurrency: 4, handler: async ({ input }) => ({ hi: input }) });
 * await worker.run(); // until SIGTERM, or shutdown()
 * ```
 */
export class Worker {
  readonly workerId: string;
  /** Attempts reported so far. */
  completed = 0;
  private readonly client: ZBrainClient;
  private readonly handler: Handler;
  private readonly hello: Hello;
  private readonly graceMs: number;
  private readonly signals: readonly NodeJS.Signals[];
  private readonly reconnectMaxMs: number;
  private readonly settings: { readonly stopGraceMs: number; readonly logger: Logger };
  private readonly workers: Client<typeof WorkerService>;
  private readonly outbox: Outbox;
  private readonly attempts = new Map<string, Attempt>();
  private session: Session | undefined;
  private disconnectedAt: number | undefined;
  private draining = false;
  private stopping = false;
  private readonly stopped = deferred();
  private readonly graceEnded = deferred();
  private drained: Promise<void> | undefined;
  private serving = false;

  constructor(options: WorkerOptions) {
    const concurrency = options.concurrency ?? 1;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new InvalidArgumentError(`concurrency must be a whole number of at least 1, not ${concurrency}`);
    }
    this.client = options.client;
    this.handler = options.handler;
    this.workerId = options.workerId ?? `${hostname()}-${process.pid}`;
    this.hello = {
      workerId: this.workerId,
      orgs: options.orgs ?? [],
      concurrency,
      labels: options.labels ?? {},
      // New for each Worker, kept through reconnects: the server tells this
      // worker's leases from those of an earlier process under the same id.
      incarnationId: randomUUID().replaceAll("-", ""),
    };
    this.graceMs = options.graceMs ?? 30_000;
    this.signals = options.signals ?? ["SIGTERM", "SIGINT"];
    this.reconnectMaxMs = options.reconnectMaxMs ?? 10_000;
    this.settings = { stopGraceMs: options.stopGraceMs ?? 5_000, logger: options.logger ?? console };
    this.workers = createClient(WorkerService, this.client.connection.transport);
    this.outbox = new Outbox(concurrency);
  }

  /** How many attempts run now. */
  get running(): number {
    return this.attempts.size;
  }

  /**
   * Serve until drained (by a signal or `shutdown()`), reconnecting with
   * backoff whenever the stream breaks. Rejects with the ZBrainError of a
   * refusal no reconnect can fix (a bad token, a role that may not run
   * workers, an invalid hello), after stopping the jobs it ran.
   */
  async run(): Promise<void> {
    if (this.serving) {
      throw new FailedPreconditionError(`worker ${this.workerId} is already running: call run() once`);
    }
    this.serving = true;
    const onSignal = (signal: NodeJS.Signals) => {
      if (this.draining) {
        this.log.warn(`zbrain worker: ${signal} again: stopping the running jobs now`);
        this.graceEnded.resolve();
      } else {
        this.log.info(`zbrain worker: ${signal}: draining`);
        void this.shutdown();
      }
    };
    for (const signal of this.signals) {
      process.on(signal, onSignal);
    }
    try {
      await this.serve();
    } finally {
      for (const signal of this.signals) {
        process.off(signal, onSignal);
      }
    }
  }

  /**
   * Drain: take no new jobs, let running ones finish for `graceMs`, then stop
   * them (they are reported INTERRUPTED and retried by the server). `run()`
   * resolves once the results are written. Calling it again waits for the
   * same drain.
   */
  shutdown(graceMs = this.graceMs): Promise<void> {
    this.drained ??= this.drain(graceMs);
    return this.drained;
  }

  private get log(): Logger {
    return this.settings.logger;
  }

  private async serve(): Promise<void> {
    const orgs = this.hello.orgs.join(",") || "the server's default";
    this.log.info(
      `zbrain worker ${this.workerId} (${this.hello.concurrency} slots, orgs ${orgs}) connecting to ${this.client.server}`,
    );
    let delayMs = FIRST_RECONNECT_DELAY_MS;
    // A draining worker comes back only to report what it still owes.
    while (!this.stopping && (!this.draining || this.owesServer())) {
      try {
        await this.connectOnce();
      } catch (error) {
        if (!(error instanceof SessionEnded)) {
          this.abandon("the worker stopped on an error");
          throw error;
        }
        if (this.stopping) {
          break;
        }
        this.disconnectedAt ??= performance.now();
        if (error.welcomed) {
          delayMs = FIRST_RECONNECT_DELAY_MS;
        }
        this.log.warn(
          `zbrain worker: lost the server at ${this.client.server} (${error.reason}); ` +
            `reconnecting in ${(delayMs / 1000).toFixed(1)}s`,
        );
      }
      this.abandonIfReaped();
      await waitAtMost(this.stopped.promise, delayMs * (0.5 + Math.random() / 2));
      delayMs = Math.min(this.reconnectMaxMs, delayMs * 2);
    }
  }

  private async drain(graceMs: number): Promise<void> {
    this.draining = true;
    const deadline = performance.now() + graceMs;
    const session = this.session;
    if (session?.open) {
      this.outbox.send(drainMessage());
      // Leases the server sent before it saw the drain may still be on the
      // way; its acknowledgement comes after the last of them.
      await waitAtMost(session.drainAcknowledged, Math.min(graceMs, DRAIN_ACK_TIMEOUT_MS));
    }
    this.log.info(`zbrain worker: draining: ${this.attempts.size} running job(s), grace ${graceMs / 1000}s`);
    await waitAtMost(Promise.race([this.allSettled(), this.graceEnded.promise]), deadline - performance.now());
    for (const attempt of this.attempts.values()) {
      attempt.stop("shutdown");
    }
    await this.allSettled();
    this.stopping = true;
    this.stopped.resolve();
    await this.session?.close();
  }

  private allSettled(): Promise<unknown> {
    return Promise.all([...this.attempts.values()].map((attempt) => attempt.done));
  }

  /** Whether attempts run, or lines or results wait to be reported. */
  private owesServer(): boolean {
    return this.attempts.size > 0 || this.outbox.owes();
  }

  /** Stop every attempt without reporting it, and forget what is owed. */
  private abandon(detail: string): void {
    for (const attempt of this.attempts.values()) {
      attempt.stop("lease-lost", detail);
    }
    this.outbox.clear();
  }

  /**
   * Away for longer than a lease lives, the worker has lost every lease it
   * held to the server's reaper: stop those attempts (reporting nothing)
   * rather than run them on and buffer their output.
   */
  private abandonIfReaped(): void {
    if (this.disconnectedAt !== undefined && performance.now() - this.disconnectedAt >= this.outbox.leaseTtlMs) {
      this.abandon("disconnected for longer than a lease");
    }
  }

  // -- one connection ----------------------------------------------------------

  private async connectOnce(): Promise<void> {
    const session = new Session(
      this.workers,
      this.outbox,
      {
        onWelcome: () => this.welcomed(),
        onMessage: (message) => this.handle(message),
        heartbeat: () => this.heartbeat(),
      },
      this.client.server,
    );
    this.session = session;
    try {
      await session.run(helloMessage(this.hello, this.heldLeases(), this.draining));
    } finally {
      if (this.stopping) {
        // Shutting down: whatever still runs is stopped and not reported.
        this.abandon("the worker stopped");
        await this.allSettled();
        this.outbox.clear();
      } else {
        // A lease is the job's, not the connection's: attempts run on, and
        // their logs and results wait for the next connection (to this
        // server or another replica), whose hello claims the leases back.
        this.outbox.afterBreak();
      }
    }
  }

  /** The leases to claim in a hello: attempts running, and those with lines or a result owed. */
  private heldLeases(): LeaseRef[] {
    const held = new Map<string, LeaseRef>();
    for (const ref of [...[...this.attempts.values()].map((attempt) => attempt.ref), ...this.outbox.leases()]) {
      held.set(leaseKey(ref), ref);
    }
    return [...held.values()];
  }

  private welcomed(): void {
    const reconnected = this.disconnectedAt !== undefined;
    this.disconnectedAt = undefined;
    if (this.draining) {
      this.outbox.send(drainMessage());
    }
    this.log.info(
      `zbrain worker: ${reconnected ? "reconnected to" : "connected to"} ${this.client.server} ` +
        `as ${this.workerId} (${this.hello.concurrency} slots)`,
    );
  }

  private heartbeat(): ConnectRequest | undefined {
    const leases = [...this.attempts.values()].map((attempt) => attempt.ref);
    return leases.length === 0
      ? undefined
      : create(ConnectRequestSchema, { message: { case: "heartbeat", value: { leases } } });
  }

  private handle(response: ConnectResponse): void {
    const { message } = response;
    switch (message.case) {
      case "lease":
        this.start(message.value);
        break;
      case "leases":
        message.value.leases.forEach((lease) => this.start(lease));
        break;
      case "cancel":
      case "rejected": {
        const lease = message.value.lease;
        const attempt = lease === undefined ? undefined : this.attempts.get(lease.jobId);
        if (attempt !== undefined && attempt.ref.leaseEpoch === lease?.leaseEpoch) {
          attempt.stop(message.case === "cancel" ? "canceled" : "lease-lost", message.value.reason);
        }
        break;
      }
      default:
        break; // the welcome and the drain acknowledgement are the session's
    }
  }

  private start(lease: Lease): void {
    const attempt = new Attempt(lease);
    this.attempts.set(attempt.job.id, attempt);
    attempt.done = (async () => {
      try {
        if (await runAttempt(attempt, this.handler, this.outbox, this.settings)) {
          this.completed += 1;
        }
      } finally {
        if (this.attempts.get(attempt.job.id) === attempt) {
          this.attempts.delete(attempt.job.id);
        }
      }
    })();
  }
}

function drainMessage(): ConnectRequest {
  return create(ConnectRequestSchema, { message: { case: "drain", value: { reason: "shutdown" } } });
}
