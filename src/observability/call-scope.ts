import { AsyncLocalStorage } from "node:async_hooks";
import { ROOT_CONTEXT, SpanStatusCode, trace, type Span, type Tracer } from "@opentelemetry/api";

/** What one call records about where its time went; shared by its stages. */
export interface CallRecord {
  /** Milliseconds spent in each named stage, not counting the stages nested in it. */
  readonly stages: Map<string, number>;
  /** Receives each finished stage (the metrics), or nothing. */
  readonly onStage?: (stage: string, seconds: number) => void;
  /** Receives each finished search with its planner path (the metrics), or nothing. */
  readonly onSearch?: (plan: string, seconds: number) => void;
  /** Starts spans for the stages and queries of this call, or nothing when tracing is off. */
  readonly tracer?: Tracer;
  /** Fields every log line written during the call carries (its request id, its trace id). */
  logFields?: Record<string, unknown>;
}

/** The call, and the stage (or the call's own span) that code now running belongs to. */
interface Frame {
  call: CallRecord;
  /** The span new child spans hang under. */
  span?: Span;
  /** Milliseconds of stages nested in this one so far (subtracted from its own time). */
  nestedMs: number;
}

const frames = new AsyncLocalStorage<Frame>();

/** A call's own frame (its record and span), made once per call; see {@link runInCall}. */
export type CallFrame = Readonly<Pick<Frame, "call" | "span">>;

/** The frame of a call, under `span` when it is traced. */
export function callFrame(call: CallRecord, span: Span | undefined): CallFrame {
  const frame: Frame = { call, span, nestedMs: 0 };
  return frame;
}

/**
 * Runs `step(...args)` (one step of a call's handler chain) as part of the call: the
 * observing middleware runs each step of the chain's generator so, and the handler and
 * everything it awaits see the call (AsyncLocalStorage follows promises). Code outside any
 * call (the indexer, snapshots, start-up) runs with no frame, and then every stage below is a
 * plain function call.
 */
export function runInCall<T, A extends unknown[]>(frame: CallFrame, step: (...args: A) => T, ...args: A): T {
  // The call's own frame counts no time of its own: only stages read nestedMs (see leave).
  return frames.run(frame as Frame, step, ...args);
}

/**
 * Runs `work` outside any call: background work a call only sets off (an indexing round, a
 * snapshot) must not count toward its stages, hang its queries under its span, or put its
 * request id on the background work's log lines.
 */
export function detached<T>(work: () => T): T {
  return frames.exit(work);
}

/** The span code now running hangs under (the call's, or a stage's), if the call is traced. */
export function activeSpan(): { span: Span; tracer: Tracer } | undefined {
  const frame = frames.getStore();
  if (frame?.span === undefined || frame.call.tracer === undefined) return undefined;
  return { span: frame.span, tracer: frame.call.tracer };
}

/** Adds fields to every log line written from now on in the call now running (none outside a call). */
export function annotateCall(fields: Record<string, unknown>): void {
  const call = frames.getStore()?.call;
  if (call !== undefined) call.logFields = { ...call.logFields, ...fields };
}

/** The fields of the call now running that log lines carry, if any. */
export function callLogFields(): Record<string, unknown> | undefined {
  return frames.getStore()?.call.logFields;
}

/**
 * Reports a finished search of the current call: its planner path and its time since
 * `startedAt` (a performance.now() reading). Outside a call it does nothing.
 */
export function searched(plan: string, startedAt: number): void {
  const frame = frames.getStore();
  if (frame === undefined) return;
  frame.call.onSearch?.(plan, (performance.now() - startedAt) / 1000);
  frame.span?.setAttribute("glimpse.search.plan", plan);
}

/**
 * Reports the time of a graph walk of the current call's search (timed on the thread that ran
 * it), observed as the `walk` stage. It is part of the `rank` stage, so it is not subtracted
 * from it nor counted among the call's stages. Outside a call it does nothing.
 */
export function walked(ms: number): void {
  frames.getStore()?.call.onStage?.("walk", ms / 1000);
}

/** Milliseconds per stage of the call now running (empty outside a call). */
export function currentStages(): ReadonlyMap<string, number> {
  return frames.getStore()?.call.stages ?? new Map();
}

/**
 * Runs `work` as the named stage of the current call: its time counts toward the stage (less
 * the stages nested in it), is observed by the call's metrics, and gets a span of its own
 * when the call is traced. Outside a call it is just `work()`.
 */
export function stage<T>(name: string, work: () => Promise<T>): Promise<T> {
  const parent = frames.getStore();
  if (parent === undefined) return work();
  const { frame, started } = enter(parent, name);
  return frames.run(frame, work).then(
    (value) => {
      leave(parent, frame, name, started);
      return value;
    },
    (error: unknown) => {
      leave(parent, frame, name, started, error);
      throw error;
    },
  );
}

/** {@link stage} for synchronous work. */
export function stageSync<T>(name: string, work: () => T): T {
  const parent = frames.getStore();
  if (parent === undefined) return work();
  const { frame, started } = enter(parent, name);
  let value: T;
  try {
    value = frames.run(frame, work);
  } catch (error) {
    leave(parent, frame, name, started, error);
    throw error;
  }
  leave(parent, frame, name, started);
  return value;
}

function enter(parent: Frame, name: string): { frame: Frame; started: number } {
  const { tracer } = parent.call;
  const span =
    tracer && parent.span ? tracer.startSpan(name, undefined, trace.setSpan(ROOT_CONTEXT, parent.span)) : undefined;
  return { frame: { call: parent.call, span, nestedMs: 0 }, started: performance.now() };
}

function leave(parent: Frame, frame: Frame, name: string, started: number, error?: unknown): void {
  const ms = performance.now() - started;
  const own = Math.max(0, ms - frame.nestedMs);
  parent.nestedMs += ms;
  const { stages, onStage } = parent.call;
  stages.set(name, (stages.get(name) ?? 0) + own);
  onStage?.(name, own / 1000);
  if (frame.span) {
    if (error !== undefined) endWithError(frame.span, error);
    frame.span.end();
  }
}

/** Marks a span failed with the error's name and message (never its cause's details). */
export function endWithError(span: Span, error: unknown): void {
  const message = error instanceof Error ? error.message : String(error);
  span.setStatus({ code: SpanStatusCode.ERROR, message });
  if (error instanceof Error) span.recordException({ name: error.name, message: error.message });
}
