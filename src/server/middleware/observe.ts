import { isAbortError } from "abort-controller-x";
import { SpanKind, SpanStatusCode, type Span, type Tracer } from "@opentelemetry/api";
import {
  ServerError,
  Status,
  type CallContext,
  type Metadata,
  type ServerMiddleware,
  type ServerMiddlewareCall,
} from "nice-grpc-common";
import type { Logger } from "../../logging/logger.js";
import { callFrame, runInCall, type CallRecord } from "../../observability/call-scope.js";
import type { Metrics, Transport } from "../../observability/metrics.js";
import type { Histogram } from "prom-client";
import { parentContext } from "../../observability/tracing.js";
import { UPLOAD_METHODS } from "./uploads.js";

/** What the observing middleware adds to every call context. */
export interface ObservedContext {
  /** The call's trace id, when it is traced (the logging middleware puts it on every line). */
  traceId?: string;
}

/** What the middleware observes calls with; each part is optional. */
export interface ObserveConfig {
  /** Counters and histograms of calls, and of search stages (absent: metrics off). */
  metrics?: Metrics;
  /** Spans for each call, its stages and its queries (absent: tracing off). */
  tracer?: Tracer;
  /** Calls slower than this many milliseconds get a log line naming their slowest stage; 0: none. */
  slowCallMs: number;
  logger: Logger;
  /** Whether a call was made by this process's HTTP bridge (its internal marker header). */
  bridged: (metadata: Metadata) => boolean;
}

/** Calls only infrastructure makes; they are counted but never traced or reported slow. */
const INFRASTRUCTURE = ["/grpc.health.", "/grpc.reflection."];

/** Labels of one method over one transport, worked out once. */
interface MethodLabels {
  service: string;
  method: string;
  transport: Transport;
  spanName: string;
  upload: boolean;
  infrastructure: boolean;
  /** The labelled metrics of the method (prom-client's children, looked up once). */
  meters?: MethodMeters;
}

/** One method's labelled metrics over one transport. */
interface MethodMeters {
  inFlight: ReturnType<Metrics["callsInFlight"]["labels"]>;
  seconds: ReturnType<Metrics["callSeconds"]["labels"]>;
  /** Finished calls by status code name, each child looked up on first use. */
  calls: Map<string, ReturnType<Metrics["calls"]["labels"]>>;
}

/**
 * The outermost middleware: counts each call by service, method, transport and status code,
 * times it, traces it (continuing the caller's `traceparent`) and writes the slow-call line.
 * Stages inside the call (see call-scope.ts) report into the same call record.
 */
