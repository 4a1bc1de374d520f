import { randomUUID } from "node:crypto";
import http2 from "node:http2";
import { ServerInterceptingCall, type ServerInterceptingCallInterface, type ServerInterceptor } from "@grpc/grpc-js";
import { Status, type CallContext, type Metadata, type ServerMiddleware, ServerError } from "nice-grpc-common";
import { isAbortError } from "abort-controller-x";
import type { Logger } from "../../logging/logger.js";
import { annotateCall } from "../../observability/call-scope.js";
import { callDeadline, markDeadline } from "./deadline.js";
import { niceMetadata, refusalStatus, UPLOAD_METHODS, type UploadAdmission } from "./uploads.js";

/** What the logging middleware adds to every call context. */
export interface RequestContext {
  /** The caller's `x-request-id` when it sent a sane one, otherwise a new UUID. */
  requestId: string;
  /** A logger whose lines carry the request id and method. */
  log: Logger;
}

const REQUEST_ID = /^[\w.:-]{1,128}$/;

/**
 * Internal metadata key under which the interceptor of `callLogging` hands a call's id to the
 * middleware (overwriting anything a client sent under that name).
 */
const CALL_KEY = "x-glimpse-internal-call";

/** What the interceptor knows of one call, shared with the middleware that takes it. */
interface CallState {
  /** The middleware took the call: the line is its to write. */
  taken: boolean;
  /** The middleware's line, waiting for the call's end (set when the handler ended first). */
  line?: { write(unanswered: Status | undefined): void };
  /** The call has ended; `unanswered` is how, when it ended before an answer was sent. */
  ended?: { unanswered: Status | undefined };
}

/** The calls an interceptor follows, by the id it gave them. */
type CallStates = Map<string, CallState>;

/**
 * One log line for every call, with the code the client got:
 * - calls that end before any middleware sees them: grpc-js answers DEADLINE_EXCEEDED itself
 *   when the deadline passes before the handler starts (one already past on arrival), an
 *   interceptor may refuse a call (an upload over the memory budget), a client may cancel
 *   first. The interceptor logs those (`handled: false`).
 * - a call the client cancels, a stream it stops reading included, is CANCELLED
 *   (DEADLINE_EXCEEDED once its deadline passed) even when its handler ends without an error:
 *   the middleware's line waits for the call's end, which the interceptor reports.
 * The interceptor is the server's only one (nearest the transport), to see every end; it
 * also does the deadline middleware's part (see markDeadline) and, given `admission`, refuses
 * upload calls from their headers before their message is read (see uploads.ts): one
 * intercepting layer per call rather than one for each job.
 * Calls made in-process (the HTTP bridge's, see in-process.ts) pass no interceptor: `follow`
 * does its part for them, so their lines are the same.
 */
export function callLogging(logger: Logger, admission?: UploadAdmission): CallLogging {
  const calls: CallStates = new Map();
  let count = 0;
  /** Starts following a call: the returned `end` reports how it ended, once. */
  const track = (method: string) => {
    const id = String(++count);
    const started = performance.now();
    const state: CallState = { taken: false };
    calls.set(id, state);
    // Functions made per call are methods, not arrows bound to a name: tsx (esbuild's
    // keepNames) would give each arrow its name with Object.defineProperty, on every call.
    return {
      id,
      end(how: CallEnd) {
        if (state.ended) return;
        calls.delete(id);
        state.ended = { unanswered: how.unanswered };
        if (state.line) {
          state.line.write(how.unanswered);
        } else if (!state.taken) {
          logger.child({ requestId: how.requestId ?? randomUUID(), method }).info("call", {
            code: Status[how.unanswered ?? how.answered ?? Status.UNKNOWN],
            ms: Math.round((performance.now() - started) * 10) / 10,
            peer: how.peer,
            handled: false,
          });
        }
      },
    };
  };
  const interceptor: ServerInterceptor = (method, call) => {
    const path = method.path;
    const { id, end } = track(path);
    const checked = admission !== undefined && UPLOAD_METHODS.has(path);
    let requestId: string | undefined;
    let answered: Status | undefined;
    let ended = false;
    return new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, forward) {
            requestId = saneRequestId(metadata.get("x-request-id")[0]);
            metadata.set(CALL_KEY, id);
            markDeadline(metadata, call.getDeadline());
            if (!checked) return forward(metadata);
            const checking = admission(path, niceMetadata(metadata), call.getPeer());
            if (!checking) return forward(metadata);
            void checking.then((refusal) => {
              if (!refusal) return forward(metadata);
              if (!ended) answered ??= refusal.code;
              call.sendStatus(refusalStatus(refusal));
            });
          },
          // grpc-js calls this when any call ends, answered or not.
          onCancel() {
            if (ended) return;
            ended = true;
            const deadline = Number(call.getDeadline());
            // A stream the client reset got no status, whatever the handler handed over last.
            const unanswered =
              answered !== undefined && !streamReset(call)
                ? undefined
                : deadline <= Date.now()
                  ? Status.DEADLINE_EXCEEDED
                  : Status.CANCELLED;
            end({ unanswered, answered, requestId, peer: call.getPeer() });
          },
        });
      },
      sendStatus(status, next) {
        // A status after the end (a handler finishing a cancelled call) reaches nobody.
        if (!ended) answered ??= status.code as number as Status;
        next(status);
      },
    });
  };
  return {
    interceptor,
    middleware: loggingMiddleware(logger, calls),
    open: (method, context, deadline) => openCallLine(logger, calls, method, context, deadline),
    follow(method, metadata) {
      const { id, end } = track(method);
      metadata.set(CALL_KEY, id);
      return end;
    },
  };
}

