import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexStatus } from "../../src/gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { startTestApp, type TestAccount, type TestApp } from "../helpers/app.js";
import { startSearchTestApp } from "../helpers/search.js";
import { solidImage } from "../helpers/images.js";

const UPLOAD = "/compat/reka/v1/images/upload";
const SEARCH = "/compat/reka/v1/images/search";

type Colour = { r: number; g: number; b: number };
const RED = { r: 230, g: 20, b: 20 };
const CYAN = { r: 20, g: 230, b: 230 };

interface UploadResult {
  image_id: string;
  image_url: string;
  indexing_status: number;
  upload_timestamp: number;
  image_metadata: Record<string, unknown>;
}
interface SearchResult {
  image_id: string;
  image_url: string;
  score: number;
  upload_timestamp: number;
  image_metadata: Record<string, unknown>;
}

interface ErrorBody {
  error: { type: string; message: string; param?: string };
}

/** The JSON body of a response, read as `T` (an error body unless told otherwise). */
async function bodyOf<T = ErrorBody>(res: Response): Promise<T> {
  return (await res.json()) as T;
}

let seed = 1000;
/** A PNG file part of `colour`, distinct from every other one. */
async function png(colour: Colour): Promise<Blob> {
  return new Blob([await solidImage(48, 48, colour, "png", seed++)], { type: "image/png" });
}

