/**
 * `ZBrainClient`: zbrain.v1.JobService as promises and async iterators, the
 * same operations as the Python client's `zbrain.Client`.
 *
 * @module
 */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, createClient } from "@connectrpc/connect";
import { type Connection, type ConnectionOptions, type UnaryCaller, openConnection } from "./connection.js";
import { CanceledError, DeadlineExceededError, ZBrainError, errorFromCall, required } from "./errors.js";
import type { JobState } from "./gen/zbrain/v1/job_pb.js";
import { type CancelOutcome, JobService, ListOrder } from "./gen/zbrain/v1/job_service_pb.js";
import { OrgService } from "./gen/zbrain/v1/org_pb.js";
import { ScheduleService } from "./gen/zbrain/v1/schedule_pb.js";
import { TemplateService } from "./gen/zbrain/v1/template_pb.js";
import {
  type Event,
  type Job,
  type LogLine,
  type WorkerInfo,
  eventFrom,
  isTerminal,
  jobFrom,
  logLineFrom,
  workerFrom,
} from "./models.js";
import { Orgs } from "./orgs.js";
import { type JobOptions, type JobSpec, jobSpec } from "./specs.js";
import { Schedules, Templates } from "./workflows.js";

export interface SubmitOptions extends JobOptions {
  /**
   * An idempotency key, unique per organisation: a submit repeated with the
   * same key returns the job the first one created instead of another.
   */
  readonly requestId?: string;
}

export interface ListOptions {
  readonly org?: string;
  /** Only jobs in one of these states; every state when empty. */
  readonly states?: readonly JobState[];
  readonly oldestFirst?: boolean;
  /** Only jobs carrying every one of these labels (a schedule's jobs carry `zbrain.schedule`). */
  readonly labels?: Readonly<Record<string, string>>;
  /** Only jobs created at or after this time. */
  readonly createdAfter?: Date;
  /** Only jobs created before this time. */
  readonly createdBefore?: Date;
  /** Stop after this many jobs. */
  readonly limit?: number;
  /** Jobs fetched per call (the server caps it at 1,000). */
  readonly pageSize?: number;
}

export interface RerunOptions {
  /** A new input; the job's own is kept when unset. */
  readonly input?: unknown;
  /** The new input as JSON text; wins over `input`. */
  readonly inputJson?: string;
}

export interface WorkersOptions {
  /** Only workers serving this organisation. */
  readonly org?: string;
}

export interface LogsOptions {
  /** Keep the stream open for new lines until the job finishes. */
  readonly follow?: boolean;
  /** Start after this line sequence: the last `LogLine.sequence` seen, to resume. */
  readonly after?: number;
  /** Ends the stream; the iteration then rejects with CanceledError. */
  readonly signal?: AbortSignal;
}

export interface EventsOptions {
  readonly org?: string;
  /** Only events whose topic starts with this, such as `jobs/<id>/`. */
  readonly topicPrefix?: string;
  /** Start after this event sequence: the last `Event.sequence` seen, to resume. */
  readonly after?: number;
  /**
   * Start after the last event stored when the stream opens (with `follow`:
   * only what happens from then on). Not with `after`: that is INVALID_ARGUMENT.
   */
  readonly fromEnd?: boolean;
  /** Keep the stream open for new events. */
  readonly follow?: boolean;
  readonly signal?: AbortSignal;
}

export interface WaitOptions {
  /** Give up after this long with DeadlineExceededError; no limit when unset. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/**
 * A client for one ZBrain server. The connection opens on the first call and
 * is shared by every call (and by a {@link Worker} built on this client);
 * `close()` ends it. Every method rejects with a {@link ZBrainError}
 * subclass.
 *
 * ```ts
 * const client = new ZBrainClient({ server: "127.0.0.1:50051" });
 * const job = await client.submit(["echo", "hi"]);
 * for await (const line of client.logs(job.id, { follow: true })) console.log(line.text);
 * ```
 */
export class ZBrainClient {
  /** The connection; a Worker made from this client uses it too. */
  readonly connection: Connection;
  /** Organisation settings: limits, quotas and pauses (OrgService). */
  readonly orgs: Orgs;
  /** Named, versioned job templates (TemplateService). */
  readonly templates: Templates;
  /** Jobs or templates submitted on a cron or at an interval (ScheduleService). */
  readonly schedules: Schedules;
  private readonly jobs: Client<typeof JobService>;

