import { randomBytes } from "node:crypto";
import { Metadata } from "nice-grpc";
import { describe, expect, it } from "vitest";
import { ImageServiceDefinition, type SearchImagesRequest } from "../../src/gen/glimpse/image/v1/image_service.js";
import { startTestApp } from "../helpers/app.js";
import { solidImage } from "../helpers/images.js";
import { captureLogger } from "../helpers/log.js";
import { startSearchTestApp } from "../helpers/search.js";
import { startOtlpSink, type ReceivedSpan } from "./otlp-sink.js";

const SEARCH_SPAN = "glimpse.image.v1.ImageService/SearchImages";

/** A W3C traceparent of a sampled remote span, and its ids. */
function remoteParent() {
  const traceId = randomBytes(16).toString("hex");
  const spanId = randomBytes(8).toString("hex");
  return { traceId, spanId, header: `00-${traceId}-${spanId}-01` };
}

describe("traces over OTLP/HTTP", () => {
  it("exports a span per call, continuing the caller's trace, with children for the search stages and each query", async () => {
    const sink = await startOtlpSink();
    const { logger, records } = captureLogger();
    const t = await startSearchTestApp({ otlpEndpoint: sink.url, serviceName: "glimpse-under-test" }, { logger });
    const grpcParent = remoteParent();
    const httpParent = remoteParent();
    try {
      const client = t.client(ImageServiceDefinition);
      await client.uploadImage({ content: await solidImage(32, 32, { r: 230, g: 20, b: 20 }, "png", 1), waitForIndex: true });

      // Over gRPC: "labels" is not held in memory, so hydrating loads the rows (a query).
      const found = await client.searchImages(
        { query: { $case: "prompt", value: "red" }, limit: 5, fields: ["id", "labels"] } as SearchImagesRequest,
        { metadata: Metadata({ traceparent: grpcParent.header }) },
      );
      expect(found.results.length).toBe(1);

      // Over the HTTP bridge, with the client's traceparent header.
      const res = await fetch(`http://127.0.0.1:${t.app.httpPort}/v1/images:search`, {
        method: "POST",
        headers: { authorization: `Bearer ${t.adminKey}`, "content-type": "application/json", traceparent: httpParent.header },
        body: JSON.stringify({ prompt: "red", limit: 5 }),
      });
      expect(res.status).toBe(200);
    } finally {
      // Stopping exports what is still buffered.
      await t.close();
      await sink.close();
    }

    expect(sink.requests.every((r) => r.path === "/v1/traces" && r.contentType?.startsWith("application/json"))).toBe(true);
    const spans = sink.spans;
    const childrenOf = (span: ReceivedSpan) => spans.filter((s) => s.parentSpanId === span.spanId && s.traceId === span.traceId);

    const calls = spans.filter((s) => s.name === SEARCH_SPAN);
    expect(calls.length).toBe(2);
    const overGrpc = calls.find((s) => s.attributes["glimpse.transport"] === "grpc")!;
    const overHttp = calls.find((s) => s.attributes["glimpse.transport"] === "http")!;
    expect(overGrpc).toBeDefined();
    expect(overHttp).toBeDefined();
    expect(overGrpc.service).toBe("glimpse-under-test");
    expect(overGrpc.kind).toBe(2); // SERVER
    expect(overGrpc.attributes).toMatchObject({
      "rpc.system": "grpc",
      "rpc.service": "glimpse.image.v1.ImageService",
      "rpc.method": "SearchImages",
      "rpc.grpc.status_code": 0,
      "glimpse.search.plan": "hnsw",
    });
    expect(typeof overGrpc.attributes["glimpse.request_id"]).toBe("string");

    const stages = childrenOf(overGrpc);
    expect(stages.map((s) => s.name).sort()).toEqual(["embed", "hydrate", "rank"]);
    const hydrate = stages.find((s) => s.name === "hydrate")!;
    const queries = childrenOf(hydrate);
    expect(queries.length).toBe(1);
    expect(queries[0].name).toBe("postgres SELECT");
    expect(queries[0].kind).toBe(3); // CLIENT
    expect(queries[0].attributes["db.system.name"]).toBe("postgresql");
    // The statement's text with placeholders: never the values it ran with.
    expect(String(queries[0].attributes["db.query.text"])).toMatch(/^select .*\$1/is);

    // Each call continues the trace its caller sent (the bridge forwards the HTTP header).
    expect(overGrpc).toMatchObject({ traceId: grpcParent.traceId, parentSpanId: grpcParent.spanId });
    expect(overHttp).toMatchObject({ traceId: httpParent.traceId, parentSpanId: httpParent.spanId });

    // Every log line of the traced gRPC call names its request id and trace id.
    const requestId = overGrpc.attributes["glimpse.request_id"];
    const lines = records.filter((r) => r.requestId === requestId);
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect(line.traceId).toBe(overGrpc.traceId);
    expect(lines.some((r) => r.msg === "call" && r.method === "/glimpse.image.v1.ImageService/SearchImages")).toBe(true);
  });

  it("continues the trace id a caller sends over gRPC and over HTTP", async () => {
    const sink = await startOtlpSink();
    const t = await startTestApp({ otlpTracesEndpoint: `${sink.url}/v1/traces` });
    const grpcParent = remoteParent();
    const httpParent = remoteParent();
    try {
      await t.client(ImageServiceDefinition).listImages({}, { metadata: Metadata({ traceparent: grpcParent.header }) });
      const res = await fetch(`http://127.0.0.1:${t.app.httpPort}/v1/images`, {
        headers: { authorization: `Bearer ${t.adminKey}`, traceparent: httpParent.header },
      });
      expect(res.status).toBe(200);
    } finally {
      await t.close();
      await sink.close();
    }
    const list = sink.spans.filter((s) => s.name === "glimpse.image.v1.ImageService/ListImages");
    const grpc = list.find((s) => s.traceId === grpcParent.traceId);
    const http = list.find((s) => s.traceId === httpParent.traceId);
    expect(grpc).toMatchObject({ parentSpanId: grpcParent.spanId, attributes: { "glimpse.transport": "grpc" } });
    expect(http).toMatchObject({ parentSpanId: httpParent.spanId, attributes: { "glimpse.transport": "http" } });
    // Listing runs queries: each is a child of its call.
    expect(sink.spans.some((s) => s.parentSpanId === grpc!.spanId && s.name.startsWith("postgres "))).toBe(true);
  });

  it("runs no exporter and puts no trace id in the log when no endpoint is configured", async (ctx) => {
    // A receiver on the standard OTLP/HTTP port would catch an exporter left on by default.
    let sink;
    try {
      sink = await startOtlpSink(4318);
    } catch {
      ctx.skip(); // port 4318 is taken on this machine (a collector already runs); nothing to listen with
      return;
    }
    const { logger, records } = captureLogger();
    const t = await startTestApp({}, { logger });
    try {
      await t.client(ImageServiceDefinition).listImages({}, { metadata: Metadata({ traceparent: remoteParent().header }) });
    } finally {
      await t.close();
      await sink.close();
    }
    expect(sink.requests).toEqual([]);
    expect(records.some((r) => r.msg === "tracing on")).toBe(false);
    const call = records.find((r) => r.msg === "call" && r.method === "/glimpse.image.v1.ImageService/ListImages");
    expect(call).toBeDefined();
    expect(typeof call!.requestId).toBe("string");
    expect(call!.traceId).toBeUndefined();
  });
});
