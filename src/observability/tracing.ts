import { ROOT_CONTEXT, trace, TraceFlags, type Context, type Tracer } from "@opentelemetry/api";
import type { Logger } from "../logging/logger.js";

/** Where and as what traces are sent; from the standard OTEL_* variables. */
export interface TracingOptions {
  /** OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: the full URL spans are posted to. */
  otlpTracesEndpoint: string | undefined;
  /** OTEL_EXPORTER_OTLP_ENDPOINT: a base URL; spans go to `<base>/v1/traces`. */
  otlpEndpoint: string | undefined;
  /** OTEL_SERVICE_NAME. */
  serviceName: string;
}

/** A running trace pipeline: a tracer whose spans are batched and exported over OTLP/HTTP (JSON). */
export interface Tracing {
  tracer: Tracer;
  /** The URL spans are posted to. */
  url: string;
  /** Exports what is still buffered and stops. */
  shutdown(): Promise<void>;
}

/** The URL spans are posted to, or undefined when no endpoint is configured (tracing off). */
export function tracesUrl(options: TracingOptions): string | undefined {
  if (options.otlpTracesEndpoint !== undefined) return options.otlpTracesEndpoint;
  if (options.otlpEndpoint !== undefined) return `${options.otlpEndpoint.replace(/\/+$/, "")}/v1/traces`;
  return undefined;
}

/**
 * Starts tracing when an OTLP endpoint is configured, and otherwise returns undefined
 * without loading the SDK: calls then make no spans at all. The provider is this app's own,
 * not registered globally, so several apps in one process keep separate pipelines.
 */
export async function startTracing(options: TracingOptions, logger: Logger): Promise<Tracing | undefined> {
  const url = tracesUrl(options);
  if (url === undefined) return undefined;
  const [{ BasicTracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { resourceFromAttributes }] = await Promise.all([
    import("@opentelemetry/sdk-trace-base"),
    import("@opentelemetry/exporter-trace-otlp-http"),
    import("@opentelemetry/resources"),
  ]);
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": options.serviceName }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url }))],
  });
  logger.info("tracing on", { otlpTracesEndpoint: url });
  return {
    tracer: provider.getTracer("glimpse"),
    url,
    shutdown: () => provider.shutdown(),
  };
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/**
 * The context a call continues: the W3C `traceparent` it was sent with (gRPC metadata, or
 * the HTTP header the bridge forwards), or a new trace.
 */
export function parentContext(traceparent: string | undefined): Context {
  const match = traceparent === undefined ? null : TRACEPARENT.exec(traceparent.trim());
  if (!match || /^0+$/.test(match[1]) || /^0+$/.test(match[2])) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId: match[1],
    spanId: match[2],
    traceFlags: parseInt(match[3], 16) & TraceFlags.SAMPLED,
    isRemote: true,
  });
}
