import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TestApp } from "../helpers/app.js";
import { startSearchTestApp } from "../helpers/search.js";
import { solidImage } from "../helpers/images.js";

const COLOURS = {
  red: { r: 230, g: 20, b: 20 },
  darkred: { r: 150, g: 10, b: 10 },
  green: { r: 20, g: 220, b: 30 },
  blue: { r: 20, g: 30, b: 230 },
  yellow: { r: 235, g: 225, b: 20 },
};
type Name = keyof typeof COLOURS;

describe("search over HTTP with the test model", () => {
  let t: TestApp;
  let base: string;
  const ids = {} as Record<Name, string>;

  const post = (route: string, body: unknown) =>
    fetch(`${base}${route}`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.adminKey}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const get = (route: string) => fetch(`${base}${route}`, { headers: { authorization: `Bearer ${t.adminKey}` } });

  beforeAll(async () => {
    t = await startSearchTestApp();
    base = `http://127.0.0.1:${t.app.httpPort}`;
    let seed = 1;
    for (const [name, colour] of Object.entries(COLOURS) as [Name, (typeof COLOURS)[Name]][]) {
      const res = await post("/v1/images", {
        content: (await solidImage(64, 64, colour, "png", seed++)).toString("base64"),
        fileName: `${name}.png`,
        tags: [name.includes("red") ? "warm" : "other"],
        waitForIndex: true,
      });
      const { image } = (await res.json()) as any;
      expect(image.indexStatus).toBe("INDEX_STATUS_INDEXED");
      ids[name] = image.id;
    }
  });
  afterAll(async () => {
    await t?.close();
  });

  it("searches by prompt with POST, selecting fields", async () => {
    const res = await post("/v1/images:search", { prompt: "a red square", limit: 2, fields: ["id", "name", "created"] });
    expect(res.status).toBe(200);
    const body = (await res.json()) as any;
    expect(body).toMatchObject({ offset: 0, total: "5", totalIsLowerBound: false, embeddingModel: expect.any(String) });
    expect(body.results.map((r: any) => r.id).sort()).toEqual([ids.red, ids.darkred].sort());
    const first = body.results[0];
    expect(first.score).toBeGreaterThan(0.5);
    expect(first.name).toMatch(/red\.png$/);
    expect(first.created).toMatch(/Z$/);
    // Fields not selected keep their defaults; the unselected message field is null.
    expect(first).toMatchObject({ tags: [], labels: [], embedding: [], url: "", image: null, annotations: null });
  });

  it("searches with GET (the additional binding), filters from the query string", async () => {
    const res = await get(`/v1/images:search?prompt=${encodeURIComponent("red")}&filter.tags=other&limit=3`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as any;
    expect(body.results).toHaveLength(3);
    for (const r of body.results) expect([ids.green, ids.blue, ids.yellow]).toContain(r.id);
    const like = await get(`/v1/images:search?likeImageId=${ids.red}&limit=1`);
    expect(((await like.json()) as any).results[0].id).toBe(ids.darkred);
  });

  it("searches by an uploaded image as multipart/form-data", async () => {
    const form = new FormData();
    form.append("file", new Blob([await solidImage(40, 30, { r: 240, g: 235, b: 40 }, "jpeg")]), "query.jpg");
    form.append("limit", "1");
    const res = await fetch(`${base}/v1/images:search`, { method: "POST", headers: { authorization: `Bearer ${t.adminKey}` }, body: form });
    expect(res.status).toBe(200);
    expect(((await res.json()) as any).results[0].id).toBe(ids.yellow);
  });

  it("streams results as newline-delimited JSON, one {result} per line", async () => {
    // The route's body is the `search` field: the body is a SearchImagesRequest.
    const res = await post("/v1/images:streamSearch", { prompt: "blue", limit: 4, fields: ["id", "tags"] });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/x-ndjson");
    const text = await res.text();
    expect(text.endsWith("\n")).toBe(true);
    const lines = text.trimEnd().split("\n").map((l) => JSON.parse(l));
    expect(lines).toHaveLength(4);
    expect(lines.map((l) => l.result.rank)).toEqual([0, 1, 2, 3]);
    expect(lines[0].result.result).toMatchObject({ id: ids.blue, tags: ["other"] });
    for (const line of lines) expect(Object.keys(line)).toEqual(["result"]);
  });

  it("answers a stream that fails before its first message with that status and grpc-gateway's {error} chunk", async () => {
    const res = await post("/v1/images:streamSearch", { prompt: "blue", limit: 20_000 });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const body = (await res.json()) as any;
    expect(Object.keys(body)).toEqual(["error"]);
    expect(body.error.code).toBe(3);
    expect(body.error.details[0]["@type"]).toBe("type.googleapis.com/google.rpc.BadRequest");
    const noKey = await fetch(`${base}/v1/images:streamSearch`, { method: "POST", body: JSON.stringify({ prompt: "red" }) });
    expect(noKey.status).toBe(401);
    expect(((await noKey.json()) as any).error.code).toBe(16);
  });
});
