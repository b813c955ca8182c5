/**
 * The one error hierarchy of the client and the worker: every failure is a
 * {@link ZBrainError} with the gRPC status `code` it came from, so callers
 * branch on classes (`err instanceof NotFoundError`), never on message text.
 * The classes match the Python client's `zbrain.errors`.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";

export { Code };

/** One invalid field of a request: which field, and what is wrong with it. */
export interface FieldViolation {
  /** The field's path in the request, such as `job.cmd` or `jobs[2].env['X']`. */
  readonly field: string;
  readonly description: string;
}

/** Root of every error ZBrain raises; `code` is the gRPC status code. */
export class ZBrainError extends Error {
  /** The gRPC status code; `Code` is Connect's enum of gRPC's numbers. Each subclass has its own. */
  readonly code: Code;
  /** The fields a request got wrong, from the `google.rpc.BadRequest` detail. */
  readonly violations: readonly FieldViolation[];

  constructor(message: string, options: ZBrainErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code ?? Code.Unknown;
    this.violations = options.violations ?? [];
  }
}

/** What a ZBrainError may carry besides its message. */
export interface ZBrainErrorOptions {
  /** The status code, for a plain ZBrainError (subclasses fix their own). */
  readonly code?: Code;
  readonly violations?: readonly FieldViolation[];
  /** The error this one stands for, such as the ConnectError of a failed call. */
  readonly cause?: unknown;
}

/** The request is malformed; `violations` names each offending field. */
export class InvalidArgumentError extends ZBrainError {
  override readonly code = Code.InvalidArgument;
}

/** The job, artifact or other object does not exist (or is not yours). */
export class NotFoundError extends ZBrainError {
  override readonly code = Code.NotFound;
}

/** Something with the same identity exists already. */
export class AlreadyExistsError extends ZBrainError {
  override readonly code = Code.AlreadyExists;
}

/** The object is not in a state that allows the operation (for a worker: the lease is stale). */
export class FailedPreconditionError extends ZBrainError {
  override readonly code = Code.FailedPrecondition;
}

/** A sequence number or position is outside what is retained. */
export class OutOfRangeError extends ZBrainError {
  override readonly code = Code.OutOfRange;
}

/** A limit or quota was reached; the message names it. */
export class ResourceExhaustedError extends ZBrainError {
  override readonly code = Code.ResourceExhausted;
}

/** The call carried no valid token (none, unknown, or revoked). */
export class UnauthenticatedError extends ZBrainError {
  override readonly code = Code.Unauthenticated;
}

/** The token is valid but its role or organisation may not do this. */
export class PermissionDeniedError extends ZBrainError {
  override readonly code = Code.PermissionDenied;
}

/** The server cannot be reached or is shutting down; retrying later may help. */
export class UnavailableError extends ZBrainError {
  override readonly code = Code.Unavailable;
}

/** The call, or a wait, did not finish within its time limit. */
export class DeadlineExceededError extends ZBrainError {
  override readonly code = Code.DeadlineExceeded;
}

/** The call was canceled before it finished (for example by the caller's AbortSignal). */
export class CanceledError extends ZBrainError {
  override readonly code = Code.Canceled;
}

/** The server failed (for example its store); nothing was half-written. */
export class InternalError extends ZBrainError {
  override readonly code = Code.Internal;
}

const ERRORS_BY_CODE: ReadonlyMap<Code, typeof ZBrainError> = new Map<Code, typeof ZBrainError>([
  [Code.InvalidArgument, InvalidArgumentError],
  [Code.NotFound, NotFoundError],
  [Code.AlreadyExists, AlreadyExistsError],
  [Code.FailedPrecondition, FailedPreconditionError],
  [Code.OutOfRange, OutOfRangeError],
  [Code.ResourceExhausted, ResourceExhaustedError],
  [Code.Unauthenticated, UnauthenticatedError],
  [Code.PermissionDenied, PermissionDeniedError],
  [Code.Unavailable, UnavailableError],
  [Code.DeadlineExceeded, DeadlineExceededError],
  [Code.Canceled, CanceledError],
  [Code.Internal, InternalError],
]);

