import type { CallContext } from "nice-grpc-common";
import type { CallerContext } from "./middleware/caller.js";
import type { DeadlineContext } from "./middleware/deadline.js";
import type { LifecycleContext } from "./middleware/lifecycle.js";
import type { RequestContext } from "./middleware/logging.js";

/** The call context every handler receives once the middleware chain has run. */
export type AppCallContext = CallContext & RequestContext & LifecycleContext & DeadlineContext & CallerContext;
