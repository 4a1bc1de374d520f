import { isAbortError } from "abort-controller-x";
import { Status, ServerError, type CallContext, type ServerMiddleware } from "nice-grpc-common";
import { DomainError, type ErrorCode } from "../../errors.js";
import type { RequestContext } from "./logging.js";
import { ServerShutdown } from "./lifecycle.js";
import { encodeStatusDetails } from "../status-details.js";

/** Trailer key under which gRPC carries a serialised google.rpc.Status with typed details. */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

const codes: Record<ErrorCode, Status> = {
  INVALID_ARGUMENT: Status.INVALID_ARGUMENT,
  NOT_FOUND: Status.NOT_FOUND,
  ALREADY_EXISTS: Status.ALREADY_EXISTS,
  PERMISSION_DENIED: Status.PERMISSION_DENIED,
  UNAUTHENTICATED: Status.UNAUTHENTICATED,
  RESOURCE_EXHAUSTED: Status.RESOURCE_EXHAUSTED,
  FAILED_PRECONDITION: Status.FAILED_PRECONDITION,
  ABORTED: Status.ABORTED,
  CANCELLED: Status.CANCELLED,
  DEADLINE_EXCEEDED: Status.DEADLINE_EXCEEDED,
  UNIMPLEMENTED: Status.UNIMPLEMENTED,
  UNAVAILABLE: Status.UNAVAILABLE,
  INTERNAL: Status.INTERNAL,
};

/** Error codes of Node sockets and of postgres.js that mean "the database is unreachable". */
const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "57P01", // admin_shutdown
  "57P03", // cannot_connect_now
  "53300", // too_many_connections
  "40P01", // deadlock_detected (after the transaction's own retries)
  "40001", // serialization_failure (likewise)
]);

/** The status a caller sees for an error, and the domain error whose details it carries. */
export interface CallerStatus {
  code: Status;
  message: string;
  domain?: DomainError;
}

type ErrorContext = CallContext & RequestContext & { deadline?: Date };

/**
 * Maps any thrown value to the status a caller sees. Domain errors keep their code, message and
 * details; aborts become CANCELLED (DEADLINE_EXCEEDED once the deadline passed, UNAVAILABLE when
 * shutdown cut the call); a lost database becomes UNAVAILABLE; anything else is INTERNAL with a
 * generic message while the cause goes to the log.
 */
export function toStatus(err: unknown, context: ErrorContext): CallerStatus {
  if (err instanceof ServerError) return { code: err.code, message: err.details };
  if (err instanceof DomainError) {
    const code = codes[err.code];
    if (code === Status.INTERNAL) context.log.error("internal error", { error: err });
    return { code, message: err.message, domain: err };
  }
  if (isAbortError(err) || context.signal.aborted) {
    if (context.signal.reason instanceof ServerShutdown) {
      return { code: Status.UNAVAILABLE, message: "the server shut down before the call finished; retry" };
    }
    if (context.deadline && context.deadline.getTime() <= Date.now()) {
      return { code: Status.DEADLINE_EXCEEDED, message: "deadline exceeded" };
    }
    return { code: Status.CANCELLED, message: "the call was cancelled" };
  }
  const sysCode = (err as { code?: unknown } | null)?.code;
  if (typeof sysCode === "string" && UNREACHABLE.has(sysCode)) {
    context.log.error("store unavailable", { error: err });
    return { code: Status.UNAVAILABLE, message: "the store is unavailable; retry later" };
  }
  context.log.error("unhandled error", { error: err });
  return { code: Status.INTERNAL, message: `internal error (request id ${context.requestId})` };
}

/** {@link toStatus} as a ServerError, with typed details in the `grpc-status-details-bin` trailer. */
export function toServerError(err: unknown, context: ErrorContext): ServerError {
  if (err instanceof ServerError) return err;
  const status = toStatus(err, context);
  const domain = status.domain;
  if (domain && (domain.violations.length > 0 || domain.retryAfterMs !== undefined)) {
    context.trailer.set(STATUS_DETAILS_KEY, encodeStatusDetails(status.code, status.message, domain));
  }
  return new ServerError(status.code, status.message);
}

/** Middleware form of {@link toServerError}; attach it inside the logging middleware. */
export const errorMiddleware: ServerMiddleware<{}, RequestContext & { deadline?: Date }> = async function* (
  call,
  context,
) {
  try {
    return yield* call.next(call.request, context);
  } catch (err) {
    throw toServerError(err, context);
  }
};
