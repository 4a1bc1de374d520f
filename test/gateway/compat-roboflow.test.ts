import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { startTestApp, type TestAccount, type TestApp } from "../helpers/app.js";
import { startSearchTestApp } from "../helpers/search.js";
import { solidImage } from "../helpers/images.js";

/** The seed's example project, as in its example URL. */
const PROJECT_URL = "/compat/roboflow/my-workspace/my-project-name/search";

const IMAGES = {
  red: {
    colour: { r: 230, g: 20, b: 20 },
    tags: ["cam_x13"],
    annotations: { count: 0, classes: { whale: 1, fish: 4 }, boxes: [] },
    meta: { split: "train", dataset: "my-project-name", batch_id: "b1" },
  },
  darkred: {
    colour: { r: 150, g: 10, b: 10 },
    tags: ["cam_x13"],
    annotations: undefined,
    meta: { split: "valid", dataset: "my-project-name" },
  },
  green: {
    colour: { r: 20, g: 220, b: 30 },
    tags: [],
    annotations: { count: 0, classes: { tree: 1 }, boxes: [] },
    meta: { split: "train", dataset: "other-project", annotation_job_id: "job7" },
  },
  blue: { colour: { r: 20, g: 30, b: 230 }, tags: [], annotations: undefined, meta: { split: "test" } },
  yellow: { colour: { r: 235, g: 225, b: 20 }, tags: [], annotations: undefined, meta: undefined },
};
type Name = keyof typeof IMAGES;

interface ErrorBody {
  error: { message: string; type: string };
}

/** The JSON body of a response, read as `T` (an error body unless told otherwise). */
async function bodyOf<T = ErrorBody>(res: Response): Promise<T> {
  return (await res.json()) as T;
}

interface SearchPage {
  offset: number;
  total: number;
  results: Record<string, unknown>[];
}

