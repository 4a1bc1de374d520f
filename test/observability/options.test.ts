import { trace } from "@opentelemetry/api";
import { describe, expect, it } from "vitest";
import { ConfigError, loadOptions } from "../../src/config/options.js";
import { parentContext, tracesUrl } from "../../src/observability/tracing.js";

const problems = (env: Record<string, string>) => {
  try {
    loadOptions(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
};

describe("observability options", () => {
  it("defaults to metrics on the HTTP port, a 1 s slow-call line, and no tracing", () => {
    const options = loadOptions({});
    expect(options).toMatchObject({ metrics: true, metricsAddress: undefined, slowCallMs: 1000, serviceName: "glimpse" });
    expect(tracesUrl(options)).toBeUndefined();
  });

  it("reads the metrics address as host:port, :port, or [v6]:port", () => {
    expect(loadOptions({ GLIMPSE_METRICS_ADDRESS: "10.0.0.5:9464" }).metricsAddress).toEqual({ host: "10.0.0.5", port: 9464 });
    expect(loadOptions({ GLIMPSE_METRICS_ADDRESS: ":9464" }).metricsAddress).toEqual({ host: "0.0.0.0", port: 9464 });
    expect(loadOptions({ GLIMPSE_METRICS_ADDRESS: "[::1]:9464" }).metricsAddress).toEqual({ host: "::1", port: 9464 });
    expect(loadOptions({ GLIMPSE_METRICS: "off" }).metrics).toBe(false);
  });

  it("names every bad variable", () => {
    expect(
      problems({
        GLIMPSE_METRICS: "sometimes",
        GLIMPSE_METRICS_ADDRESS: "localhost:99999",
        GLIMPSE_SLOW_CALL_MS: "-1",
        OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "ftp://collector/v1/traces",
      }).map((p) => p.split(" ")[0]),
    ).toEqual([
      "GLIMPSE_METRICS",
      "GLIMPSE_METRICS_ADDRESS",
      "GLIMPSE_SLOW_CALL_MS",
      "OTEL_EXPORTER_OTLP_ENDPOINT",
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]);
  });

  it("posts spans to the traces endpoint as given, or to <endpoint>/v1/traces", () => {
    expect(tracesUrl(loadOptions({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/" }))).toBe("http://collector:4318/v1/traces");
    expect(
      tracesUrl(
        loadOptions({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://a:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://b/otlp/traces" }),
      ),
    ).toBe("https://b/otlp/traces");
  });

  it("continues a well-formed traceparent and starts a new trace for anything else", () => {
    const parent = trace.getSpanContext(parentContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    expect(parent).toMatchObject({ traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331", traceFlags: 1, isRemote: true });
    for (const bad of [undefined, "", "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01", "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"]) {
      expect(trace.getSpanContext(parentContext(bad)), String(bad)).toBeUndefined();
    }
  });
});
