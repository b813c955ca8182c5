/**
 * ZBrain's TypeScript client and worker for Node.js.
 *
 * - {@link ZBrainClient}: submit (graphs too), inspect, list, cancel, rerun and
 *   wait for jobs, follow their logs and the event stream, list workers, and
 *   read or change organisation settings (`client.orgs`), templates
 *   (`client.templates`) and schedules (`client.schedules`).
 * - {@link Worker}: run jobs in this process with a handler, over the same
 *   WorkerService.Connect protocol as the Python SDK.
 * - Errors are {@link ZBrainError} subclasses mapped from gRPC status codes,
 *   with the request's field violations readable.
 *
 * The generated messages and service descriptors are under
 * `@zbrain/client/gen/zbrain/v1/*_pb.js` for calls this layer does not wrap.
 *
 * @module
 */
export {
  ZBrainClient,
  type EventsOptions,
  type ListOptions,
  type LogsOptions,
  type RerunOptions,
  type SubmitOptions,
  type WaitOptions,
  type WorkersOptions,
} from "./client.js";
export { Orgs, type OrgLimits } from "./orgs.js";
export type { Dependency, JobOptions, JobSpec } from "./specs.js";
export {
  CatchUpPolicy,
  OverlapPolicy,
  ParameterType,
  Schedules,
  Templates,
  type Schedule,
  type ScheduleOptions,
  type Template,
  type TemplateOptions,
  type TemplateParameter,
  type TemplateSubmitOptions,
} from "./workflows.js";
export { DEFAULT_SERVER, type ConnectionOptions, type TlsOptions } from "./connection.js";
export {
  AlreadyExistsError,
  CanceledError,
  Code,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  OutOfRangeError,
  PermissionDeniedError,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
  ZBrainError,
  type ZBrainErrorOptions,
  type FieldViolation,
} from "./errors.js";
export {
  AttemptOutcome,
  CancelOutcome,
  DependencyCondition,
  JobState,
  LogStream,
  TransitionCause,
  WaitingCause,
  isTerminal,
  type Artifact,
  type Event,
  type EventPayload,
  type Job,
  type LogLine,
  type OrgSettings,
  type Resources,
  type StateChange,
  type Transition,
  type WorkerInfo,
} from "./models.js";
export { AttemptStoppedError, type Handler, type JobContext, type Logger, type StopReason } from "./worker/attempt.js";
export { Worker, type WorkerOptions } from "./worker/worker.js";
