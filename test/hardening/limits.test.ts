import { request as httpRequest, type IncomingMessage } from "node:http";
import { connect } from "node:net";
import { ClientError, Metadata, Status } from "nice-grpc";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/clock.js";
import { AccountServiceDefinition } from "../../src/gen/glimpse/account/v1/account_service.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { startTestApp, withKey, type TestApp } from "../helpers/app.js";
import { distinctPng } from "../helpers/images.js";

/**
 * The hardening issue's limits: who is charged, how much, and before what. Each case is a
 * reproduction of a fault found by trying glimpse as an attacker, on the transport where it
 * was found.
 */

interface Reply {
  status: number;
  headers: IncomingMessage["headers"];
  body: string;
}

/** One HTTP request from a chosen local address, body written in pieces (or not at all). */
function send(
  port: number,
  options: {
    method?: string;
    path: string;
    headers?: Record<string, string | string[]>;
    body?: Buffer | string;
    /** Write only this much of the body and then wait (the rest never comes). */
    partial?: boolean;
    localAddress?: string;
  },
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: "127.0.0.1",
        port,
        method: options.method ?? "GET",
        path: options.path,
        headers: options.headers,
        localAddress: options.localAddress,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") });
          req.destroy();
        });
        res.on("error", reject);
      },
    );
    req.on("error", (error) => {
      // A server that answers and closes before the whole body was written is the point of
      // some cases; the answer has already been resolved by then.
      if ((error as NodeJS.ErrnoException).code !== "ECONNRESET" && (error as NodeJS.ErrnoException).code !== "EPIPE") reject(error);
    });
    if (options.body !== undefined) req.write(options.body);
    if (!options.partial) req.end();
  });
}

/**
 * An upload as curl sends a large one: `Expect: 100-continue`, and the body only after the
 * server's go-ahead (never, when the answer comes first).
 */
function sendExpectingContinue(port: number, key: string, body: Buffer): Promise<Reply & { continued: boolean }> {
  return new Promise((resolve, reject) => {
    let continued = false;
    const req = httpRequest(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/v1/images",
        agent: false,
        headers: {
          authorization: `Bearer ${key}`,
          "content-type": "application/json",
          "content-length": String(body.length),
          expect: "100-continue",
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString("utf8"), continued });
          req.destroy();
        });
        res.on("error", reject);
      },
    );
    req.on("continue", () => {
      continued = true;
      req.end(body);
    });
    req.on("error", reject);
  });
}

const grpcCode = (error: unknown) => (error instanceof ClientError ? error.code : undefined);

