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

  it("hands out image URLs on the bridge's real port", () => {
    expect(t.app.options.publicUrl).toBe(`http://127.0.0.1:${t.app.httpPort}`);
  });
});
