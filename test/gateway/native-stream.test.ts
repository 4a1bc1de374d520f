import { readFile } from "node:fs/promises";
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { tmpdir } from "node:os";
import { ServerError, Status, type CallContext } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ImageServiceDefinition,
  type GetImageRequest,
  type StreamSearchImagesRequest,
} from "../../src/gen/glimpse/image/v1/image_service.js";
import { FileBlobStore } from "../../src/blobs/blob-store.js";
import { ByteBudget } from "../../src/server/byte-budget.js";
import { startHttpServer, Router, type HttpServer } from "../../src/gateway/http.js";
import { nativeRoutes } from "../../src/gateway/native.js";
import { deadlineMiddleware, type DeadlineContext } from "../../src/server/middleware/deadline.js";
import { InProcessServer } from "../../src/server/in-process.js";
import { BridgeRpc } from "../../src/gateway/rpc.js";
import { testLogger } from "../helpers/log.js";

/**
 * The bridge in front of a stand-in service (called in-process, as the bridge calls glimpse's),
 * for what the real services cannot be made to do on demand: fail in the middle of a stream,
 * or wait until the HTTP client gives up.
 */
describe("the bridge against a stand-in gRPC server", () => {
  let http: HttpServer;
  let base: string;
  let streamCancelled: () => void;
  const cancelled = new Promise<void>((resolve) => (streamCancelled = resolve));
  const seenMetadata: Record<string, string | undefined> = {};

  const result = (id: string, rank: number) => ({ result: { id, score: 0.5, labels: [], tags: [], embedding: [] }, rank });

  beforeAll(async () => {
    const grpc = new InProcessServer({ middleware: deadlineMiddleware, maxReceiveMessageBytes: 4 * 1024 * 1024 });
    const unimplemented = Object.fromEntries(
      Object.entries(ImageServiceDefinition.methods).map(([name, m]) => [
        name,
        m.responseStream
          ? async function* () {
              throw new ServerError(Status.UNIMPLEMENTED, name);
            }
          : async () => {
              throw new ServerError(Status.UNIMPLEMENTED, name);
            },
      ]),
    );
    grpc.add(ImageServiceDefinition, {
      ...unimplemented,
      async *streamSearchImages(request: StreamSearchImagesRequest, context: CallContext) {
        const prompt = request.search?.query?.$case === "prompt" ? request.search.query.value : "";
        context.header.set("x-served-by", "stand-in");
        context.header.set("x-glimpse-internal-secret", "never shown");
        if (prompt === "refuse") {
          throw new ServerError(Status.FAILED_PRECONDITION, "no index to search");
        }
        yield result("1", 0);
        if (prompt === "break") {
          throw new ServerError(Status.UNAVAILABLE, "the index went away");
        }
        if (prompt === "hang") {
          await new Promise<void>((resolve) => context.signal.addEventListener("abort", () => resolve(), { once: true }));
          streamCancelled();
          return;
        }
        yield result("2", 1);
      },
      async getImageContent() {
        return { contentType: "image/x-test", data: Buffer.from([1, 2, 3, 250]), extensions: [] };
      },
      async getImage(request: GetImageRequest, context: CallContext & DeadlineContext) {
        context.header.set("x-served-by", "stand-in");
        context.header.set("x-glimpse-internal-secret", "never shown");
        context.trailer.set("x-trace", "t-1");
        context.trailer.set("x-glimpse-internal-secret", "never shown");
        if (request.id === "404") throw new ServerError(Status.NOT_FOUND, "no image 404");
        seenMetadata.authorization = context.metadata.get("authorization");
        seenMetadata.custom = context.metadata.get("x-custom");
        return { image: { id: request.id, fileName: context.deadline?.toISOString() ?? "no deadline" } };
      },
    } as never);
    const router = new Router();
    router.add(
      ...nativeRoutes({
        rpc: new BridgeRpc(grpc),
        descriptors: await readFile(new URL("../../src/gen/descriptors.binpb", import.meta.url)),
        publicUrl: () => "http://127.0.0.1",
        maxBodyBytes: 1024 * 1024,
        maxUploadBytes: 1024 * 1024,
        blobs: new FileBlobStore(tmpdir()), // the native routes never read blobs
        logger: testLogger(),
      }),
    );
    http = await startHttpServer({
      host: "127.0.0.1",
      port: 0,
      router,
      logger: testLogger(),
      maxBodyBytes: 1024 * 1024,
      // This test's server has no authentication: every request is let in.
      admit: async () => ({ charge: async () => {} }),
      ticket: "test",
      budget: new ByteBudget(64 * 1024 * 1024),
      bodyTimeoutMs: 30_000,
      headersTimeoutMs: 30_000,
      keepAliveTimeoutMs: 5_000,
    });
    base = `http://127.0.0.1:${http.port}`;
  });
  afterAll(async () => {
    await http?.close();
  });

  /** A request by node:http, which (unlike fetch) shows trailers. */
  const raw = (method: string, path: string, headers: Record<string, string>) =>
    new Promise<{ status: number; headers: IncomingHttpHeaders; trailers: NodeJS.Dict<string>; text: string }>((resolve, reject) => {
      const req = httpRequest(`${base}${path}`, { method, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode!, headers: res.headers, trailers: res.trailers, text: Buffer.concat(chunks).toString() }),
        );
        res.on("error", reject);
      });
      req.on("error", reject);
      req.end();
    });

  const stream = (prompt: string, signal?: AbortSignal) =>
    fetch(`${base}/v1/images:streamSearch`, { method: "POST", body: JSON.stringify({ prompt }), signal });

  it("writes every message of a stream that ends normally, with the call's headers as Grpc-Metadata-*", async () => {
    const res = await stream("fine");
    expect(res.headers.get("content-type")).toBe("application/x-ndjson");
    expect(res.headers.get("grpc-metadata-x-served-by")).toBe("stand-in");
    expect([...res.headers.keys()].filter((name) => name.includes("internal"))).toEqual([]);
    const lines = (await res.text()).trimEnd().split("\n").map((l) => JSON.parse(l));
    expect(lines.map((l) => l.result.result.id)).toEqual(["1", "2"]);
  });

  it("answers a stream that fails before its first message with its HTTP status and grpc-gateway's {error} chunk", async () => {
    const res = await stream("refuse");
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await res.text()).toBe(`${JSON.stringify({ error: { code: 9, message: "no index to search", details: [] } })}\n`);
    expect(res.headers.get("grpc-metadata-x-served-by")).toBe("stand-in");
  });

  it("answers a request it cannot read before any call with the plain Status body, as grpc-gateway does", async () => {
    const res = await fetch(`${base}/v1/images:streamSearch`, { method: "POST", body: '{"prompt": 5}' });
    expect(res.status).toBe(400);
    const body = (await res.json()) as any;
    expect(body).toMatchObject({ code: 3, details: [{ "@type": "type.googleapis.com/google.rpc.BadRequest" }] });
    expect(body).not.toHaveProperty("error");
  });

  it("forwards response headers as Grpc-Metadata-* and, asked with TE: trailers, trailers as Grpc-Trailer-*", async () => {
    const plain = await raw("GET", "/v1/images/77", {});
    expect(plain.status).toBe(200);
    expect(plain.headers["grpc-metadata-x-served-by"]).toBe("stand-in");
    expect(plain.headers["content-length"]).toBeDefined();
    expect(plain.trailers).toEqual({});
    const withTrailers = await raw("GET", "/v1/images/77", { te: "trailers" });
    expect(withTrailers.status).toBe(200);
    expect(withTrailers.headers.trailer).toBe("Grpc-Trailer-X-Trace");
    expect(withTrailers.trailers).toEqual({ "grpc-trailer-x-trace": "t-1" });
    expect(JSON.parse(withTrailers.text).image.id).toBe("77");
    // Failures carry them too; glimpse's internal names and gRPC's own never leave.
    const failed = await raw("GET", "/v1/images/404", { te: "trailers" });
    expect(failed.status).toBe(404);
    expect(JSON.parse(failed.text)).toMatchObject({ code: 5, message: "no image 404" });
    expect(failed.trailers).toEqual({ "grpc-trailer-x-trace": "t-1" });
    for (const answer of [plain, withTrailers, failed]) {
      const names = [...Object.keys(answer.headers), ...Object.keys(answer.trailers)];
      expect(names.filter((n) => n.includes("internal") || /^grpc-(metadata|trailer)-grpc-/.test(n))).toEqual([]);
    }
  });

  it("adds an {error} line with HTTP 200 when the stream fails after its first message", async () => {
    const res = await stream("break");
    expect(res.status).toBe(200);
    const lines = (await res.text()).trimEnd().split("\n").map((l) => JSON.parse(l));
    expect(lines).toHaveLength(2);
    expect(lines[0].result.result.id).toBe("1");
    expect(lines[1]).toEqual({ error: { code: 14, message: "the index went away", details: [] } });
  });

  it("cancels the gRPC call when the HTTP client goes away mid-stream", async () => {
    const client = new AbortController();
    const res = await stream("hang", client.signal);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(JSON.parse(new TextDecoder().decode(first.value)).result.result.id).toBe("1");
    client.abort();
    await cancelled; // resolves only when the server saw the call's signal abort
  });

  it("answers a google.api.HttpBody as raw bytes with its content type", async () => {
    const res = await fetch(`${base}/v1/images/5/content`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/x-test");
    expect(Buffer.from(await res.arrayBuffer())).toEqual(Buffer.from([1, 2, 3, 250]));
  });

  it("sends Grpc-Timeout as the call's deadline and headers as metadata", async () => {
    const before = Date.now();
    const res = await fetch(`${base}/v1/images/77`, {
      headers: { "grpc-timeout": "20S", authorization: "Bearer k", "grpc-metadata-x-custom": "yes" },
    });
    const after = Date.now();
    const deadline = Date.parse(((await res.json()) as any).image.fileName);
    expect(deadline).toBeGreaterThanOrEqual(before + 19_000);
    expect(deadline).toBeLessThanOrEqual(after + 21_000);
    expect(seenMetadata).toEqual({ authorization: "Bearer k", custom: "yes" });
  });
});