  /** Checks the options at once (a bad address is InvalidArgumentError) but dials nothing yet. */
  constructor(options: ConnectionOptions = {}) {
    this.connection = openConnection(options);
    this.jobs = createClient(JobService, this.connection.transport);
    const unary: UnaryCaller = (call) => this.unary(() => call(this.callOptions()));
    this.orgs = new Orgs(createClient(OrgService, this.connection.transport), unary);
    this.templates = new Templates(createClient(TemplateService, this.connection.transport), unary);
    this.schedules = new Schedules(createClient(ScheduleService, this.connection.transport), unary);
  }

  /** The server address as dialled. */
  get server(): string {
    return this.connection.server;
  }

  /** Close the connection; calls still running end with CanceledError or UnavailableError. */
  close(): void {
    this.connection.close();
  }

  /** Submit one job; it is durable when the promise resolves. */
  async submit(cmd: readonly string[], options: SubmitOptions = {}): Promise<Job> {
    const { requestId = "", ...job } = options;
    const response = await this.unary(() =>
      this.jobs.submit({ job: jobSpec({ cmd, ...job }), requestId }, this.callOptions()),
    );
    return jobFrom(required(response.job, "Submit"));
  }

  /**
   * Submit many jobs atomically (all are stored or none); resolves to their
   * ids in order. A graph is one batch: jobs name each other with `ref` and
   * `dependsOn: [{ ref }]`.
   */
  async submitBatch(specs: readonly JobSpec[]): Promise<string[]> {
    const response = await this.unary(() => this.jobs.submitBatch({ jobs: specs.map(jobSpec) }, this.callOptions()));
    return response.jobIds;
  }

  /** Submit a finished job again as a new job (its input replaced if given), linked to it by `rerunOf`. */
  async rerun(jobId: string, options: RerunOptions = {}): Promise<Job> {
    const inputJson = options.inputJson ?? (options.input === undefined ? undefined : JSON.stringify(options.input));
    const request = { jobId, ...(inputJson === undefined ? {} : { inputJson }) };
    const response = await this.unary(() => this.jobs.rerun(request, this.callOptions()));
    return jobFrom(required(response.job, "Rerun"));
  }

  async get(jobId: string): Promise<Job> {
    const response = await this.unary(() => this.jobs.get({ jobId }, this.callOptions()));
    return jobFrom(required(response.job, "Get"));
  }

  /** Every job that matches, newest first unless `oldestFirst`, fetching pages as the iteration needs them. */
  async *list(options: ListOptions = {}): AsyncGenerator<Job, void, undefined> {
    const { limit, pageSize = 100 } = options;
    const request = {
      orgId: options.org ?? "",
      states: [...(options.states ?? [])],
      order: options.oldestFirst ? ListOrder.OLDEST_FIRST : ListOrder.NEWEST_FIRST,
      labels: { ...options.labels },
      ...(options.createdAfter === undefined ? {} : { createTimeAfter: timestampFromDate(options.createdAfter) }),
      ...(options.createdBefore === undefined ? {} : { createTimeBefore: timestampFromDate(options.createdBefore) }),
      pageSize: limit === undefined ? pageSize : Math.min(pageSize, limit),
      pageToken: "",
    };
    let seen = 0;
    for (;;) {
      const response = await this.unary(() => this.jobs.list(request, this.callOptions()));
      for (const message of response.jobs) {
        yield jobFrom(message);
        seen += 1;
        if (limit !== undefined && seen >= limit) {
          return;
        }
      }
      if (!response.nextPageToken) {
        return;
      }
      request.pageToken = response.nextPageToken;
    }
  }