describe("Roboflow-compatible search (seed 3)", () => {
  let t: TestApp;
  let account: TestAccount;
  let base: string;
  const ids = {} as Record<Name, string>;
  const startedAt = Date.now() / 1000;

  /** POSTs `body` (an object, or text sent as is) to the search route. */
  const post = (body: unknown, { key = account.key, url = PROJECT_URL } = {}) =>
    fetch(`${base}${url}${key === "" ? "" : `?api_key=${encodeURIComponent(key)}`}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
  const search = async (body: unknown): Promise<SearchPage> => {
    const res = await post(body);
    const json = await bodyOf<SearchPage>(res);
    expect(res.status, JSON.stringify(json)).toBe(200);
    return json;
  };
  const idsOf = (page: SearchPage) => page.results.map((r) => r.id);

  beforeAll(async () => {
    t = await startSearchTestApp();
    base = `http://127.0.0.1:${t.app.httpPort}`;
    account = await t.newAccount();
    const client = t.client(ImageServiceDefinition, account.key);
    let seed = 1;
    for (const [name, spec] of Object.entries(IMAGES) as [Name, (typeof IMAGES)[Name]][]) {
      const { image } = await client.uploadImage({
        content: await solidImage(64, 64, spec.colour, "png", seed++),
        fileName: `${name}.png`,
        tags: spec.tags,
        annotations: spec.annotations,
        meta: spec.meta,
        waitForIndex: true,
      });
      ids[name] = image!.id;
    }
  });
  afterAll(async () => {
    await t?.close();
  });

  it("answers the seed's example request, trailing comma included, with the default fields", async () => {
    // The seed's curl example, byte for byte except for a real image id.
    const body = `{
    "like_image": "${ids.red}",
    "in_dataset": true,
    "limit": 125,
}`;
    const page = await search(body);
    expect(Object.keys(page).sort()).toEqual(["offset", "results", "total"]);
    expect(page.offset).toBe(0);
    // in_dataset: true keeps the images of the URL's project; the like_image itself is left out.
    expect(page.total).toBe(1);
    expect(page.results).toHaveLength(1);
    const [result] = page.results;
    expect(Object.keys(result)).toEqual(["id", "created"]);
    expect(result.id).toBe(ids.darkred);
    expect(typeof result.created).toBe("number");
    expect(result.created as number).toBeGreaterThan(startedAt - 60);
    expect(result.created as number).toBeLessThanOrEqual(Date.now() / 1000 + 1);
  });

  it("answers the example's placeholder image id with a 404 in the error shape", async () => {
    const res = await post({ like_image: "image_id", in_dataset: true, limit: 125 });
    expect(res.status).toBe(404);
    const body = await bodyOf(res);
    expect(body.error.type).toBe("not_found");
    expect(body.error.message).toContain("like_image");
  });

  it("ranks by a prompt and fills every documented field when asked", async () => {
    const fields = ["id", "name", "annotations", "labels", "split", "tags", "owner", "embedding", "created"];
    const page = await search({ prompt: "red", fields });
    expect(page.total).toBe(5);
    expect(page.results.slice(0, 2).map((r) => r.id).sort()).toEqual([ids.red, ids.darkred].sort());
    for (const r of page.results) expect(Object.keys(r)).toEqual(fields);
    const red = page.results.find((r) => r.id === ids.red)!;
    expect(red.name).toBe("red.png");
    expect(red.annotations).toEqual({ count: 5, classes: { whale: 1, fish: 4 } });
    expect(red.labels).toEqual(["fish", "whale"]);
    expect(red.split).toBe("train");
    expect(red.tags).toEqual(["cam_x13"]);
    expect(red.owner).toBe(account.id);
    expect(Math.hypot(...(red.embedding as number[]))).toBeCloseTo(1, 5);
    expect(typeof red.created).toBe("number");
    const yellow = page.results.find((r) => r.id === ids.yellow)!;
    expect(yellow.split).toBeNull();
    expect(yellow.annotations).toEqual({ count: 0, classes: {} });
    expect(yellow.labels).toEqual([]);
  });

  it("orders by score, highest first, and offers the score as a field", async () => {
    const page = await search({ prompt: "blue", fields: ["id", "score"] });
    expect(page.results[0].id).toBe(ids.blue);
    const scores = page.results.map((r) => r.score as number);
    expect([...scores].sort((a, b) => b - a)).toEqual(scores);
    for (const s of scores) expect(s).toBeGreaterThanOrEqual(0), expect(s).toBeLessThanOrEqual(1);
    const floored = await search({ prompt: "blue", fields: ["id", "score"], threshold: scores[1] });
    expect(floored.results.every((r) => (r.score as number) >= scores[1])).toBe(true);
    expect(floored.total).toBe(floored.results.length);
  });

  it("pages with offset and limit over one ranking", async () => {
    const all = await search({ prompt: "yellow", limit: 5 });
    const page = await search({ prompt: "yellow", offset: 1, limit: 2 });
    expect(page.offset).toBe(1);
    expect(page.total).toBe(all.total);
    expect(idsOf(page)).toEqual(idsOf(all).slice(1, 3));
    const past = await search({ prompt: "yellow", offset: 5 });
    expect(past.results).toEqual([]);
    expect(past.total).toBe(5);
  });

  it("applies tag, class_name, in_dataset, batch and annotation job filters", async () => {
    const sorted = (page: SearchPage) => idsOf(page).sort();
    expect(sorted(await search({ prompt: "green", tag: "cam_x13" }))).toEqual([ids.red, ids.darkred].sort());
    expect(idsOf(await search({ prompt: "red", class_name: "tree" }))).toEqual([ids.green]);
    expect(idsOf(await search({ prompt: "red", in_dataset: "other-project" }))).toEqual([ids.green]);
    expect(sorted(await search({ prompt: "red", in_dataset: true }))).toEqual([ids.red, ids.darkred].sort());
    expect(idsOf(await search({ prompt: "green", batch: true }))).toEqual([ids.red]);
    expect(idsOf(await search({ prompt: "green", batch_id: "b1" }))).toEqual([ids.red]);
    expect(idsOf(await search({ prompt: "red", annotation_job: true }))).toEqual([ids.green]);
    expect(idsOf(await search({ prompt: "red", annotation_job_id: "job7" }))).toEqual([ids.green]);
    expect(idsOf(await search({ prompt: "red", split: "valid" }))).toEqual([ids.darkred]);
    // false, as the SDK always sends it, adds no condition.
    expect((await search({ prompt: "red", batch: false, annotation_job: false })).total).toBe(5);
  });

  it("replays the SDK's search_all payload", async () => {
    // What the seed's Python example sends, with a like_image that exists.
    const payload = {
      like_image: ids.red,
      prompt: "mug",
      offset: 0,
      limit: 100,
      tag: "tag",
      class_name: "class_name",
      in_dataset: true,
      batch: false,
      batch_id: "batch_id",
      annotation_job: false,
      annotation_job_id: "annotation_job_id",
      fields: ["id", "created", "name", "labels"],
    };
    expect(await search(payload)).toEqual({ offset: 0, total: 0, results: [] });
    const { class_name: _c, batch_id: _b, annotation_job_id: _a, ...open } = payload;
    const matching = await search({ ...open, tag: "cam_x13" });
    expect(matching.total).toBe(1);
    expect(matching.results[0]).toEqual({
      id: ids.darkred,
      created: expect.any(Number),
      name: "darkred.png",
      labels: [],
    });
  });

  it("lists the filtered catalogue, newest first, when there is no prompt or like_image", async () => {
    const page = await search({ tag: "cam_x13", fields: ["id", "name", "split"] });
    expect(page).toEqual({
      offset: 0,
      total: 2,
      results: [
        { id: ids.darkred, name: "darkred.png", split: "valid" },
        { id: ids.red, name: "red.png", split: "train" },
      ],
    });
    const second = await search({ offset: 1, limit: 1 });
    expect(second.total).toBe(5);
    expect(idsOf(second)).toEqual([ids.blue]);
    const res = await post({ fields: ["embedding"] });
    expect(res.status).toBe(400);
    expect((await bodyOf(res)).error.message).toContain("embedding");
  });

  it("takes the key from api_key or a header, and answers 401 without a valid one", async () => {
    const missing = await post({ prompt: "red" }, { key: "" });
    expect(missing.status).toBe(401);
    const missingBody = await bodyOf(missing);
    expect(missingBody).toEqual({ error: { message: expect.stringContaining("api_key"), type: "unauthorized" } });

    const bogus = await post({ prompt: "red" }, { key: "glk_not_a_real_key" });
    expect(bogus.status).toBe(401);
    expect((await bodyOf(bogus)).error.type).toBe("unauthorized");

    const header = await fetch(`${base}${PROJECT_URL}`, {
      method: "POST",
      headers: { "x-api-key": account.key, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "red", limit: 1 }),
    });
    expect(header.status).toBe(200);
    expect((await bodyOf<SearchPage>(header)).results).toHaveLength(1);
  });

  it("answers bad bodies with a 400 naming the field", async () => {
    const cases: [unknown, string][] = [
      ["{not json", "JSON"],
      [[1, 2], "object"],
      [{ prompt: "red", limit: 251 }, "limit"],
      [{ prompt: "red", limit: 0 }, "limit"],
      [{ prompt: "red", limit: "ten" }, "limit"],
      [{ prompt: "red", offset: -1 }, "offset"],
      [{ prompt: "red", fields: ["colour"] }, "fields"],
      [{ prompt: "red", fields: "id" }, "fields"],
      [{ prompt: 5 }, "prompt"],
      [{ like_image: { id: 1 } }, "like_image"],
      [{ prompt: "red", tag: ["a"] }, "tag"],
      [{ prompt: "red", batch: "yes" }, "batch"],
      [{ prompt: "red", in_dataset: 3 }, "in_dataset"],
      [{ prompt: "red", threshold: 2 }, "threshold"],
      [{ prompt: "x".repeat(2001) }, "prompt"],
    ];
    for (const [body, field] of cases) {
      const res = await post(body);
      const json = await bodyOf(res);
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(json.error.type).toBe("invalid_request");
      expect(json.error.message).toContain(field);
    }
  });

  it("refuses a like_image that is not indexed with a 400", async () => {
    const client = t.client(ImageServiceDefinition, account.key);
    const content = await solidImage(32, 32, { r: 1, g: 2, b: 3 });
    const { image } = await client.uploadImage({ content, index: false });
    const res = await post({ like_image: image!.id });
    expect(res.status).toBe(400);
    expect((await bodyOf(res)).error.message).toContain("not indexed");
  });
});