/** Calls to the Reka surface at `base`, sending `key` unless a call brings its own headers. */
function rekaClient(base: () => string, key: () => string) {
  const upload = (form: FormData, headers: Record<string, string> = { "x-api-key": key() }) =>
    fetch(`${base()}${UPLOAD}`, { method: "POST", headers, body: form });
  const search = (body: unknown, headers: Record<string, string> = { "x-api-key": key() }) =>
    fetch(`${base()}${SEARCH}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
  return { upload, search };
}

async function expectError(res: Response, status: number, type: string, param?: string): Promise<string> {
  const body = await bodyOf(res);
  expect(res.status, JSON.stringify(body)).toBe(status);
  expect(body.error.type).toBe(type);
  expect(typeof body.error.message).toBe("string");
  if (param === undefined) expect(body.error.param).toBeUndefined();
  else expect(body.error.param).toBe(param);
  return body.error.message as string;
}

describe("Reka-compatible upload and search (seed 4)", () => {
  let t: TestApp;
  let account: TestAccount;
  let base: string;
  const api = rekaClient(
    () => base,
    () => account.key,
  );

  const uploadOk = async (form: FormData): Promise<UploadResult[]> => {
    const res = await api.upload(form);
    const body = await bodyOf<{ results: UploadResult[] }>(res);
    expect(res.status, JSON.stringify(body)).toBe(200);
    return body.results;
  };
  const searchOk = async (body: unknown): Promise<SearchResult[]> => {
    const res = await api.search(body);
    const json = await bodyOf<{ results: SearchResult[] }>(res);
    expect(res.status, JSON.stringify(json)).toBe(200);
    expect(Object.keys(json)).toEqual(["results"]);
    return json.results;
  };

  beforeAll(async () => {
    t = await startSearchTestApp();
    base = `http://127.0.0.1:${t.app.httpPort}`;
    account = await t.newAccount();
  });
  afterAll(async () => {
    await t?.close();
  });

  let red: UploadResult;
  let cyan: UploadResult;

  it("uploads with index=true and answers once the image is searchable", async () => {
    const form = new FormData();
    form.append("images", await png(RED), "red-car.png");
    form.append("index", "true");
    const before = Date.now() / 1000;
    const [result, ...rest] = await uploadOk(form);
    expect(rest).toEqual([]);
    expect(Object.keys(result).sort()).toEqual(
      ["image_id", "image_metadata", "image_url", "indexing_status", "upload_timestamp"].sort(),
    );
    expect(result.image_id).toMatch(/^[1-9][0-9]*$/);
    expect(result.image_url).toBe(`${base}/v1/images/${result.image_id}/content`);
    expect(result.indexing_status).toBe(2);
    expect(result.upload_timestamp).toBeGreaterThan(before - 60);
    expect(result.upload_timestamp).toBeLessThanOrEqual(Date.now() / 1000 + 1);
    expect(result.image_metadata).toEqual({});
    red = result;

    // Searchable at once: no polling.
    const [first] = await searchOk({ query: "a red car" });
    expect(first.image_id).toBe(red.image_id);
    const { image } = await t.client(ImageServiceDefinition, account.key).getImage({ id: red.image_id });
    expect(image!.indexStatus).toBe(IndexStatus.INDEX_STATUS_INDEXED);
    expect(image!.fileName).toBe("red-car.png");
  });

  it("uploads several files in one request, with Reka's per-file metadata", async () => {
    const form = new FormData();
    form.append("images", await png(CYAN), "cyan.png");
    form.append("images", await png({ r: 240, g: 60, b: 40 }), "orange-ish.png");
    form.append(
      "metadata",
      JSON.stringify({
        requests: [
          { indexing_config: { index: true }, metadata: { camera_id: "cam-1" } },
          { indexing_config: { index: false }, metadata: {} },
        ],
      }),
    );
    const results = await uploadOk(form);
    expect(results.map((r) => r.indexing_status)).toEqual([2, 0]);
    expect(results[0].image_metadata).toEqual({ camera_id: "cam-1" });
    cyan = results[0];
    const notIndexed = results[1].image_id;
    const found = await searchOk({ query: "red", max_results: 250 });
    expect(found.map((r) => r.image_id)).not.toContain(notIndexed);
    expect(found.find((r) => r.image_id === cyan.image_id)?.image_metadata).toEqual({ camera_id: "cam-1" });
  });

  it("does not index an upload without index=true, or with index=false", async () => {
    for (const index of [undefined, "false"]) {
      const form = new FormData();
      form.append("images", await png({ r: 250, g: 0, b: 0 }), "plain.png");
      if (index) form.append("index", index);
      const [result] = await uploadOk(form);
      expect(result.indexing_status).toBe(0);
      const found = await searchOk({ query: "red", max_results: 250 });
      expect(found.map((r) => r.image_id)).not.toContain(result.image_id);
    }
  });

  it("answers the seed's example search: image_id, image_url and score, ranked, above the threshold", async () => {
    const results = await searchOk({ query: "a red car", max_results: 10, threshold: 0.5 });
    expect(results.length).toBeGreaterThan(0);
    expect(results.length).toBeLessThanOrEqual(10);
    expect(results[0].image_id).toBe(red.image_id);
    expect(results[0].image_url).toBe(red.image_url);
    for (const r of results) {
      expect(typeof r.image_id).toBe("string");
      expect(r.image_url).toBe(`${base}/v1/images/${r.image_id}/content`);
      expect(typeof r.score).toBe("number");
      expect(r.score).toBeGreaterThanOrEqual(0.5);
      expect(r.score).toBeLessThanOrEqual(1);
      expect(typeof r.upload_timestamp).toBe("number");
    }
    const scores = results.map((r) => r.score);
    expect([...scores].sort((a, b) => b - a)).toEqual(scores);
    // Cyan is red's opposite: under the threshold, so left out; without one it comes last.
    expect(results.map((r) => r.image_id)).not.toContain(cyan.image_id);
    const all = await searchOk({ query: "a red car" });
    const last = all[all.length - 1];
    expect(last.image_id).toBe(cyan.image_id);
    expect(last.score).toBeLessThan(0.5);
  });

  it("returns at most max_results, 10 by default", async () => {
    const form = new FormData();
    for (let i = 0; i < 10; i++) {
      form.append("images", await png({ r: 20 * i, g: 100, b: 200 - 10 * i }), `batch-${i}.png`);
    }
    form.append("index", "true");
    const uploaded = await uploadOk(form);
    expect(uploaded).toHaveLength(10);
    expect(uploaded.every((r) => r.indexing_status === 2)).toBe(true);
    expect(await searchOk({ query: "blue" })).toHaveLength(10);
    expect(await searchOk({ query: "blue", max_results: 3 })).toHaveLength(3);
    expect((await searchOk({ query: "blue", max_results: 50 })).length).toBe(12);
  });

  it("answers 401 in Reka's error shape without a valid key", async () => {
    const bogus = { "x-api-key": "glk_not_a_real_key" };
    const form = new FormData();
    form.append("images", await png(RED), "x.png");
    form.append("index", "true");
    await expectError(await api.upload(form, {}), 401, "authentication_error");
    await expectError(await api.upload(form, bogus), 401, "authentication_error");
    await expectError(await api.search({ query: "red" }, {}), 401, "authentication_error");
    await expectError(await api.search({ query: "red" }, bogus), 401, "authentication_error");
    // Bearer works as well, as Reka documents.
    const bearer = await api.search({ query: "red", max_results: 1 }, { authorization: `Bearer ${account.key}` });
    expect(bearer.status).toBe(200);
  });

  it("answers bad search bodies with a 400 validation_error naming the parameter", async () => {
    await expectError(await api.search("{oops"), 400, "validation_error");
    await expectError(await api.search([1]), 400, "validation_error");
    await expectError(await api.search({}), 400, "validation_error", "query");
    await expectError(await api.search({ query: "  " }), 400, "validation_error", "query");
    await expectError(await api.search({ query: 7 }), 400, "validation_error", "query");
    await expectError(await api.search({ query: "red", max_results: 0 }), 400, "validation_error", "max_results");
    await expectError(await api.search({ query: "red", max_results: "10" }), 400, "validation_error", "max_results");
    await expectError(await api.search({ query: "red", max_results: 251 }), 400, "validation_error", "max_results");
    await expectError(await api.search({ query: "red", threshold: 1.5 }), 400, "validation_error", "threshold");
    await expectError(await api.search({ query: "red", threshold: "high" }), 400, "validation_error", "threshold");
    await expectError(await api.search({ query: "x".repeat(2001) }), 400, "validation_error", "query");
  });

  it("answers bad uploads with a 400 validation_error", async () => {
    const empty = new FormData();
    empty.append("index", "true");
    await expectError(await api.upload(empty), 400, "validation_error", "images");

    const badIndex = new FormData();
    badIndex.append("images", await png(RED), "x.png");
    badIndex.append("index", "maybe");
    await expectError(await api.upload(badIndex), 400, "validation_error", "index");

    const badMetadata = new FormData();
    badMetadata.append("images", await png(RED), "x.png");
    badMetadata.append("metadata", "{not json");
    await expectError(await api.upload(badMetadata), 400, "validation_error", "metadata");

    const notAnImage = new FormData();
    notAnImage.append("images", new Blob(["hello"], { type: "image/png" }), "fake.png");
    notAnImage.append("index", "true");
    await expectError(await api.upload(notAnImage), 400, "validation_error", "images");

    const json = await fetch(`${base}${UPLOAD}`, {
      method: "POST",
      headers: { "x-api-key": account.key, "content-type": "application/json" },
      body: JSON.stringify({ images: [] }),
    });
    await expectError(json, 400, "validation_error");
  });
});

