import { readFile } from "node:fs/promises";
import { createChannel, createServer, ServerError, Status, type CallContext, type Channel, type Server } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ImageServiceDefinition,
  type GetImageRequest,
  type StreamSearchImagesRequest,
} from "../../src/gen/glimpse/image/v1/image_service.js";
import { ByteBudget } from "../../src/server/byte-budget.js";
import { startHttpServer, Router, type HttpServer } from "../../src/gateway/http.js";
import { nativeRoutes } from "../../src/gateway/native.js";
import { deadlineInterceptor, deadlineMiddleware, type DeadlineContext } from "../../src/server/middleware/deadline.js";
import { testLogger } from "../helpers/log.js";

/**
 * The bridge in front of a stand-in gRPC server, for what the real services cannot be made to
 * do on demand: fail in the middle of a stream, or wait until the HTTP client gives up.
 */
describe("the bridge against a stand-in gRPC server", () => {
  let grpc: Server;
  let channel: Channel;
  let http: HttpServer;
  let base: string;
  let streamCancelled: () => void;
  const cancelled = new Promise<void>((resolve) => (streamCancelled = resolve));
  const seenMetadata: Record<string, string | undefined> = {};

  const result = (id: string, rank: number) => ({ result: { id, score: 0.5, labels: [], tags: [], embedding: [] }, rank });

  beforeAll(async () => {
    grpc = createServer({ interceptors: [deadlineInterceptor] }).use(deadlineMiddleware);
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
        seenMetadata.authorization = context.metadata.get("authorization");
        seenMetadata.custom = context.metadata.get("x-custom");
        return { image: { id: request.id, fileName: context.deadline?.toISOString() ?? "no deadline" } };
      },
    } as never);
    const port = await grpc.listen("127.0.0.1:0");
    channel = createChannel(`127.0.0.1:${port}`);
    const router = new Router();
    router.add(
      ...nativeRoutes({
        channel,
        descriptors: await readFile(new URL("../../src/gen/descriptors.binpb", import.meta.url)),
        publicUrl: () => "http://127.0.0.1",
        maxBodyBytes: 1024 * 1024,
        maxUploadBytes: 1024 * 1024,
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
      admit: async () => ({ charge: () => {} }),
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
    channel?.close();
    await grpc?.forceShutdown();
  });

  const stream = (prompt: string, signal?: AbortSignal) =>
    fetch(`${base}/v1/images:streamSearch`, { method: "POST", body: JSON.stringify({ prompt }), signal });

  it("writes every message of a stream that ends normally", async () => {
    const res = await stream("fine");
    const lines = (await res.text()).trimEnd().split("\n").map((l) => JSON.parse(l));
    expect(lines.map((l) => l.result.result.id)).toEqual(["1", "2"]);
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
