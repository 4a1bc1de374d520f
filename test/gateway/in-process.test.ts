import { readFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { ServerError, Status, type CallContext, type ServerMiddleware } from "nice-grpc";
import { composeServerMiddleware } from "nice-grpc-common";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccountServiceDefinition } from "../../src/gen/glimpse/account/v1/account_service.js";
import { ImageServiceDefinition, type GetImageRequest } from "../../src/gen/glimpse/image/v1/image_service.js";
import { FileBlobStore } from "../../src/blobs/blob-store.js";
import { ByteBudget } from "../../src/server/byte-budget.js";
import { startHttpServer, Router, type HttpServer } from "../../src/gateway/http.js";
import { nativeRoutes } from "../../src/gateway/native.js";
import { BridgeRpc } from "../../src/gateway/rpc.js";
import { InProcessServer } from "../../src/server/in-process.js";
import { deadlineMiddleware } from "../../src/server/middleware/deadline.js";
import { errorMiddleware } from "../../src/server/middleware/errors.js";
import { Lifecycle } from "../../src/server/middleware/lifecycle.js";
import { callLogging } from "../../src/server/middleware/logging.js";
import { startTestApp, type TestAccount, type TestApp } from "../helpers/app.js";
import { createLogger } from "../../src/logging/logger.js";
import { testLogger } from "../helpers/log.js";
import { parseExposition, total } from "../observability/exposition.js";

/**
 * The bridge calls the services in-process, through the gRPC server's middleware: what an
 * HTTP caller notices of a call (its deadline, its cancellation, shutdown, its log line) is
 * what a gRPC caller gets, and requests refused before any call show in the call metrics.
 */