describe("limits charged before the body is read", () => {
  let t: TestApp;
  // Rate limits refill only when the test moves this clock: each case starts with full buckets.
  const clock = new ManualClock();
  beforeAll(async () => {
    t = await startTestApp(
      {
        maxUploadBytes: 400_000,
        // One largest body (about 1.5 MB, counted four times) fits; two declared 1.2 MB do not.
        maxUploadBytesInFlight: 8_000_000,
        rateLimitPerMinute: 3,
        maxKeysPerAccount: 3,
        httpBodyTimeoutS: 1,
      },
      { clock },
    );
  });
  beforeEach(() => clock.advance(60_000));
  afterAll(async () => {
    await t?.close();
  });

  it("refuses a keyless 30 MB upload from its headers, before any body arrives", async () => {
    // Only the first bytes are ever sent: the answer can only come from the headers.
    const reply = await send(t.app.httpPort, {
      method: "POST",
      path: "/v1/images",
      headers: { "content-type": "application/json", "content-length": String(30 * 1024 * 1024) },
      body: '{"content":"',
      partial: true,
    });
    expect(reply.status).toBe(401);
    expect(reply.headers.connection).toBe("close");
  });

  it("answers 503 with Retry-After once the process holds its budget of body bytes", async () => {
    const account = await t.newAccount();
    clock.advance(60_000);
    // The first upload declares 1.2 MB and sends only part of it, so it holds its reservation.
    const holding = send(t.app.httpPort, {
      method: "POST",
      path: "/v1/images",
      headers: { authorization: `Bearer ${t.adminKey}`, "content-type": "application/json", "content-length": String(1_200_000) },
      body: '{"content":"AAAA',
      partial: true,
    });
    await new Promise((r) => setTimeout(r, 200));
    const refused = await send(t.app.httpPort, {
      method: "POST",
      path: "/v1/images",
      headers: { authorization: `Bearer ${account.key}`, "content-type": "application/json", "content-length": String(1_200_000) },
      body: '{"content":"',
      partial: true,
    });
    expect(refused.status).toBe(503);
    expect(Number(refused.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(refused.body)).toMatchObject({ code: 14 });
    // The held body never completes: the body timeout answers it, and its bytes are given back.
    expect((await holding).status).toBe(408);
    const small = await t.client(ImageServiceDefinition).uploadImage({ content: await distinctPng(1), index: false });
    const upload = { content: (await distinctPng(2)).toString("base64"), index: false };
    const ok = await send(t.app.httpPort, {
      method: "POST",
      path: "/v1/images",
      headers: { authorization: `Bearer ${t.adminKey}`, "content-type": "application/json" },
      body: JSON.stringify(upload),
    });
    expect(small.image?.id).toBeTruthy();
    expect(ok.status).toBe(200);
  });

  it("answers an over-limit `Expect: 100-continue` upload before the client sends its body", async () => {
    const account = await t.newAccount();
    clock.advance(60_000);
    const refused = await sendExpectingContinue(t.app.httpPort, account.key, Buffer.alloc(3_000_000, 0x41));
    // The client was never told to go on: it hears the refusal, not a cut connection.
    expect(refused.continued).toBe(false);
    expect(refused.status).toBe(400);
    expect(JSON.parse(refused.body)).toMatchObject({ code: 3 });
    expect(refused.body).toMatch(/content/);
  });

  it("lets an admitted `Expect: 100-continue` upload send its body and stores it", async () => {
    const account = await t.newAccount();
    clock.advance(60_000);
    const body = Buffer.from(JSON.stringify({ content: (await distinctPng(40)).toString("base64"), index: false }));
    const stored = await sendExpectingContinue(t.app.httpPort, account.key, body);
    expect(stored.continued).toBe(true);
    expect(stored.status).toBe(200);
    expect(JSON.parse(stored.body).image.id).toMatch(/^[0-9]+$/);
  });

  it("refuses a keyless or rate-limited gRPC upload from its headers", async () => {
    const content = Buffer.alloc(300_000, 7);
    const keyless = await t.client(ImageServiceDefinition, "").uploadImage({ content }).catch((e: unknown) => e);
    expect(grpcCode(keyless)).toBe(Status.UNAUTHENTICATED);
    const account = await t.newAccount();
    clock.advance(60_000);
    const images = t.client(ImageServiceDefinition, account.key);
    for (let i = 0; i < 3; i++) await images.listImages({});
    const limited = await images.uploadImage({ content }).catch((e: unknown) => e);
    expect(grpcCode(limited)).toBe(Status.RESOURCE_EXHAUSTED);
    expect((limited as ClientError).details).toMatch(/rate limit of 3 requests per minute/);
  });

  it("shares one budget among an account's keys and caps how many keys it holds", async () => {
    const account = await t.newAccount();
    clock.advance(60_000);
    const accounts = t.client(AccountServiceDefinition, account.key);
    const second = await accounts.createApiKey({ name: "second" });
    await accounts.createApiKey({ name: "third" });
    const refused = await accounts.createApiKey({ name: "fourth" }).catch((e: unknown) => e);
    expect(grpcCode(refused)).toBe(Status.FAILED_PRECONDITION);
    expect((refused as ClientError).details).toMatch(/holds 3 API keys/);
    // The three CreateApiKey calls spent the account's 3 tokens: a fresh key of it is refused too.
    const images = t.client(ImageServiceDefinition);
    const limited = await images.listImages({}, withKey(second.secret)).catch((e: unknown) => e);
    expect(grpcCode(limited)).toBe(Status.RESOURCE_EXHAUSTED);
  });

  it("charges a token for every item of an upload stream", async () => {
    const account = await t.newAccount();
    clock.advance(60_000);
    const images = t.client(ImageServiceDefinition, account.key);
    const pngs = await Promise.all([10, 11, 12, 13, 14].map((i) => distinctPng(i)));
    async function* items() {
      for (const content of pngs) yield { request: { content, index: false } };
    }
    const results = [];
    for await (const item of images.batchUploadImages(items())) results.push(item);
    const outcomes = results.map((r) => (r.result?.$case === "error" ? r.result.value.code : "stored"));
    expect(outcomes).toEqual(["stored", "stored", "stored", Status.RESOURCE_EXHAUSTED, Status.RESOURCE_EXHAUSTED]);
  });
});

describe("anonymous readers", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ anonymousRead: true, rateLimitPerMinute: 2 });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("each client address has its own bucket behind the bridge", async () => {
    const list = (localAddress: string) => send(t.app.httpPort, { path: "/v1/images", localAddress });
    expect((await list("127.0.0.2")).status).toBe(200);
    expect((await list("127.0.0.2")).status).toBe(200);
    expect((await list("127.0.0.2")).status).toBe(429);
    // Another reader is not affected by the first one's use.
    expect((await list("127.0.0.3")).status).toBe(200);
    expect((await list("127.0.0.4")).status).toBe(200);
  });

  it("a forged forwarded address buys no new bucket, over HTTP or gRPC", async () => {
    const forged = (n: number) =>
      send(t.app.httpPort, { path: "/v1/images", localAddress: "127.0.0.5", headers: { "grpc-metadata-x-forwarded-for": `10.0.0.${n}` } });
    const statuses = [];
    for (let n = 0; n < 4; n++) statuses.push((await forged(n)).status);
    expect(statuses).toEqual([200, 200, 429, 429]);

    const images = t.client(ImageServiceDefinition, "");
    const codes = [];
    for (let n = 0; n < 4; n++) {
      const metadata = Metadata({ "x-forwarded-for": `10.1.0.${n}` });
      codes.push(await images.listImages({}, { metadata }).then(() => Status.OK, grpcCode));
    }
    expect(codes).toEqual([Status.OK, Status.OK, Status.RESOURCE_EXHAUSTED, Status.RESOURCE_EXHAUSTED]);
  });
});