/**
 * The ZBrainError a failed call stands for: the class of its status code, the
 * server's message, and the field violations of its BadRequest details. The
 * ConnectError is kept as `cause`. A connection that could not be made or
 * broke is UnavailableError, as gRPC reports it (Connect-ES reports some as
 * INTERNAL, ABORTED or CANCELED), with advice naming `server`. `signal` is
 * the caller's own, whose abort alone makes a CanceledError.
 */
export function errorFromCall(reason: unknown, server: string, signal?: AbortSignal): ZBrainError {
  if (reason instanceof ZBrainError) {
    return reason;
  }
  const error = ConnectError.from(reason);
  const advice = connectionAdvice(error, server, signal);
  if (advice !== undefined) {
    return new UnavailableError(advice, { cause: error });
  }
  const violations = error
    .findDetails(BadRequestSchema)
    .flatMap((detail) => detail.fieldViolations.map(({ field, description }) => ({ field, description })));
  const kind = ERRORS_BY_CODE.get(error.code) ?? ZBrainError;
  return new kind(error.rawMessage || Code[error.code], { code: error.code, violations, cause: error });
}

/** Node's error codes for a server that cannot be reached. */
const UNREACHABLE = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH"]);
/** Node's error codes for a connection the server closed. */
const CLOSED = new Set(["ECONNRESET", "EPIPE"]);
/** Node's error codes for a TLS handshake that failed (OpenSSL's, and Node's own). */
const TLS_FAILURE = /^(ERR_SSL_|ERR_TLS_|EPROTO$)|CERT|SELF_SIGNED|UNABLE_TO_/;

/** What to tell a person whose call failed to connect, or undefined when it did connect. */
function connectionAdvice(error: ConnectError, server: string, signal: AbortSignal | undefined): string | undefined {
  const codes = causes(error).flatMap((cause) =>
    "code" in cause && typeof cause.code === "string" ? [cause.code] : [],
  );
  const details = error.rawMessage.trim();
  if (codes.some((code) => TLS_FAILURE.test(code))) {
    return (
      `TLS with the ZBrain server at ${server} failed (${details}); check tls.ca (the CA that ` +
      "signed the server's certificate, or ZBRAIN_TLS_CA) and, for mutual TLS, tls.cert and tls.key, " +
      "or whether the server serves TLS at all"
    );
  }
  if (codes.some((code) => UNREACHABLE.has(code))) {
    return `cannot reach the ZBrain server at ${server} (${details}); is \`zbrain serve\` running there?`;
  }
  // A stream canceled that the caller did not cancel was cut with its connection.
  const cut = error.code === Code.Canceled && !signal?.aborted;
  if (cut || codes.some((code) => CLOSED.has(code))) {
    return (
      `the ZBrain server at ${server} closed the connection (${details}); if it serves TLS, ` +
      "give tls (tls.ca for its CA), and for mutual TLS a client certificate it trusts"
    );
  }
  if (error.code === Code.Unavailable) {
    return `the ZBrain server at ${server} is unavailable (${details || "no reason given"}); retrying later may help`;
  }
  return undefined;
}

/** The error and its causes, outermost first. */
function causes(error: Error): Error[] {
  const chain: Error[] = [];
  for (let cause: unknown = error; cause instanceof Error && !chain.includes(cause); cause = cause.cause) {
    chain.push(cause);
  }
  return chain;
}

/** A message field the server always sets; its absence is a server bug worth naming. */
export function required<T>(value: T | undefined, rpc: string, what = "job"): T {
  if (value === undefined) {
    throw new InternalError(`the server's ${rpc} answer carried no ${what}`);
  }
  return value;
}