describe("Reka-compatible surface without an embedding model", () => {
  let t: TestApp;
  let base: string;
  const api = rekaClient(
    () => base,
    () => t.adminKey,
  );
  beforeAll(async () => {
    t = await startTestApp({ model: "clip-vit-b32", modelAutoPull: false, rateLimitPerMinute: 4 });
    base = `http://127.0.0.1:${t.app.httpPort}`;
  });
  afterAll(async () => {
    await t?.close();
  });

  it("stores an index=true upload as in progress, answers search 503, and rate-limits with 429", async () => {
    const form = new FormData();
    form.append("images", await png(RED), "red.png");
    form.append("index", "true");
    // One request, one call of the four a minute allows, although the bridge makes two gRPC
    // calls for it (a refused wait and a plain upload).
    const uploaded = await api.upload(form);
    const body = await bodyOf<{ results: UploadResult[] }>(uploaded);
    expect(uploaded.status, JSON.stringify(body)).toBe(200);
    expect(body.results[0].indexing_status).toBe(1);

    const message = await expectError(await api.search({ query: "a red car" }), 503, "server_error");
    expect(message).toContain("glimpse model pull");

    await api.search({ query: "red" });
    await api.search({ query: "red" });
    const limited = await api.search({ query: "red" });
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    await expectError(limited, 429, "rate_limit_error");
  });
});