  /**
   * The workers connected to the server (this replica), by id: all of them
   * for an admin (or those serving `org`), else those of the token's
   * organisation.
   */
  async *workers(options: WorkersOptions = {}): AsyncGenerator<WorkerInfo, void, undefined> {
    const request = { orgId: options.org ?? "", pageSize: 0, pageToken: "" };
    for (;;) {
      const response = await this.unary(() => this.jobs.listWorkers(request, this.callOptions()));
      yield* response.workers.map(workerFrom);
      if (!response.nextPageToken) {
        return;
      }
      request.pageToken = response.nextPageToken;
    }
  }

  /** Cancel a job; `outcome` says whether it stopped, will stop, or had already finished. */
  async cancel(jobId: string): Promise<{ job: Job; outcome: CancelOutcome }> {
    const response = await this.unary(() => this.jobs.cancel({ jobId }, this.callOptions()));
    return { job: jobFrom(required(response.job, "Cancel")), outcome: response.outcome };
  }

  /**
   * Resolve with the job once it is finished (SUCCEEDED, FAILED or CANCELED).
   *
   * It follows the job's log stream, which the server ends when the job
   * finishes, so waiting costs no polling.
   */
  async wait(jobId: string, options: WaitOptions = {}): Promise<Job> {
    const deadline = options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs);
    const signal = AbortSignal.any([options.signal, deadline].filter((s): s is AbortSignal => s !== undefined));
    try {
      for (;;) {
        // Only the stream's end matters: starting after the last possible
        // sequence skips the lines themselves.
        for await (const _ of this.logs(jobId, { follow: true, after: Number.MAX_SAFE_INTEGER, signal })) {
          // none arrive
        }
        const job = await this.get(jobId);
        if (isTerminal(job.state)) {
          return job;
        }
        signal.throwIfAborted();
      }
    } catch (error) {
      if (deadline?.aborted) {
        throw new DeadlineExceededError(`job ${jobId} did not finish within ${options.timeoutMs} ms`, { cause: error });
      }
      if (signal.aborted && !(error instanceof ZBrainError)) {
        throw new CanceledError(`the wait for job ${jobId} was canceled`, { cause: error });
      }
      throw error;
    }
  }

  /** A job's log lines after sequence `after`; with `follow`, new ones until the job finishes. */
  async *logs(jobId: string, options: LogsOptions = {}): AsyncGenerator<LogLine, void, undefined> {
    const request = { jobId, afterSequence: BigInt(options.after ?? 0), follow: options.follow ?? false };
    const call = () => this.jobs.streamLogs(request, streamOptions(options.signal));
    for await (const response of this.stream(call, options.signal)) {
      yield* response.lines.map(logLineFrom);
    }
  }

  /**
   * Recorded events after sequence `after`; with `follow`, new ones as they
   * happen, until the iteration stops. To resume after a disconnect, pass the
   * last `Event.sequence` seen as `after`: nothing is missed, nothing repeats.
   */
  async *events(options: EventsOptions = {}): AsyncGenerator<Event, void, undefined> {
    const request = {
      orgId: options.org ?? "",
      topicPrefix: options.topicPrefix ?? "",
      afterSequence: BigInt(options.after ?? 0),
      follow: options.follow ?? false,
      fromEnd: options.fromEnd ?? false,
    };
    const call = () => this.jobs.streamEvents(request, streamOptions(options.signal));
    for await (const response of this.stream(call, options.signal)) {
      yield* response.events.map(eventFrom);
    }
  }

  private callOptions(): { timeoutMs: number } {
    return { timeoutMs: this.connection.timeoutMs };
  }

  private async unary<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw errorFromCall(error, this.server);
    }
  }

  /** A server stream's messages with its errors mapped; leaving the loop early ends the call. */
  private async *stream<T>(call: () => AsyncIterable<T>, signal?: AbortSignal): AsyncGenerator<T, void, undefined> {
    try {
      yield* call();
    } catch (error) {
      throw errorFromCall(error, this.server, signal);
    }
  }
}

function streamOptions(signal: AbortSignal | undefined): { signal?: AbortSignal } {
  return signal === undefined ? {} : { signal };
}