export function observeMiddleware(config: ObserveConfig): ServerMiddleware<ObservedContext> {
  const { metrics, tracer, slowCallMs, logger } = config;
  // By transport, then by path: no key is built per call.
  const labelCache: Record<Transport, Map<string, MethodLabels>> = { grpc: new Map(), http: new Map() };
  const labelsOf = (path: string, transport: Transport): MethodLabels => {
    let labels = labelCache[transport].get(path);
    if (labels === undefined) {
      const [service = "", method = ""] = path.replace(/^\//, "").split("/");
      labels = {
        service,
        method,
        transport,
        spanName: `${service}/${method}`,
        upload: UPLOAD_METHODS.has(path),
        infrastructure: INFRASTRUCTURE.some((prefix) => path.startsWith(prefix)),
        meters: metrics && {
          inFlight: metrics.callsInFlight.labels(service, method, transport),
          seconds: metrics.callSeconds.labels(service, method, transport),
          calls: new Map(),
        },
      };
      labelCache[transport].set(path, labels);
    }
    return labels;
  };
  const onStage = metrics ? observerOf(metrics.searchStageSeconds) : undefined;
  const onSearch = metrics ? observerOf(metrics.searchSeconds) : undefined;

  return async function* <Request, Response>(
    call: ServerMiddlewareCall<Request, Response, ObservedContext>,
    context: CallContext,
  ): AsyncGenerator<Response, Response | void, undefined> {
    const path = call.method.path;
    const labels = labelsOf(path, config.bridged(context.metadata) ? "http" : "grpc");
    const { service, method, transport } = labels;
    let span: Span | undefined;
    if (tracer && !labels.infrastructure) {
      const traceparent = context.metadata.get("traceparent");
      span = tracer.startSpan(
        labels.spanName,
        {
          kind: SpanKind.SERVER,
          attributes: { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method, "glimpse.transport": transport },
        },
        parentContext(typeof traceparent === "string" ? traceparent : undefined),
      );
    }
    const traceId = span?.spanContext().traceId;
    const record: CallRecord = {
      stages: new Map(),
      onStage,
      onSearch,
      tracer: span ? tracer : undefined,
      logFields: traceId ? { traceId } : undefined,
    };
    const started = performance.now();
    const meters = labels.meters;
    meters?.inFlight.inc();
    if (labels.upload) metrics?.uploadsInFlight.inc();
    let code = Status.OK;
    let failure: unknown;
    try {
      // Every step of the chain runs inside the call's frame (see runInCall), stepped here
      // rather than through a generator layer of its own.
      const chain: AsyncGenerator<Response, Response | void, undefined> = call.next(
        call.request,
        traceId ? { ...context, traceId } : context,
      );
      const frame = callFrame(record, span);
      let finished = false;
      try {
        for (;;) {
          const step = await runInCall(frame, nextOf, chain);
          if (step.done) {
            finished = true;
            return step.value;
          }
          yield step.value;
        }
      } catch (error) {
        finished = true;
        throw error;
      } finally {
        // The consumer stopped early (a cancelled stream): let the chain's own finally blocks run.
        if (!finished) await runInCall(frame, () => chain.return(undefined as Response & void));
      }
    } catch (error) {
      code = error instanceof ServerError ? error.code : isAbortError(error) ? Status.CANCELLED : Status.UNKNOWN;
      failure = error;
      throw error;
    } finally {
      const ms = performance.now() - started;
      const codeName = Status[code];
      if (metrics && meters) {
        meters.inFlight.dec();
        if (labels.upload) metrics.uploadsInFlight.dec();
        let calls = meters.calls.get(codeName);
        if (calls === undefined) {
          calls = metrics.calls.labels(service, method, transport, codeName);
          meters.calls.set(codeName, calls);
        }
        calls.inc();
        meters.seconds.observe(ms / 1000);
      }
      const requestId = context.header.get("x-request-id");
      if (span) {
        span.setAttribute("rpc.grpc.status_code", code);
        if (typeof requestId === "string") span.setAttribute("glimpse.request_id", requestId);
        if (code !== Status.OK) {
          const message = failure instanceof ServerError ? failure.details : codeName;
          span.setStatus({ code: SpanStatusCode.ERROR, message });
        }
        span.end();
      }
      if (slowCallMs > 0 && ms >= slowCallMs && !labels.infrastructure) {
        const slowest = slowestStage(record.stages, ms);
        metrics?.slowCalls.inc({ service, method, stage: slowest.stage });
        logger.warn("slow call", {
          requestId,
          ...(traceId ? { traceId } : {}),
          method: path,
          transport,
          code: codeName,
          ms: round(ms),
          stage: slowest.stage,
          stageMs: round(slowest.ms),
          stages: Object.fromEntries([...record.stages].map(([name, stageMs]) => [name, round(stageMs)])),
        });
      }
    }
  };
}

/** One step of a chain (a function of its own, so stepping allocates no closure). */
function nextOf<S>(chain: { next(): S }): S {
  return chain.next();
}

/** Observes a histogram of one label (a stage, a plan), its child per value looked up once. */
function observerOf(histogram: Histogram<string>): (value: string, seconds: number) => void {
  const children = new Map<string, ReturnType<Histogram<string>["labels"]>>();
  return (value, seconds) => {
    let child = children.get(value);
    if (child === undefined) {
      child = histogram.labels(value);
      children.set(value, child);
    }
    child.observe(seconds);
  };
}

/**
 * The stage that took the most time; time outside every named stage (authentication, the
 * handler's own work, queries outside a stage) counts as `handler`.
 */
export function slowestStage(stages: ReadonlyMap<string, number>, totalMs: number): { stage: string; ms: number } {
  let best = { stage: "handler", ms: Math.max(0, totalMs - [...stages.values()].reduce((a, b) => a + b, 0)) };
  for (const [stage, ms] of stages) if (ms > best.ms) best = { stage, ms };
  return best;
}

const round = (ms: number) => Math.round(ms * 10) / 10;
