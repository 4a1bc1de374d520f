import type { CallContext, ServerMiddleware } from "nice-grpc-common";
import type { Caller } from "../../catalogue/types.js";

export { DEFAULT_ACCOUNT_ID } from "../../accounts/account-service.js";

/** What the caller middleware adds to every call context. */
export interface CallerContext {
  /** The account the call acts as. */
  caller: Caller;
  /**
   * Charges the call one more rate-limit token (for each item of a stream after the first);
   * throws RESOURCE_EXHAUSTED when the caller's budget is spent.
   */
  charge: () => Promise<void>;
}

/**
 * Decides which account a call acts as, from its method path (`/package.Service/Method`) and
 * its metadata; throws (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED) to refuse it.
 */
export type CallerResolver = (
  method: string,
  context: CallContext,
) => Promise<{ caller: Caller; charge: () => Promise<void> }> | { caller: Caller; charge: () => Promise<void> };

/** The id of no account: calls made without a key act as it, so they see public images only. */
export const ANONYMOUS_ACCOUNT_ID = "00000000-0000-0000-0000-000000000000";

/** The caller of a call made without a key (anonymous reads, health, reflection). */
export const anonymousCaller: Caller = Object.freeze({ accountId: ANONYMOUS_ACCOUNT_ID, isAdmin: false });

/** Puts the resolved caller on the context, for handlers to pass to services. */
export function callerMiddleware(resolve: CallerResolver): ServerMiddleware<CallerContext> {
  return async function* (call, context) {
    const { caller, charge } = await resolve(call.method.path, context);
    return yield* call.next(call.request, { ...context, caller, charge });
  };
}
