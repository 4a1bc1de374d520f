import type { CallContext, ServerMiddleware } from "nice-grpc-common";
import type { Caller } from "../../catalogue/types.js";

/** What the caller middleware adds to every call context. */
export interface CallerContext {
  /** The account the call acts as. */
  caller: Caller;
}

/** Decides which account a call acts as, from its metadata. */
export type CallerResolver = (context: CallContext) => Promise<Caller> | Caller;

/** The account that owns everything while API-key authentication is not configured. */
export const DEFAULT_ACCOUNT_ID = "00000000-0000-4000-8000-000000000001";

/** Every call acts as the default account (created by the first migration). */
export const defaultCaller: CallerResolver = () => ({ accountId: DEFAULT_ACCOUNT_ID, isAdmin: true });

/** Puts the resolved caller on the context, for handlers to pass to services. */
export function callerMiddleware(resolve: CallerResolver): ServerMiddleware<CallerContext> {
  return async function* (call, context) {
    const caller = await resolve(context);
    return yield* call.next(call.request, { ...context, caller });
  };
}
