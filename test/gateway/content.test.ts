import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/clock.js";
import { notModified, planRange } from "../../src/gateway/content.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { Visibility, type Image } from "../../src/gen/glimpse/image/v1/image.js";
import { startTestApp, type TestApp } from "../helpers/app.js";
import { distinctPng, solidImage } from "../helpers/images.js";

describe("GET /v1/images/{id}/content", () => {
  let t: TestApp;
  let base: string;
  let auth: Record<string, string>;
  let bytes: Buffer;
  let image: Image;
  let url: string;

  beforeAll(async () => {
    t = await startTestApp();
    base = `http://127.0.0.1:${t.app.httpPort}`;
    auth = { authorization: `Bearer ${t.adminKey}` };
    bytes = await solidImage(64, 48, { r: 20, g: 140, b: 220 }, "png", 7);
    const uploaded = await t.client(ImageServiceDefinition).uploadImage({ content: bytes, index: false });
    image = uploaded.image!;
    url = `${base}/v1/images/${image.id}/content`;
  });
  afterAll(async () => {
    await t?.close();
  });

  it("answers the original bytes with type, length, validators and caching headers", async () => {
    const res = await fetch(url, { headers: auth });
    expect(res.status).toBe(200);
    const body = Buffer.from(await res.arrayBuffer());
    expect(body.equals(bytes)).toBe(true);
    expect(res.headers.get("content-type")).toBe("image/png");
    expect(res.headers.get("content-length")).toBe(String(bytes.length));
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    expect(res.headers.get("etag")).toBe(`"${sha256}"`);
    expect(res.headers.get("accept-ranges")).toBe("bytes");
    expect(res.headers.get("cache-control")).toBe("private, max-age=86400, immutable");
    expect(res.headers.get("last-modified")).toBe(image.createdAt!.toUTCString());
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
  });

  it("answers 304 without a body when If-None-Match names the ETag, a list holding it, or *", async () => {
    const etag = (await fetch(url, { headers: auth, method: "HEAD" })).headers.get("etag")!;
    for (const ifNoneMatch of [etag, `"other", W/${etag}`, "*"]) {
      const res = await fetch(url, { headers: { ...auth, "if-none-match": ifNoneMatch } });
      expect(res.status, ifNoneMatch).toBe(304);
      expect(res.headers.get("etag")).toBe(etag);
      expect(res.headers.get("cache-control")).toBe("private, max-age=86400, immutable");
      expect((await res.arrayBuffer()).byteLength).toBe(0);
    }
    const changed = await fetch(url, { headers: { ...auth, "if-none-match": '"something-else"' } });
    expect(changed.status).toBe(200);
    expect(Buffer.from(await changed.arrayBuffer()).equals(bytes)).toBe(true);
  });

  it("answers 304 to If-Modified-Since at or after the upload and 200 before it", async () => {
    const uploaded = image.createdAt!.getTime();
    const since = (ms: number) => ({ headers: { ...auth, "if-modified-since": new Date(ms).toUTCString() } });
    expect((await fetch(url, since(uploaded + 60_000))).status).toBe(304);
    expect((await fetch(url, since(uploaded))).status).toBe(304);
    expect((await fetch(url, since(uploaded - 60_000))).status).toBe(200);
    // If-None-Match decides when both are sent.
    const both = await fetch(url, {
      headers: { ...auth, "if-none-match": '"other"', "if-modified-since": new Date(uploaded + 60_000).toUTCString() },
    });
    expect(both.status).toBe(200);
  });

  it("answers 206 with Content-Range for bytes=a-b, a- and -n", async () => {
    const size = bytes.length;
    const cases: [string, number, number][] = [
      ["bytes=0-9", 0, 9],
      ["bytes=10-", 10, size - 1],
      ["bytes=-16", size - 16, size - 1],
      ["bytes=5-100000", 5, size - 1],
    ];
    for (const [range, start, end] of cases) {
      const res = await fetch(url, { headers: { ...auth, range } });
      expect(res.status, range).toBe(206);
      expect(res.headers.get("content-range")).toBe(`bytes ${start}-${end}/${size}`);
      expect(res.headers.get("content-length")).toBe(String(end - start + 1));
      expect(res.headers.get("content-type")).toBe("image/png");
      expect(Buffer.from(await res.arrayBuffer()).equals(bytes.subarray(start, end + 1))).toBe(true);
    }
  });

  it("answers 416 with the size when the range starts past the end", async () => {
    const res = await fetch(url, { headers: { ...auth, range: `bytes=${bytes.length}-` } });
    expect(res.status).toBe(416);
    expect(res.headers.get("content-range")).toBe(`bytes */${bytes.length}`);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await res.json()).toMatchObject({ code: 11, details: [] });
  });

  it("answers the whole body for several ranges", async () => {
    const res = await fetch(url, { headers: { ...auth, range: "bytes=0-1, 4-5" } });
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true);
  });

  it("honours Range only while If-Range still matches", async () => {
    const etag = (await fetch(url, { headers: auth, method: "HEAD" })).headers.get("etag")!;
    const matching = await fetch(url, { headers: { ...auth, range: "bytes=0-3", "if-range": etag } });
    expect(matching.status).toBe(206);
    expect(Buffer.from(await matching.arrayBuffer()).equals(bytes.subarray(0, 4))).toBe(true);
    const lastModified = image.createdAt!.toUTCString();
    const byDate = await fetch(url, { headers: { ...auth, range: "bytes=0-3", "if-range": lastModified } });
    expect(byDate.status).toBe(206);
    const stale = await fetch(url, { headers: { ...auth, range: "bytes=0-3", "if-range": '"an-older-version"' } });
    expect(stale.status).toBe(200);
    expect(Buffer.from(await stale.arrayBuffer()).equals(bytes)).toBe(true);
  });

  it("answers HEAD with the headers of GET and no body", async () => {
    const res = await fetch(url, { headers: auth, method: "HEAD" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/png");
    expect(res.headers.get("content-length")).toBe(String(bytes.length));
    expect(res.headers.get("etag")).toMatch(/^"[0-9a-f]{64}"$/);
    expect((await res.arrayBuffer()).byteLength).toBe(0);
    const ranged = await fetch(url, { headers: { ...auth, range: "bytes=0-9" }, method: "HEAD" });
    expect(ranged.status).toBe(206);
    expect(ranged.headers.get("content-length")).toBe("10");
  });

  it("answers grpc-gateway JSON errors: unknown id 404, malformed id 400, no key 401", async () => {
    const missing = await fetch(`${base}/v1/images/999999999999/content`, { headers: auth });
    expect(missing.status).toBe(404);
    expect(missing.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await missing.json()).toMatchObject({ code: 5, message: expect.any(String), details: [] });

    const malformed = await fetch(`${base}/v1/images/not-a-number/content`, { headers: auth });
    expect(malformed.status).toBe(400);
    const body = (await malformed.json()) as { code: number; details: unknown[] };
    expect(body.code).toBe(3);
    expect(body.details[0]).toMatchObject({
      "@type": "type.googleapis.com/google.rpc.BadRequest",
      fieldViolations: [{ field: "id" }],
    });

    const anonymous = await fetch(url);
    expect(anonymous.status).toBe(401);
    expect(await anonymous.json()).toMatchObject({ code: 16, details: [] });
  });

  it("carries an x-request-id on every answer, the caller's own when it sends a sane one", async () => {
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    const etag = `"${image.sha256}"`;
    const answers: [string, Promise<Response>, number][] = [
      ["GET", fetch(url, { headers: auth }), 200],
      ["GET with Range", fetch(url, { headers: { ...auth, range: "bytes=0-9" } }), 206],
      ["GET with If-None-Match", fetch(url, { headers: { ...auth, "if-none-match": etag } }), 304],
      ["HEAD", fetch(url, { headers: auth, method: "HEAD" }), 200],
      ["GET without a key", fetch(url), 401],
      ["GET of an unknown id", fetch(`${base}/v1/images/999999999999/content`, { headers: auth }), 404],
      ["GET past the end", fetch(url, { headers: { ...auth, range: `bytes=${bytes.length}-` } }), 416],
    ];
    const ids = new Set<string>();
    for (const [what, answer, status] of answers) {
      const res = await answer;
      expect(res.status, what).toBe(status);
      expect(res.headers.get("x-request-id"), what).toMatch(uuid);
      ids.add(res.headers.get("x-request-id")!);
      await res.arrayBuffer();
    }
    expect(ids.size).toBe(answers.length);

    const own = await fetch(url, { headers: { ...auth, "x-request-id": "download-42" } });
    expect(own.headers.get("x-request-id")).toBe("download-42");
    const refused = await fetch(url, { headers: { "x-request-id": "download-43" } });
    expect(refused.status).toBe(401);
    expect(refused.headers.get("x-request-id")).toBe("download-43");
    // An id that could not go on a log line is replaced, not echoed.
    const odd = await fetch(url, { headers: { ...auth, "x-request-id": "a b" } });
    expect(odd.headers.get("x-request-id")).toMatch(uuid);
  });

  it("hides another account's private image as 404 and serves a public one with public caching", async () => {
    const other = await t.newAccount();
    const headers = { authorization: `Bearer ${other.key}` };
    const hidden = await fetch(url, { headers });
    expect(hidden.status).toBe(404);
    expect(await hidden.json()).toMatchObject({ code: 5 });

    const published = await uploadPublic(t, await distinctPng(41));
    const res = await fetch(`${base}/v1/images/${published.image.id}/content`, { headers });
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("public, max-age=3600, immutable");
    expect(Buffer.from(await res.arrayBuffer()).equals(published.bytes)).toBe(true);
  });
});

