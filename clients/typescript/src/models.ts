/**
 * The values the client returns, converted from the generated messages at
 * the edge: camelCase fields, `Date` times, durations in milliseconds, JSON
 * parsed, and 64-bit counters as numbers (sequences and epochs stay far
 * below 2^53). The enums are the generated ones, so their numbers are the
 * wire's.
 *
 * @module
 */
import { type Duration, type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import type * as event_pb from "./gen/zbrain/v1/event_pb.js";
import type { OrgSettings as OrgSettingsMessage } from "./gen/zbrain/v1/org_pb.js";
import type { Worker as WorkerMessage } from "./gen/zbrain/v1/job_service_pb.js";
import {
  JobState,
  type LogStream,
  type TransitionCause,
  type WaitingCause,
  type Artifact as ArtifactMessage,
  type Job as JobMessage,
  type Resources as ResourcesMessage,
  type LogLine as LogLineMessage,
} from "./gen/zbrain/v1/job_pb.js";

export { AttemptOutcome, CancelOutcome } from "./gen/zbrain/v1/job_service_pb.js";
export { DependencyCondition, JobState, LogStream, TransitionCause, WaitingCause } from "./gen/zbrain/v1/job_pb.js";

/**
 * What one attempt of a job may use; each unset or 0 is no limit of the job's
 * own, and a worker bounds each by its maximum (docs/sandbox.md).
 */
export interface Resources {
  /** Resident memory of the job's processes together. */
  readonly memoryBytes?: number;
  /** CPU time of each process, in whole seconds. */
  readonly cpuSeconds?: number;
  /** Processes of the job's user at once (RLIMIT_NPROC). */
  readonly processes?: number;
  /** Open files of each process. */
  readonly openFiles?: number;
  /** Largest file a process may write. */
  readonly fileSizeBytes?: number;
}

/** One file a job produced, stored content-addressed by its SHA-256. */
export interface Artifact {
  readonly name: string;
  readonly sha256: string;
  readonly sizeBytes: number;
}

/** A job's last state change, and why it happened. */
export interface Transition {
  readonly fromState: JobState;
  readonly toState: JobState;
  /** Branch on this, never on the words of `reason`; treat an unknown value like UNSPECIFIED. */
  readonly cause: TransitionCause;
  readonly reason: string;
  readonly time: Date | undefined;
}

/** A job as the server reported it. */
export interface Job {
  /** A UUIDv7: its text sorts in submission order. */
  readonly id: string;
  readonly orgId: string;
  readonly cmd: readonly string[];
  /** The input, parsed; null when there is none. */
  readonly input: unknown;
  /** The input as the server holds it, exact even where JSON.parse is not (integers beyond 2^53). */
  readonly inputJson: string;
  readonly env: Readonly<Record<string, string>>;
  /** Wall-clock limit of one attempt. */
  readonly timeoutMs: number;
  readonly maxRetries: number;
  readonly priority: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly state: JobState;
  /** Attempts started so far. */
  readonly attempt: number;
  readonly createTime: Date | undefined;
  readonly updateTime: Date | undefined;
  readonly startTime: Date | undefined;
  readonly finishTime: Date | undefined;
  readonly nextRunTime: Date | undefined;
  readonly lastError: string;
  /** The output, parsed; null when there is none. */
  readonly output: unknown;
  readonly outputJson: string;
  readonly artifacts: readonly Artifact[];
  /** The fencing token of the current lease; it increases with every attempt. */
  readonly leaseEpoch: number;
  readonly workerId: string;
  readonly leaseExpireTime: Date | undefined;
  readonly cancelRequested: boolean;
  readonly requestId: string;
  readonly lastTransition: Transition | undefined;
  /** At most `concurrencyLimit` (0: one) jobs of the org with this key run at once (docs/limits.md). */
  readonly concurrencyKey: string;
  readonly concurrencyLimit: number;
  /** The worker labels it needs: a value, or "" for the key alone. */
  readonly requires: Readonly<Record<string, string>>;
  /** From get, for a runnable job that waits: what holds it, in words. */
  readonly waitingReason: string;
  /** The kind of hold waitingReason describes, to branch on (UNSPECIFIED when not waiting). */
  readonly waitingCause: WaitingCause;
  /** What one attempt may use, as submitted. */
  readonly resources: Required<Resources>;
  /** Whether it asks a sandboxed worker for the network. */
  readonly network: boolean;
  /** The job this one reruns (see `ZBrainClient.rerun`); "" when none. */
  readonly rerunOf: string;
}

/**
 * What an organisation may use; 0 means none of its own: the server's
 * default where it has one, else no limit (docs/limits.md).
 */
export interface OrgSettings {
  readonly orgId: string;
  readonly maxRunningJobs: number;
  /** Starts per second, a token bucket. */
  readonly maxStartsPerSecond: number;
  /** Jobs not yet finished; a submit beyond it is ResourceExhaustedError. */
  readonly maxWaitingJobs: number;
  /** Log bytes of all its stored jobs together. */
  readonly maxLogBytes: number;
  /** Artifact bytes of all its stored jobs together. */
  readonly maxArtifactBytes: number;
  readonly retentionDays: number;
  /** No job of the organisation starts. */
  readonly paused: boolean;
  /** Label selectors whose matching jobs do not start. */
  readonly pausedSelectors: readonly Readonly<Record<string, string>>[];
  readonly updateTime: Date | undefined;
  /** What its stored jobs hold now. */
  readonly logBytesUsed: number;
  readonly artifactBytesUsed: number;
}

/** A worker connected to the server. */
export interface WorkerInfo {
  readonly id: string;
  /** The network address it connected from. */
  readonly address: string;
  readonly orgIds: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  /** Slots holding a lease now, of `slots`. */
  readonly slotsUsed: number;
  readonly slots: number;
  readonly leaseJobIds: readonly string[];
  readonly connectTime: Date | undefined;
  readonly lastHeardTime: Date | undefined;
  /** It said it is shutting down and takes no new work. */
  readonly draining: boolean;
  /** The server replica it is connected to. */
  readonly replicaId: string;
}

/** One line of a job's output. */
export interface LogLine {
  /** Per job, from 1 without gaps: pass the last one seen as `after` to resume. */
  readonly sequence: number;
  readonly stream: LogStream;
  readonly attempt: number;
  readonly time: Date | undefined;
  readonly text: string;
}

/** A job's state change, as an event carries it. */
export interface StateChange {
  readonly fromState: JobState;
  readonly toState: JobState;
  readonly cause: TransitionCause;
  readonly reason: string;
  readonly attempt: number;
  readonly workerId: string;
  readonly error: string;
  readonly nextRunTime: Date | undefined;
  /** The start of the output (at most 1 KiB of its JSON), when it succeeded. */
  readonly outputSummary: string;
  readonly artifacts: readonly Artifact[];
  readonly leaseEpoch: number;
  /** The job's concurrency key, if it has one. */
  readonly concurrencyKey: string;
}

/**
 * What an event says happened, discriminated by `case` (the name of the
 * proto's oneof field). `case` is undefined for a kind of event this client
 * does not know yet: a newer server may send those.
 */
export type EventPayload =
  | { readonly case: "jobSubmitted"; readonly value: { readonly cmd: readonly string[]; readonly priority: number } }
  | { readonly case: "jobStateChanged"; readonly value: StateChange }
  | { readonly case: "jobLogged"; readonly value: { readonly lines: readonly LogLine[] } }
  | { readonly case: "workerPresence"; readonly value: { readonly workerId: string; readonly connected: boolean } }
  | { readonly case: undefined; readonly value?: undefined };

/** One recorded change. */
export interface Event {
  /** Global and strictly increasing: pass the last one seen as `after` to resume. */
  readonly sequence: number;
  /** Such as `jobs/{job_id}/state`, `jobs/{job_id}/logs` or `workers/{worker_id}`. */
  readonly topic: string;
  readonly orgId: string;
  /** The job the event is about; empty for a worker's. */
  readonly jobId: string;
  readonly time: Date | undefined;
  readonly payload: EventPayload;
}

const TERMINAL_STATES: ReadonlySet<JobState> = new Set([JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED]);

/** Whether a job in this state is finished for good (SUCCEEDED, FAILED or CANCELED). */
export function isTerminal(state: JobState): boolean {
  return TERMINAL_STATES.has(state);
}

// -- from the generated messages ------------------------------------------------

function date(value: Timestamp | undefined): Date | undefined {
  return value === undefined ? undefined : timestampDate(value);
}

export function durationMs(value: Duration | undefined): number {
  return value === undefined ? 0 : Number(value.seconds) * 1000 + Math.floor(value.nanos / 1e6);
}

export function parsed(json: string): unknown {
  return json === "" ? null : JSON.parse(json);
}

function artifact(message: ArtifactMessage): Artifact {
  return { name: message.name, sha256: message.sha256, sizeBytes: Number(message.sizeBytes) };
}

export function jobFrom(message: JobMessage): Job {
  const transition = message.lastTransition;
  return {
    id: message.id,
    orgId: message.orgId,
    cmd: message.cmd,
    input: parsed(message.inputJson),
    inputJson: message.inputJson,
    env: message.env,
    timeoutMs: durationMs(message.timeout),
    maxRetries: message.maxRetries,
    priority: message.priority,
    labels: message.labels,
    state: message.state,
    attempt: message.attempt,
    createTime: date(message.createTime),
    updateTime: date(message.updateTime),
    startTime: date(message.startTime),
    finishTime: date(message.finishTime),
    nextRunTime: date(message.nextRunTime),
    lastError: message.lastError,
    output: parsed(message.outputJson),
    outputJson: message.outputJson,
    artifacts: message.artifacts.map(artifact),
    leaseEpoch: Number(message.leaseEpoch),
    workerId: message.workerId,
    leaseExpireTime: date(message.leaseExpireTime),
    cancelRequested: message.cancelRequested,
    requestId: message.requestId,
    concurrencyKey: message.concurrencyKey,
    concurrencyLimit: message.concurrencyLimit,
    requires: message.requires,
    waitingReason: message.waitingReason,
    waitingCause: message.waitingCause,
    lastTransition:
      transition === undefined
        ? undefined
        : {
            fromState: transition.fromState,
            toState: transition.toState,
            cause: transition.cause,
            reason: transition.reason,
            time: date(transition.time),
          },
    resources: resourcesFrom(message.resources),
    network: message.network,
    rerunOf: message.rerunOf,
  };
}

export function resourcesFrom(message: ResourcesMessage | undefined): Required<Resources> {
  return {
    memoryBytes: Number(message?.memoryBytes ?? 0n),
    cpuSeconds: Number(message?.cpuSeconds ?? 0n),
    processes: message?.processes ?? 0,
    openFiles: message?.openFiles ?? 0,
    fileSizeBytes: Number(message?.fileSizeBytes ?? 0n),
  };
}

export function orgSettingsFrom(message: OrgSettingsMessage): OrgSettings {
  return {
    orgId: message.orgId,
    maxRunningJobs: message.maxRunningJobs,
    maxStartsPerSecond: message.maxStartsPerSecond,
    maxWaitingJobs: message.maxWaitingJobs,
    maxLogBytes: Number(message.maxLogBytes),
    maxArtifactBytes: Number(message.maxArtifactBytes),
    retentionDays: message.retentionDays,
    paused: message.paused,
    pausedSelectors: message.pausedSelectors.map((selector) => selector.labels),
    updateTime: date(message.updateTime),
    logBytesUsed: Number(message.logBytesUsed),
    artifactBytesUsed: Number(message.artifactBytesUsed),
  };
}

export function workerFrom(message: WorkerMessage): WorkerInfo {
  return {
    id: message.id,
    address: message.address,
    orgIds: message.orgIds,
    labels: message.labels,
    slotsUsed: message.slotsUsed,
    slots: message.slots,
    leaseJobIds: message.leaseJobIds,
    connectTime: date(message.connectTime),
    lastHeardTime: date(message.lastHeardTime),
    draining: message.draining,
    replicaId: message.replicaId,
  };
}

export function logLineFrom(message: LogLineMessage): LogLine {
  return {
    sequence: Number(message.sequence),
    stream: message.stream,
    attempt: message.attempt,
    time: date(message.time),
    text: message.text,
  };
}

function payloadFrom(payload: event_pb.Event["payload"]): EventPayload {
  switch (payload.case) {
    case "jobSubmitted":
      return { case: payload.case, value: { cmd: payload.value.cmd, priority: payload.value.priority } };
    case "jobStateChanged": {
      const change = payload.value;
      return {
        case: payload.case,
        value: {
          fromState: change.fromState,
          toState: change.toState,
          cause: change.cause,
          reason: change.reason,
          attempt: change.attempt,
          workerId: change.workerId,
          error: change.error,
          nextRunTime: date(change.nextRunTime),
          outputSummary: change.outputSummary,
          artifacts: change.artifacts.map(artifact),
          leaseEpoch: Number(change.leaseEpoch),
          concurrencyKey: change.concurrencyKey,
        },
      };
    }
    case "jobLogged":
      return { case: payload.case, value: { lines: payload.value.lines.map(logLineFrom) } };
    case "workerPresence":
      return {
        case: payload.case,
        value: { workerId: payload.value.workerId, connected: payload.value.connected },
      };
    default:
      return { case: undefined };
  }
}

export function eventFrom(message: event_pb.Event): Event {
  return {
    sequence: Number(message.sequence),
    topic: message.topic,
    orgId: message.orgId,
    jobId: message.jobId,
    time: date(message.time),
    payload: payloadFrom(message.payload),
  };
}