describe("credentials", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  it("refuses two different keys on one request, in either order", async () => {
    const other = await t.newAccount();
    for (const [first, second] of [
      [t.adminKey, other.key],
      [other.key, t.adminKey],
    ]) {
      const reply = await send(t.app.httpPort, {
        path: "/v1/images",
        headers: { authorization: `Bearer ${first}`, "grpc-metadata-authorization": `Bearer ${second}` },
      });
      expect(reply.status).toBe(401);
      expect(JSON.parse(reply.body).message).toMatch(/two different credentials/);
    }
    const twice = await send(t.app.httpPort, { path: "/v1/images", headers: { authorization: [`Bearer ${t.adminKey}`, `Bearer ${other.key}`] } });
    expect(twice.status).toBe(401);
    const same = await send(t.app.httpPort, {
      path: "/v1/images",
      headers: { authorization: `Bearer ${other.key}`, "x-api-key": other.key },
    });
    expect(same.status).toBe(200);

    const images = t.client(ImageServiceDefinition, "");
    const metadata = Metadata({ authorization: `Bearer ${t.adminKey}`, "x-api-key": other.key });
    expect(grpcCode(await images.listImages({}, { metadata }).catch((e: unknown) => e))).toBe(Status.UNAUTHENTICATED);
  });
});

describe("idle and slow connections", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ grpcIdleTimeoutS: 1, httpBodyTimeoutS: 1, httpHeadersTimeoutS: 1 });
  });
  afterAll(async () => {
    await t?.close();
  });

  const closedWithin = (port: number, write: string | undefined, ms: number) =>
    new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      const timer = setTimeout(() => {
        socket.destroy();
        resolve(false);
      }, ms);
      socket.on("connect", () => write !== undefined && socket.write(write));
      socket.on("error", () => undefined);
      socket.on("close", () => {
        clearTimeout(timer);
        resolve(true);
      });
      socket.resume();
    });

  it("closes a gRPC connection that never sends the HTTP/2 preface", async () => {
    expect(await closedWithin(t.app.grpcPort, undefined, 10_000)).toBe(true);
  });

  it("closes an HTTP connection whose headers never end", async () => {
    expect(await closedWithin(t.app.httpPort, "GET /v1/images HTTP/1.1\r\nhost: x\r\n", 10_000)).toBe(true);
  });

  it("answers 408 to a body sent too slowly", async () => {
    const reply = await send(t.app.httpPort, {
      method: "POST",
      path: "/v1/images",
      headers: { authorization: `Bearer ${t.adminKey}`, "content-type": "application/json", "content-length": "1000" },
      body: "{",
      partial: true,
    });
    expect(reply.status).toBe(408);
  });
});