describe("GET /v1/images/{id}/content with anonymous reads on", () => {
  let t: TestApp;
  let base: string;
  // A small limit on a clock that only moves when told, so the limit is reached exactly.
  const clock = new ManualClock();
  beforeAll(async () => {
    t = await startTestApp({ anonymousRead: true, rateLimitPerMinute: 3 }, { clock });
    base = `http://127.0.0.1:${t.app.httpPort}`;
  });
  afterAll(async () => {
    await t?.close();
  });

  it("serves public images without a key and still hides private ones", async () => {
    const published = await uploadPublic(t, await distinctPng(42));
    const res = await fetch(`${base}/v1/images/${published.image.id}/content`);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(published.bytes)).toBe(true);

    const privateBytes = await distinctPng(43);
    const { image } = await t.client(ImageServiceDefinition).uploadImage({ content: privateBytes, index: false });
    const hidden = await fetch(`${base}/v1/images/${image!.id}/content`);
    expect(hidden.status).toBe(404);

    // One download is one call, although the bridge makes two gRPC calls for it: those two
    // reads took 2 of the 3 anonymous calls a minute allows, a third download takes the last,
    // and the next is refused with a retry delay.
    expect((await fetch(`${base}/v1/images/${published.image.id}/content`)).status).toBe(200);
    const limited = await fetch(`${base}/v1/images/${published.image.id}/content`);
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toBe("20");
    expect(limited.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(await limited.json()).toMatchObject({
      code: 8,
      details: [{ "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "20s" }],
    });
    clock.advance(20_000);
    expect((await fetch(`${base}/v1/images/${published.image.id}/content`, { method: "HEAD" })).status).toBe(200);
  });
});

describe("Range and conditional headers", () => {
  it("reads one range and ignores what it cannot honour", () => {
    expect(planRange(undefined, 100)).toEqual({ kind: "full" });
    expect(planRange("bytes=0-0", 100)).toEqual({ kind: "partial", start: 0, end: 0 });
    expect(planRange("bytes = 90 - 200", 100)).toEqual({ kind: "partial", start: 90, end: 99 });
    expect(planRange("bytes=-500", 100)).toEqual({ kind: "partial", start: 0, end: 99 });
    expect(planRange("BYTES=99-", 100)).toEqual({ kind: "partial", start: 99, end: 99 });
    // Unsatisfiable: starts at or past the end, or an empty suffix.
    expect(planRange("bytes=100-", 100)).toEqual({ kind: "unsatisfiable" });
    expect(planRange("bytes=-0", 100)).toEqual({ kind: "unsatisfiable" });
    // Ignored: malformed, backwards, another unit, several ranges.
    for (const header of ["bytes=5-2", "bytes=a-b", "bytes=-", "items=0-5", "bytes=0-1,5-6", "0-5"]) {
      expect(planRange(header, 100), header).toEqual({ kind: "full" });
    }
  });

  it("compares ETags weakly for If-None-Match and ignores If-Modified-Since beside it", () => {
    const etag = '"abc"';
    const at = new Date("2024-05-01T10:00:00.750Z");
    expect(notModified('W/"abc"', undefined, etag, at)).toBe(true);
    expect(notModified('"x", "abc"', undefined, etag, at)).toBe(true);
    expect(notModified('"abcd"', undefined, etag, at)).toBe(false);
    expect(notModified('"x"', at.toUTCString(), etag, at)).toBe(false);
    // One-second resolution: the header cannot say .750.
    expect(notModified(undefined, "Wed, 01 May 2024 10:00:00 GMT", etag, at)).toBe(true);
    expect(notModified(undefined, "Wed, 01 May 2024 09:59:59 GMT", etag, at)).toBe(false);
    expect(notModified(undefined, "not a date", etag, at)).toBe(false);
  });
});

async function uploadPublic(t: TestApp, bytes: Buffer): Promise<{ image: Image; bytes: Buffer }> {
  const { image } = await t
    .client(ImageServiceDefinition)
    .uploadImage({ content: bytes, index: false, visibility: Visibility.VISIBILITY_PUBLIC });
  return { image: image!, bytes };
}
