import type { Deadline, Metadata as GrpcMetadata } from "@grpc/grpc-js";
import type { CallContext, Metadata, ServerMiddleware } from "nice-grpc-common";

/**
 * grpc-js strips the `grpc-timeout` header before handlers see the metadata and nice-grpc
 * does not expose the call's deadline. The server's interceptor (see callLogging) copies the
 * parsed deadline into an internal metadata key (overwriting anything a client sent under that
 * name) with markDeadline, so the deadline middleware can hand it to services.
 */
const DEADLINE_KEY = "x-glimpse-internal-deadline";

/** The interceptor's part: names a gRPC call's deadline (grpc-js's parse of `grpc-timeout`), if any. */
export function markDeadline(metadata: GrpcMetadata, deadline: Deadline): void {
  metadata.remove(DEADLINE_KEY);
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  if (Number.isFinite(ms)) metadata.set(DEADLINE_KEY, String(ms));
}

/**
 * Does the interceptor's part for a call made in-process (the HTTP bridge's): names its
 * deadline, if any, under the internal key, dropping whatever the metadata held there.
 */
export function setCallDeadline(metadata: Metadata, deadline: Date | undefined): void {
  metadata.delete(DEADLINE_KEY);
  if (deadline !== undefined && Number.isFinite(deadline.getTime())) metadata.set(DEADLINE_KEY, String(deadline.getTime()));
}

/** What the deadline middleware adds to every call context. */
export interface DeadlineContext {
  /** When the caller stops waiting; `undefined` when the caller set no deadline. */
  deadline: Date | undefined;
}

/**
 * Exposes the caller's deadline, so services can pass what is left of it to Postgres and to
 * providers. The call's AbortSignal already fires when the deadline passes (grpc-js cancels
 * the call), so anything that honours the signal stops in time.
 */
export const deadlineMiddleware: ServerMiddleware<DeadlineContext> = async function* (call, context: CallContext) {
  return yield* call.next(call.request, { ...context, deadline: takeDeadline(context) });
};

/** The deadline middleware's work without a layer of its own: the call's deadline, its key dropped from the metadata. */
export function takeDeadline(context: CallContext): Date | undefined {
  const deadline = callDeadline(context);
  context.metadata.delete(DEADLINE_KEY);
  return deadline;
}

/**
 * The caller's deadline, for middleware that runs before the deadline middleware (logging,
 * to tell a deadline from a cancellation); `undefined` when the caller set none.
 */
export function callDeadline(context: CallContext): Date | undefined {
  const raw = context.metadata.get(DEADLINE_KEY);
  return raw === undefined ? undefined : new Date(Number(raw));
}