describe("in-process calls from the bridge, against a stand-in service", () => {
  let http: HttpServer;
  let base: string;
  const lifecycle = new Lifecycle();
  type Line = Record<string, unknown>;
  const lines: Line[] = [];
  const waiting: { match: (l: Line) => boolean; resolve: () => void }[] = [];
  const logger = createLogger("info", (text) => {
    const line = JSON.parse(text) as Line;
    lines.push(line);
    for (const w of waiting.filter((w) => w.match(line))) w.resolve();
  });
  /** The call lines of a request id, once there is one. */
  const callLines = async (requestId: string) => {
    const match = (l: Line) => l.msg === "call" && l.requestId === requestId;
    if (!lines.some(match)) await new Promise<void>((resolve) => waiting.push({ match, resolve }));
    return lines.filter(match);
  };
  /** Per GetImage id of a waiting call: when its handler started, and when it saw its signal abort. */
  const events = new Map<string, { started: Promise<void>; aborted: Promise<number>; start(): void; abort(at: number): void }>();
  const eventsOf = (id: string) => {
    let entry = events.get(id);
    if (!entry) {
      let start!: () => void;
      let abort!: (at: number) => void;
      const started = new Promise<void>((resolve) => (start = resolve));
      const aborted = new Promise<number>((resolve) => (abort = resolve));
      entry = { started, aborted, start, abort };
      events.set(id, entry);
    }
    return entry;
  };

  beforeAll(async () => {
    const logging = callLogging(logger);
    const chain = [logging.middleware, lifecycle.middleware, deadlineMiddleware, errorMiddleware] as ServerMiddleware<any, any>[];
    const server = new InProcessServer({
      middleware: chain.reduce((outer, inner) => composeServerMiddleware(outer, inner)),
      follow: logging.follow,
      maxReceiveMessageBytes: 1024 * 1024,
    });
    const unimplemented = Object.fromEntries(
      Object.keys(ImageServiceDefinition.methods).map((name) => [
        name,
        async () => {
          throw new ServerError(Status.UNIMPLEMENTED, name);
        },
      ]),
    );
    server.add(ImageServiceDefinition, {
      ...unimplemented,
      async getImage(request: GetImageRequest, context: CallContext) {
        if (request.id === "1") return { image: { id: "1" } };
        // Any other id waits until the call is cancelled.
        const seen = eventsOf(request.id);
        seen.start();
        await new Promise<void>((resolve) => context.signal.addEventListener("abort", () => resolve(), { once: true }));
        seen.abort(Date.now());
        throw new Error("aborted");
      },
    });
    lifecycle.phase = "serving";
    const router = new Router();
    router.add(
      ...nativeRoutes({
        rpc: new BridgeRpc(server),
        descriptors: await readFile(new URL("../../src/gen/descriptors.binpb", import.meta.url)),
        publicUrl: () => "http://127.0.0.1",
        maxBodyBytes: 1024 * 1024,
        maxUploadBytes: 1024 * 1024,
        blobs: new FileBlobStore(tmpdir()),
        logger: testLogger(),
      }),
    );
    http = await startHttpServer({
      host: "127.0.0.1",
      port: 0,
      router,
      logger: testLogger(),
      maxBodyBytes: 1024 * 1024,
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


  it("answers an ordinary call, with one log line naming the HTTP client as the peer", async () => {
    const res = await fetch(`${base}/v1/images/1`, { headers: { "x-request-id": "inproc-ok" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBe("inproc-ok");
    expect(((await res.json()) as any).image.id).toBe("1");
    expect(await callLines("inproc-ok")).toEqual([
      expect.objectContaining({ method: "/glimpse.image.v1.ImageService/GetImage", code: "OK", peer: "127.0.0.1" }),
    ]);
  });

  it("turns Grpc-Timeout into the call's deadline: the handler is cancelled and the client gets 504", async () => {
    const res = await fetch(`${base}/v1/images/2`, { headers: { "grpc-timeout": "200m", "x-request-id": "inproc-deadline" } });
    expect(res.status).toBe(504);
    expect(await res.json()).toMatchObject({ code: Status.DEADLINE_EXCEEDED, message: "deadline exceeded" });
    await eventsOf("2").aborted; // the handler saw its signal abort
    expect(await callLines("inproc-deadline")).toEqual([expect.objectContaining({ code: "DEADLINE_EXCEEDED" })]);
  });

  it("answers a deadline already past with 504 without running the handler", async () => {
    const res = await fetch(`${base}/v1/images/3`, { headers: { "grpc-timeout": "0m", "x-request-id": "inproc-past" } });
    expect(res.status).toBe(504);
    expect(await callLines("inproc-past")).toEqual([expect.objectContaining({ code: "DEADLINE_EXCEEDED", handled: false })]);
    expect(events.has("3")).toBe(false);
  });

  it("cancels the call when the HTTP client goes away, and logs it CANCELLED", async () => {
    const req = httpRequest(`${base}/v1/images/4`, { headers: { "x-request-id": "inproc-gone" } });
    req.on("error", () => undefined);
    req.end();
    // Once the call is under way, the client hangs up.
    await eventsOf("4").started;
    req.destroy();
    await eventsOf("4").aborted;
    expect(await callLines("inproc-gone")).toEqual([expect.objectContaining({ code: "CANCELLED" })]);
  });

  it("answers 503 (UNAVAILABLE) while the server drains", async () => {
    lifecycle.phase = "draining";
    try {
      const res = await fetch(`${base}/v1/images/1`);
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ code: Status.UNAVAILABLE, message: "glimpse is shutting down; retry shortly" });
    } finally {
      lifecycle.phase = "serving";
    }
  });
});

describe("requests the bridge refuses before any call, in the call metrics", () => {
  let t: TestApp;
  let base: string;
  let owner: TestAccount;
  const metrics = async () => parseExposition(await (await fetch(`${base}/metrics`)).text());
  const calls = async (labels: Record<string, string>) => total(await metrics(), "glimpse_calls_total", { transport: "http", ...labels });

  beforeAll(async () => {
    // Bodies up to 4/3 of 64 KiB plus 1 MiB.
    t = await startTestApp({ maxUploadBytes: 64 * 1024 });
    base = `http://127.0.0.1:${t.app.httpPort}`;
    owner = await t.newAccount();
  });
  afterAll(async () => {
    await t?.close();
  });

  it("counts a 413 body as RESOURCE_EXHAUSTED over http", async () => {
    const labels = { method: "CreateApiKey", code: "RESOURCE_EXHAUSTED" };
    const before = await calls(labels);
    const res = await fetch(`${base}/v1/account/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${owner.key}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "x".repeat(2 * 1024 * 1024) }),
    });
    expect(res.status).toBe(413);
    expect(await calls(labels)).toBe(before + 1);
  });

  it("counts a 429 and a 401 at admission under their codes, once each", async () => {
    const { secret } = await t.client(AccountServiceDefinition, owner.key).createApiKey({ name: "slow", rateLimitPerMinute: 1 });
    const limited = { method: "GetImage", code: "RESOURCE_EXHAUSTED" };
    const unknown = { method: "GetImage", code: "UNAUTHENTICATED" };
    const [limitedBefore, unknownBefore] = [await calls(limited), await calls(unknown)];
    const first = await fetch(`${base}/v1/images/999`, { headers: { authorization: `Bearer ${secret}` } });
    expect(first.status).toBe(404);
    const second = await fetch(`${base}/v1/images/999`, { headers: { authorization: `Bearer ${secret}` } });
    expect(second.status).toBe(429);
    const bad = await fetch(`${base}/v1/images/999`, { headers: { authorization: "Bearer glk_nosuchkey" } });
    expect(bad.status).toBe(401);
    expect(await calls(limited)).toBe(limitedBefore + 1);
    expect(await calls(unknown)).toBe(unknownBefore + 1);
  });

  it("counts calls that reach the service once, not as refusals too", async () => {
    const labels = { method: "GetImage", code: "NOT_FOUND" };
    const before = await calls(labels);
    const res = await fetch(`${base}/v1/images/998`, { headers: { authorization: `Bearer ${owner.key}` } });
    expect(res.status).toBe(404);
    expect(await calls(labels)).toBe(before + 1);
  });
});
