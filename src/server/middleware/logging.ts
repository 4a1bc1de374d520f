import { randomUUID } from "node:crypto";
import { Status, type CallContext, type ServerMiddleware, ServerError } from "nice-grpc-common";
import { isAbortError } from "abort-controller-x";
import type { Logger } from "../../logging/logger.js";
import { annotateCall } from "../../observability/call-scope.js";

/** What the logging middleware adds to every call context. */
export interface RequestContext {
  /** The caller's `x-request-id` when it sent a sane one, otherwise a new UUID. */
  requestId: string;
  /** A logger whose lines carry the request id and method. */
  log: Logger;
}

const REQUEST_ID = /^[\w.:-]{1,128}$/;

/**
 * Gives each call a request id (echoed in the `x-request-id` response header) and writes one
 * JSON line per call with its method, status code and duration. Health checks log at debug.
 * Every line of the call carries its request id, and its trace id when it is traced.
 */
export function loggingMiddleware(logger: Logger): ServerMiddleware<RequestContext> {
  return async function* (call, context: CallContext) {
    const sent = context.metadata.get("x-request-id");
    const requestId = sent && REQUEST_ID.test(sent) ? sent : randomUUID();
    const method = call.method.path;
    // A traced call (see observe.ts) names its trace on every line, to find its spans.
    const traceId = (context as CallContext & { traceId?: string }).traceId;
    const log = logger.child(traceId ? { requestId, traceId, method } : { requestId, method });
    context.header.set("x-request-id", requestId);
    // Lines the services write during the call carry the request id too (when calls are observed).
    annotateCall({ requestId });
    const started = performance.now();
    let code = Status.OK;
    try {
      return yield* call.next(call.request, { ...context, requestId, log });
    } catch (err) {
      code = err instanceof ServerError ? err.code : isAbortError(err) ? Status.CANCELLED : Status.UNKNOWN;
      throw err;
    } finally {
      const fields = { code: Status[code], ms: Math.round((performance.now() - started) * 10) / 10, peer: context.peer };
      if (method.startsWith("/grpc.health.") || method.startsWith("/grpc.reflection.")) log.debug("call", fields);
      else if (code === Status.INTERNAL || code === Status.UNKNOWN) log.error("call", fields);
      else log.info("call", fields);
    }
  };
}
