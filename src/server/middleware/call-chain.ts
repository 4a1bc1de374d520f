import { Status, type CallContext, type ServerMiddleware, type ServerMiddlewareCall } from "nice-grpc-common";
import type { AppCallContext } from "../context.js";
import type { CallerResolver } from "./caller.js";
import { takeDeadline } from "./deadline.js";
import { toServerError } from "./errors.js";
import type { Lifecycle } from "./lifecycle.js";
import { thrownCode, type CallLogging } from "./logging.js";
import type { HeldUpload } from "./uploads.js";

/** The steps of the server's call chain, each also available as a middleware of its own. */
export interface CallChainSteps {
  /** The call's log line (callLogging). */
  logging: Pick<CallLogging, "open">;
  /** Readiness, draining and abort on shutdown (Lifecycle.middleware). */
  lifecycle: Lifecycle;
  /** Which account the call acts as (callerMiddleware). */
  resolveCaller: CallerResolver;
  /** Holds upload bytes in the process-wide budget (uploadBudgetMiddleware); absent: no budget. */
  holdUpload?: (path: string, requestStream: boolean, request: unknown, metadata: CallContext["metadata"]) => HeldUpload;
  /** Refuses request text PostgreSQL cannot store (textInputMiddleware). */
  checkText: (path: string, request: unknown) => void;
}

/**
 * The server's middleware between observation and the handlers, as one layer: logging,
 * lifecycle, deadline, error mapping, caller, upload budget and the text check, in that order
 * (outermost first), each doing what its own middleware does. Every layer of nice-grpc
 * middleware is an async generator that each call steps through (for a unary call, several
 * promises and a context copy per layer), so the steps share one: a call costs the same
 * whatever it is, and behaves exactly as under the chain of single middlewares.
 */
export function callChain(steps: CallChainSteps): ServerMiddleware<Omit<AppCallContext, keyof CallContext>> {
  const { logging, lifecycle, resolveCaller, holdUpload, checkText } = steps;
  return async function* <Req, Res>(
    call: ServerMiddlewareCall<Req, Res, Omit<AppCallContext, keyof CallContext>>,
    context: CallContext,
  ): AsyncGenerator<Res, Res | void, undefined> {
    const path = call.method.path;
    const deadline = takeDeadline(context);
    const line = logging.open(path, context, deadline);
    let code = Status.OK;
    try {
      const admitted = lifecycle.admit(path, context.signal);
      try {
        const inner: AppCallContext = {
          ...context,
          requestId: line.requestId,
          log: line.log,
          // Made on first use (see Lifecycle.admit): most handlers never look at it.
          get signal() {
            return admitted.signal;
          },
          abortOnTerminate: admitted.abortOnTerminate,
          deadline,
          caller: undefined!,
          charge: undefined!,
        };
        try {
          const { caller, charge } = await resolveCaller(path, inner);
          inner.caller = caller;
          inner.charge = charge;
          const held = holdUpload?.(path, call.requestStream, call.request, context.metadata);
          try {
            if (!call.requestStream) checkText(path, call.request);
            return yield* call.next((held ? held.request : call.request) as Req, inner);
          } finally {
            held?.release();
          }
        } catch (err) {
          throw toServerError(err, inner);
        }
      } finally {
        admitted.leave();
      }
    } catch (err) {
      code = thrownCode(err);
      throw err;
    } finally {
      line.close(code);
    }
  };
}
