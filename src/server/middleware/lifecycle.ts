import {
  Status,
  ServerError,
  type CallContext,
  type ServerMiddleware,
  type ServerMiddlewareCall,
} from "nice-grpc-common";

/** Where the server is in its life: calls are refused before `serving` and after `draining`. */
export type Phase = "starting" | "serving" | "draining";

/** What the lifecycle middleware adds to every call context. */
export interface LifecycleContext {
  /**
   * Marks the call as one that never ends by itself (a watch, a long stream): shutdown aborts
   * it at once instead of waiting out the grace period for it.
   */
  abortOnTerminate(): void;
}

/** A call the lifecycle let in: its signal, and what it must do when it ends. */
export interface AdmittedCall {
  /** Aborts when the call's own signal does, or when shutdown cuts the call; made when first read. */
  readonly signal: AbortSignal;
  abortOnTerminate(): void;
  /** The call has ended (its handler returned or threw). */
  leave(): void;
}

/** The abort reason of calls cut short by shutdown; they end UNAVAILABLE so clients retry elsewhere. */
export class ServerShutdown extends Error {
  constructor() {
    super("server shutting down");
    this.name = "ServerShutdown";
  }
}

/** Always answered, whatever the phase: orchestrators probe them during start and drain. */
const ALWAYS_OPEN = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/**
 * Tracks the server's phase and its in-flight calls. The middleware refuses work until the
 * store is ready and once draining has begun, and lets shutdown abort every call still running
 * when the grace period ends.
 */
export class Lifecycle {
  phase: Phase = "starting";
  private readonly calls = new Set<InFlightCall>();
  private readonly endless = new Set<InFlightCall>();
  private idle: (() => void) | undefined;

  readonly middleware: ServerMiddleware<LifecycleContext> = (call, context: CallContext) =>
    this.run(call, context);

  private async *run<Req, Res>(
    call: ServerMiddlewareCall<Req, Res, LifecycleContext>,
    context: CallContext,
  ): AsyncGenerator<Res, Res | void, undefined> {
    const admitted = this.admit(call.method.path, context.signal);
    try {
      return yield* call.next(call.request, { ...context, signal: admitted.signal, abortOnTerminate: admitted.abortOnTerminate });
    } finally {
      admitted.leave();
    }
  }

  /**
   * The middleware's work without a middleware layer of its own (see call-chain.ts): refuses
   * the call (UNAVAILABLE) outside `serving`, unless it is a probe, and otherwise answers the
   * signal the call's handler gets, which also aborts on shutdown. `leave` must follow, once.
   */
  admit(path: string, callSignal: AbortSignal): AdmittedCall {
    if (this.phase !== "serving" && !ALWAYS_OPEN.some((prefix) => path.startsWith(prefix))) {
      const why = this.phase === "starting" ? "glimpse is starting" : "glimpse is shutting down";
      throw new ServerError(Status.UNAVAILABLE, `${why}; retry shortly`);
    }
    const call = new InFlightCall(this.tracker, callSignal);
    this.calls.add(call);
    return call;
  }

  /** What the calls it let in tell it. */
  private readonly tracker: CallTracker = {
    endless: (call) => {
      if (this.phase === "draining") call.abort(undefined);
      else this.endless.add(call);
    },
    left: (call) => {
      this.calls.delete(call);
      this.endless.delete(call);
      if (this.calls.size === 0) this.idle?.();
    },
  };

  /** Number of calls currently running. */
  get inFlight(): number {
    return this.calls.size;
  }

  /**
   * Stops taking calls, aborts endless ones, waits up to `graceMs` for the rest, then aborts
   * whatever is left. Resolves once every call has returned.
   */
  async drain(graceMs: number): Promise<{ aborted: number }> {
    this.phase = "draining";
    for (const c of this.endless) c.abort(new ServerShutdown());
    if (this.calls.size === 0) return { aborted: 0 };
    const idle = new Promise<void>((resolve) => (this.idle = resolve));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs)));
    const late = await Promise.race([idle.then(() => false), timedOut]);
    clearTimeout(timer);
    if (!late) return { aborted: 0 };
    const aborted = this.calls.size;
    for (const c of this.calls) c.abort(new ServerShutdown());
    // Handlers that honour their signal return at once; do not hang on one that does not.
    await Promise.race([idle, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    return { aborted };
  }
}

/** How a call tells its lifecycle that it never ends by itself, and that it has ended. */
interface CallTracker {
  endless(call: InFlightCall): void;
  left(call: InFlightCall): void;
}

/**
 * A call the lifecycle let in. Its signal (aborted by the call's own signal or by shutdown,
 * whichever comes first, with that one's reason) is made only when something asks for it:
 * most calls never look, and an AbortController with a listener on the call's signal costs
 * every call that makes one.
 */
class InFlightCall implements AdmittedCall {
  private controller: AbortController | undefined;
  private onCallAbort: (() => void) | undefined;
  /** Shutdown aborted the call, before its signal was made and before the call's own signal did. */
  private shutdown: { reason: unknown } | undefined;

  /** Called by handlers through their context, so bound to the call. */
  readonly abortOnTerminate: () => void;

  constructor(
    private readonly tracker: CallTracker,
    private readonly callSignal: AbortSignal,
  ) {
    // Assigned here rather than as a field: tsx (esbuild's keepNames) would name a field's
    // arrow with Object.defineProperty on every call.
    this.abortOnTerminate = () => tracker.endless(this);
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      const controller = new AbortController();
      this.controller = controller;
      const callSignal = this.callSignal;
      if (this.shutdown !== undefined) controller.abort(this.shutdown.reason);
      else if (callSignal.aborted) controller.abort(callSignal.reason);
      else {
        this.onCallAbort = () => controller.abort(callSignal.reason);
        callSignal.addEventListener("abort", this.onCallAbort, { once: true });
      }
    }
    return this.controller.signal;
  }


  /** Aborts the call's signal (now, or as it is made) unless it was aborted already. */
  abort(reason: unknown): void {
    if (this.controller !== undefined) this.controller.abort(reason);
    else if (this.shutdown === undefined && !this.callSignal.aborted) this.shutdown = { reason };
  }

  leave(): void {
    if (this.onCallAbort !== undefined) this.callSignal.removeEventListener("abort", this.onCallAbort);
    this.tracker.left(this);
  }
}
