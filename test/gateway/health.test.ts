import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/app.js";

describe("HTTP bridge basics", () => {
  let t: TestApp;
  let base: string;
  beforeAll(async () => {
    t = await startTestApp();
    base = `http://127.0.0.1:${t.app.httpPort}`;
  });
  afterAll(async () => {
    await t?.close();
  });

  it("answers liveness and readiness without a key", async () => {
    const live = await fetch(`${base}/healthz`);
    expect(live.status).toBe(200);
    expect(await live.json()).toEqual({ status: "ok" });
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: "ready" });
  });

  it("answers unknown paths with grpc-gateway's JSON 404 and wrong methods with 501", async () => {
    const missing = await fetch(`${base}/v1/nothing-here`);
    expect(missing.status).toBe(404);
    expect(missing.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await missing.json()).toMatchObject({ code: 5 });
    const wrong = await fetch(`${base}/healthz`, { method: "POST" });
    expect(wrong.status).toBe(501);
    expect(await wrong.json()).toMatchObject({ code: 12 });
  });

  /** Sends raw bytes and returns the status line and body, so nothing client-side cleans them up. */
  function raw(request: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const socket = connect(t.app.httpPort, "127.0.0.1");
      let text = "";
      socket.on("data", (chunk) => (text += chunk.toString("latin1")));
      socket.on("end", () => {
        const status = Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0);
        resolve({ status, body: text.slice(text.indexOf("\r\n\r\n") + 4) });
      });
      socket.on("error", reject);
      socket.write(Buffer.from(request, "latin1"));
    });
  }

  it("answers requests nothing downstream could use with a 400 and keeps serving", async () => {
    const auth = `Authorization: Bearer ${t.adminKey}\r\n`;
    const cases: [string, number, number][] = [
      [`GET /v1/images/%E0%A4%A HTTP/1.1\r\nHost: x\r\n${auth}Connection: close\r\n\r\n`, 400, 3],
      [`GET // HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, 404, 5],
      [`GET http://elsewhere/v1/images HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, 400, 3],
    ];
    for (const [request, status, code] of cases) {
      const res = await raw(request);
      expect(res.status, request).toBe(status);
      expect(JSON.parse(res.body)).toMatchObject({ code });
    }
    // Headers gRPC cannot carry are dropped: the call goes on as if they were absent.
    const odd = await raw(
      `GET /v1/images HTTP/1.1\r\nHost: x\r\n${auth}Grpc-Metadata-trace-bin: x\r\nGrpc-Metadata-a!b: 1\r\n` +
        `X-Request-Id: caf\xe9\r\nConnection: close\r\n\r\n`,
    );
    expect(odd.status).toBe(200);
    const badKey = await raw(`GET /v1/images HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xe9t\xe9\r\nConnection: close\r\n\r\n`);
    expect(badKey.status).toBe(401);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });

  it("refuses page numbers whose answer would not fit the contract", async () => {
    const headers = { authorization: `Bearer ${t.adminKey}` };
    const native = await fetch(`${base}/v1/images?zeroBasedPage=2147483647`, { headers });
    expect(native.status).toBe(400);
    expect(JSON.stringify(await native.json())).toContain("zero_based_page");
    const miki = await fetch(`${base}/compat/miki/images?page=2147483647`, { headers });
    expect(miki.status).toBe(400);
  });

  it("hands out image URLs on the bridge's real port", () => {
    expect(t.app.options.publicUrl).toBe(`http://127.0.0.1:${t.app.httpPort}`);
  });
});