describe("Roboflow-compatible search without an embedding model", () => {
  let t: TestApp;
  let base: string;
  beforeAll(async () => {
    t = await startTestApp({ model: "clip-vit-b32", modelAutoPull: false, rateLimitPerMinute: 3 });
    base = `http://127.0.0.1:${t.app.httpPort}`;
  });
  afterAll(async () => {
    await t?.close();
  });

  it("answers a similarity search 503 with the reason, still lists by filter, and rate-limits with 429", async () => {
    const post = (body: unknown) =>
      fetch(`${base}${PROJECT_URL}?api_key=${t.adminKey}`, { method: "POST", body: JSON.stringify(body) });
    const res = await post({ prompt: "red" });
    expect(res.status).toBe(503);
    const body = await bodyOf(res);
    expect(body.error.type).toBe("unavailable");
    expect(body.error.message).toContain("glimpse model pull");

    const listed = await post({ tag: "anything" });
    expect(listed.status).toBe(200);
    expect(await bodyOf(listed)).toEqual({ offset: 0, total: 0, results: [] });

    // The third call of the minute is the last allowed; the fourth is refused.
    await post({ prompt: "red" });
    const limited = await post({ prompt: "red" });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect((await bodyOf(limited)).error.type).toBe("rate_limited");
  });
});