/** How a followed call ended, for its log line. */
export interface CallEnd {
  /** Set when the call ended before an answer reached the caller (it went away, its deadline passed). */
  unanswered?: Status;
  /** The status the caller got, for a call no middleware took (refused before the chain). */
  answered?: Status;
  /** The caller's sane `x-request-id`, if it sent one. */
  requestId?: string;
  peer: string;
}

/** Call logging: the interceptor and middleware of a gRPC server, and the same for in-process calls. */
export interface CallLogging {
  /** The gRPC server's interceptor: logging, the deadline's hand-over and upload admission. */
  interceptor: ServerInterceptor;
  middleware: ServerMiddleware<RequestContext>;
  /** The middleware's work for a chain that does it without a layer of its own (see openCallLine). */
  open(method: string, context: CallContext, deadline: Date | undefined): CallLine;
  /**
   * Follows a call made in-process (without the interceptor): marks its metadata for the
   * middleware, and answers the function that reports its end, as the interceptor's
   * `onCancel` does for a gRPC call.
   */
  follow(method: string, metadata: Metadata): (how: CallEnd) => void;
}

/** A caller's `x-request-id` when it is sane (see REQUEST_ID), else undefined. */
function saneRequestId(sent: unknown): string | undefined {
  return typeof sent === "string" && REQUEST_ID.test(sent) ? sent : undefined;
}

/**
 * Whether the call's HTTP/2 stream closed with a reset (RST_STREAM with an error code: the
 * client cancelled), rather than after the status was written. The stream is grpc-js's base
 * call's `stream` field, a look inside grpc-js: should it go, this answers false and a
 * cancelled call that its handler finished is logged with the handler's code.
 */
function streamReset(call: ServerInterceptingCallInterface): boolean {
  const code = (call as unknown as { stream?: { rstCode?: unknown } }).stream?.rstCode;
  return typeof code === "number" && code !== http2.constants.NGHTTP2_NO_ERROR;
}

/**
 * Gives each call a request id (echoed in the `x-request-id` response header) and writes one
 * JSON line per call with its method, status code and duration. Health checks log at debug.
 * Every line of the call carries its request id, and its trace id when it is traced. With the
 * states of callLogging's interceptor, the line waits for the call's end and carries the code
 * the client got; without them, a call whose signal aborted is CANCELLED.
 */
export function loggingMiddleware(logger: Logger, calls?: CallStates): ServerMiddleware<RequestContext> {
  return async function* (call, context: CallContext) {
    const line = openCallLine(logger, calls, call.method.path, context);
    let code = Status.OK;
    try {
      return yield* call.next(call.request, { ...context, requestId: line.requestId, log: line.log });
    } catch (err) {
      code = thrownCode(err);
      throw err;
    } finally {
      line.close(code);
    }
  };
}

/** The status code a call's log line carries for what its chain threw. */
export function thrownCode(err: unknown): Status {
  return err instanceof ServerError ? err.code : isAbortError(err) ? Status.CANCELLED : Status.UNKNOWN;
}

/** One call's log line, from the start of its middleware to its end. */
export interface CallLine extends RequestContext {
  /** The chain ended with `code` (OK when it returned); the line is written now or when the call ends. */
  close(code: Status): void;
}

/**
 * The logging middleware's work without a layer of its own (see call-chain.ts): takes the
 * call from the interceptor's states, picks its request id (echoed in the `x-request-id`
 * response header) and answers its logger; `close` writes (or schedules) its line.
 * `deadline`: the call's, when the caller already read it from the metadata.
 */
export function openCallLine(
  logger: Logger,
  calls: CallStates | undefined,
  method: string,
  context: CallContext,
  deadline: Date | undefined = callDeadline(context),
): CallLine {
  const id = context.metadata.get(CALL_KEY);
  context.metadata.delete(CALL_KEY);
  const state = id === undefined ? undefined : calls?.get(id);
  if (state) state.taken = true;
  // Followed by the interceptor but already ended: it has written the line.
  const logged = id !== undefined && calls !== undefined && state === undefined;
  const sent = context.metadata.get("x-request-id");
  const requestId = sent && REQUEST_ID.test(sent) ? sent : randomUUID();
  // A traced call (see observe.ts) names its trace on every line, to find its spans.
  const traceId = (context as CallContext & { traceId?: string }).traceId;
  const log = logger.child(traceId ? { requestId, traceId, method } : { requestId, method });
  context.header.set("x-request-id", requestId);
  // Lines the services write during the call carry the request id too (when calls are observed).
  annotateCall({ requestId });
  const started = performance.now();
  // Set by close: how the chain ended, and how long it took.
  let code = Status.OK;
  let ms = 0;
  const line = {
    requestId,
    log,
    /** Writes the line, once the call's end is known (`unanswered`: it ended before its answer). */
    write(unanswered: Status | undefined) {
      const fields = { code: Status[unanswered ?? code], ms, peer: context.peer };
      if (method.startsWith("/grpc.health.") || method.startsWith("/grpc.reflection.")) log.debug("call", fields);
      else if (code === Status.INTERNAL || code === Status.UNKNOWN) log.error("call", fields);
      else log.info("call", fields);
    },
    close(closedWith: Status) {
      code = closedWith;
      ms = Math.round((performance.now() - started) * 10) / 10;
      if (logged) {
        // nothing: see above
      } else if (state?.ended) {
        line.write(state.ended.unanswered);
      } else if (state) {
        state.line = line;
      } else {
        const aborted = code === Status.OK && context.signal.aborted;
        line.write(
          !aborted ? undefined : deadline !== undefined && deadline.getTime() <= Date.now() ? Status.DEADLINE_EXCEEDED : Status.CANCELLED,
        );
      }
    },
  };
  return line;
}
