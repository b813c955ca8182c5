/**
 * What a job is, as the client's callers write it (`JobSpec`), and its
 * conversion to and from the wire's JobSpec message: one place for submit,
 * batches, templates and schedules.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError } from "./errors.js";
import {
  type DependencyCondition,
  DependencySchema,
  type JobSpec as JobSpecMessage,
  JobSpecSchema,
  type Resources as ResourcesMessage,
  ResourcesSchema,
} from "./gen/zbrain/v1/job_pb.js";
import { type Resources, durationMs, parsed, resourcesFrom } from "./models.js";

/**
 * A job another job waits for: a stored job by `jobId`, or, within one
 * `submitBatch`, the job of the batch whose `ref` is `ref`.
 */
export type Dependency =
  | { readonly jobId: string; readonly condition?: DependencyCondition }
  | { readonly ref: string; readonly condition?: DependencyCondition };

/** What a job is besides its command. */
export interface JobOptions {
  /** The organisation; the server's default (ZDEFAULT_ORG_ID) when unset. */
  readonly org?: string;
  /** Any JSON-serialisable value; the job reads it on stdin and from $ZBRAIN_INPUT. */
  readonly input?: unknown;
  /** The input as JSON text, for values JSON.stringify cannot write exactly; wins over `input`. */
  readonly inputJson?: string;
  readonly env?: Readonly<Record<string, string>>;
  /** Limit of one attempt; the server's default (ZBRAIN_DEFAULT_TIMEOUT) when unset. */
  readonly timeoutMs?: number;
  /** Retries after a failed attempt; the server's default (ZBRAIN_MAX_RETRIES) when unset. */
  readonly maxRetries?: number;
  /** Higher runs first among an organisation's runnable jobs. */
  readonly priority?: number;
  readonly labels?: Readonly<Record<string, string>>;
  /** Jobs of the org sharing this key run at most `concurrencyLimit` (default 1) at once, in order. */
  readonly concurrencyKey?: string;
  readonly concurrencyLimit?: number;
  /** Only a worker whose labels hold these pairs runs the job ("" asks for the key alone). */
  readonly requires?: Readonly<Record<string, string>>;
  /** What one attempt may use; a job over a limit fails with RESOURCE_LIMIT_EXCEEDED. */
  readonly resources?: Resources;
  /** Ask a sandboxed worker for the network (it must allow it too). */
  readonly network?: boolean;
  /** The job waits BLOCKED until these jobs finish (by default: succeed). */
  readonly dependsOn?: readonly Dependency[];
  /** Its name within one `submitBatch`, for the `dependsOn` of others of the batch. */
  readonly ref?: string;
  /** Run no earlier than this time. */
  readonly runAt?: Date;
  /** Run no earlier than this long after the submit; not with `runAt`. */
  readonly delayMs?: number;
}

/** One job of a `submitBatch`. */
export interface JobSpec extends JobOptions {
  /** The argv to run; never passed through a shell. */
  readonly cmd: readonly string[];
}

/** The JobSpec message for a job, checking what the server cannot tell apart. */
export function jobSpec(spec: JobSpec): JobSpecMessage {
  if (typeof spec.cmd === "string" || !Array.isArray(spec.cmd)) {
    throw new InvalidArgumentError("cmd must be an argv array such as ['echo', 'hi'], not a shell string");
  }
  let inputJson = spec.inputJson ?? "";
  if (spec.inputJson === undefined && spec.input !== undefined) {
    inputJson = JSON.stringify(spec.input);
  }
  return create(JobSpecSchema, {
    orgId: spec.org ?? "",
    cmd: [...spec.cmd],
    inputJson,
    env: { ...spec.env },
    priority: spec.priority ?? 0,
    labels: { ...spec.labels },
    concurrencyKey: spec.concurrencyKey ?? "",
    concurrencyLimit: spec.concurrencyLimit ?? 0,
    requires: { ...spec.requires },
    ...(spec.timeoutMs === undefined ? {} : { timeout: durationFromMs(spec.timeoutMs) }),
    ...(spec.maxRetries === undefined ? {} : { maxRetries: spec.maxRetries }),
    ...(spec.resources === undefined ? {} : { resources: resourcesMessage(spec.resources) }),
    network: spec.network ?? false,
    dependsOn: (spec.dependsOn ?? []).map((dependency) => create(DependencySchema, dependency)),
    ref: spec.ref ?? "",
    ...(spec.runAt === undefined ? {} : { runAt: timestampFromDate(spec.runAt) }),
    ...(spec.delayMs === undefined ? {} : { delay: durationFromMs(spec.delayMs) }),
  });
}

function resourcesMessage(resources: Resources): ResourcesMessage {
  return create(ResourcesSchema, {
    memoryBytes: BigInt(resources.memoryBytes ?? 0),
    cpuSeconds: BigInt(resources.cpuSeconds ?? 0),
    processes: resources.processes ?? 0,
    openFiles: resources.openFiles ?? 0,
    fileSizeBytes: BigInt(resources.fileSizeBytes ?? 0),
  });
}

/** A JobSpec message as the options that would make it (a template's or a schedule's job). */
export function jobSpecFrom(message: JobSpecMessage): JobSpec {
  return {
    cmd: message.cmd,
    org: message.orgId,
    inputJson: message.inputJson,
    input: parsed(message.inputJson),
    env: message.env,
    ...(message.timeout === undefined ? {} : { timeoutMs: durationMs(message.timeout) }),
    ...(message.maxRetries === undefined ? {} : { maxRetries: message.maxRetries }),
    priority: message.priority,
    labels: message.labels,
    concurrencyKey: message.concurrencyKey,
    concurrencyLimit: message.concurrencyLimit,
    requires: message.requires,
    ...(message.resources === undefined ? {} : { resources: resourcesFrom(message.resources) }),
    network: message.network,
    dependsOn: message.dependsOn.map(({ jobId, ref, condition }) => (ref ? { ref, condition } : { jobId, condition })),
    ref: message.ref,
    ...(message.runAt === undefined ? {} : { runAt: timestampDate(message.runAt) }),
    ...(message.delay === undefined ? {} : { delayMs: durationMs(message.delay) }),
  };
}
