import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccountServiceDefinition } from "../../src/gen/glimpse/account/v1/account_service.js";
import { ImageServiceDefinition, type SearchImagesRequest } from "../../src/gen/glimpse/image/v1/image_service.js";
import { Visibility } from "../../src/gen/glimpse/image/v1/image.js";
import { startTestApp, type TestAccount, type TestApp } from "../helpers/app.js";
import { solidImage } from "../helpers/images.js";
import { startSearchTestApp } from "../helpers/search.js";
import { has, parseExposition, total, type Sample } from "./exposition.js";

const IMAGE_SERVICE = "glimpse.image.v1.ImageService";

async function scrape(url: string): Promise<Sample[]> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseExposition(await res.text());
}

describe("GET /metrics on the HTTP port, after real calls", () => {
  let t: TestApp & { modelDir: string };
  let base: string;
  let owner: TestAccount;
  const ids: string[] = [];
  const metrics = () => scrape(`${base}/metrics`);
  /** How much a sum of samples grew while `work` ran. */
  async function growth(work: () => Promise<unknown>, name: string, labels: Record<string, string> = {}) {
    const before = total(await metrics(), name, labels);
    await work();
    return total(await metrics(), name, labels) - before;
  }

  beforeAll(async () => {
    t = await startSearchTestApp();
    base = `http://127.0.0.1:${t.app.httpPort}`;
    owner = await t.newAccount({ username: "painter" });
    const client = t.client(ImageServiceDefinition, owner.key);
    const colours = [
      { r: 230, g: 20, b: 20 },
      { r: 20, g: 220, b: 30 },
      { r: 20, g: 30, b: 230 },
    ];
    for (const [i, colour] of colours.entries()) {
      const { image } = await client.uploadImage({
        content: await solidImage(32, 32, colour, "png", i + 1),
        tags: i === 0 ? ["warm"] : ["cool"],
        visibility: Visibility.VISIBILITY_PUBLIC,
        waitForIndex: true,
      });
      ids.push(image!.id);
    }
  });
  afterAll(async () => {
    await t?.close();
  });

  it("counts calls by service, method, transport and status code, with a latency histogram", async () => {
    const client = t.client(ImageServiceDefinition);
    const before = await metrics();
    for (const id of ids) await client.getImage({ id });
    await expect(client.getImage({ id: "12345" })).rejects.toThrow(/NOT_FOUND|not found/i);
    const headers = { authorization: `Bearer ${t.adminKey}` };
    for (const id of ids.slice(0, 2)) expect((await fetch(`${base}/v1/images/${id}`, { headers })).status).toBe(200);
    expect((await fetch(`${base}/v1/images/12345`, { headers })).status).toBe(404);
    const after = await metrics();

    const grew = (name: string, labels: Record<string, string>) => total(after, name, labels) - total(before, name, labels);
    const getImage = { service: IMAGE_SERVICE, method: "GetImage" };
    expect(grew("glimpse_calls_total", { ...getImage, transport: "grpc", code: "OK" })).toBe(3);
    expect(grew("glimpse_calls_total", { ...getImage, transport: "grpc", code: "NOT_FOUND" })).toBe(1);
    expect(grew("glimpse_calls_total", { ...getImage, transport: "http", code: "OK" })).toBe(2);
    expect(grew("glimpse_calls_total", { ...getImage, transport: "http", code: "NOT_FOUND" })).toBe(1);
    expect(grew("glimpse_call_duration_seconds_count", { ...getImage, transport: "grpc" })).toBe(4);
    expect(grew("glimpse_call_duration_seconds_bucket", { ...getImage, transport: "http", le: "+Inf" })).toBe(3);
    expect(grew("glimpse_call_duration_seconds_sum", { ...getImage, transport: "grpc" })).toBeGreaterThan(0);
    // Nothing is left counted as running once the calls are answered.
    expect(total(after, "glimpse_calls_in_flight", getImage)).toBe(0);
    expect(total(after, "glimpse_uploads_in_flight")).toBe(0);
    // Uploads went through the same counters.
    expect(total(after, "glimpse_calls_total", { method: "UploadImage", transport: "grpc", code: "OK" })).toBe(3);
  });

  it("splits search time by stage and by planner path", async () => {
    const search = (request: Partial<SearchImagesRequest>, key?: string) =>
      t.client(ImageServiceDefinition, key).searchImages({ query: { $case: "prompt", value: "red" }, limit: 10, ...request } as SearchImagesRequest);
    const before = await metrics();
    // An admin without a filter: plain HNSW; "labels" needs the image rows (a hydrate query).
    expect((await search({ fields: ["id", "labels"] })).results.length).toBe(3);
    // An ordinary key with a tag filter: candidates from the filter index, then an exact scan.
    const warm = await search({ filter: { tags: ["warm"] } as never }, owner.key);
    expect(warm.results.map((r) => r.id)).toEqual([ids[0]]);
    // And over HTTP.
    const res = await fetch(`${base}/v1/images:search`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.adminKey}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "blue", limit: 2 }),
    });
    expect(res.status).toBe(200);
    const after = await metrics();
    const grew = (name: string, labels: Record<string, string>) => total(after, name, labels) - total(before, name, labels);

    expect(grew("glimpse_search_stage_duration_seconds_count", { stage: "embed" })).toBe(3);
    expect(grew("glimpse_search_stage_duration_seconds_count", { stage: "rank" })).toBe(3);
    expect(grew("glimpse_search_stage_duration_seconds_count", { stage: "hydrate" })).toBe(3);
    expect(grew("glimpse_search_stage_duration_seconds_count", { stage: "candidates" })).toBe(1);
    // The graph was walked by the two unfiltered searches (the filtered one scanned exactly).
    expect(grew("glimpse_search_stage_duration_seconds_count", { stage: "walk" })).toBe(2);
    expect(grew("glimpse_search_stage_duration_seconds_sum", { stage: "walk" })).toBeGreaterThan(0);
    expect(grew("glimpse_search_duration_seconds_count", { plan: "hnsw" })).toBe(2);
    expect(grew("glimpse_search_duration_seconds_count", { plan: "exact" })).toBe(1);
    expect(grew("glimpse_calls_total", { method: "SearchImages", transport: "http", code: "OK" })).toBe(1);
    expect(grew("glimpse_calls_total", { method: "SearchImages", transport: "grpc", code: "OK" })).toBe(2);
    // The prompts ran the text tower: one model run each (batches of one, here).
    expect(grew("glimpse_embed_batch_size_count", {})).toBe(3);
    expect(grew("glimpse_embed_run_duration_seconds_count", {})).toBe(3);
  });

  it("shows the index, the embedding queue, the upload budget, reservations, and Node's own metrics", async () => {
    await t.app.searchCatchUp();
    const samples = await metrics();
    expect(total(samples, "glimpse_index_vectors")).toBe(3);
    expect(total(samples, "glimpse_index_deleted_slots")).toBe(0);
    expect(total(samples, "glimpse_index_log_lag")).toBe(0);
    expect(total(samples, "glimpse_index_unsnapshotted_changes")).toBeGreaterThan(0);
    expect(total(samples, "glimpse_embed_queue_depth")).toBe(0);
    expect(total(samples, "glimpse_upload_bytes_in_flight")).toBe(0);
    expect(total(samples, "glimpse_upload_bytes_limit")).toBe(t.app.options.maxUploadBytesInFlight);
    expect(total(samples, "glimpse_credit_reservations_open")).toBe(0);
    // Indexing the uploads ran the vision tower.
    expect(total(samples, "glimpse_embed_batch_size_count")).toBeGreaterThanOrEqual(3);
    for (const name of [
      "nodejs_eventloop_lag_p99_seconds",
      "nodejs_gc_duration_seconds_count",
      "process_cpu_user_seconds_total",
      "process_resident_memory_bytes",
      "nodejs_heap_size_used_bytes",
    ]) {
      expect(has(samples, name), name).toBe(true);
    }

    // A deleted image leaves a free slot in the index.
    await t.client(ImageServiceDefinition).deleteImage({ id: ids[2] });
    await t.app.searchCatchUp();
    const later = await metrics();
    expect(total(later, "glimpse_index_vectors")).toBe(2);
    expect(total(later, "glimpse_index_deleted_slots")).toBe(1);
  });

  it("counts rate-limit refusals over both transports", async () => {
    const { secret } = await t.client(AccountServiceDefinition, owner.key).createApiKey({ name: "slow", rateLimitPerMinute: 1 });
    const client = t.client(ImageServiceDefinition, secret);
    const refusals = await growth(async () => {
      await client.getImage({ id: ids[0] });
      await expect(client.getImage({ id: ids[0] })).rejects.toThrow(/RESOURCE_EXHAUSTED|rate limit/i);
      const res = await fetch(`${base}/v1/images/${ids[0]}`, { headers: { authorization: `Bearer ${secret}` } });
      expect(res.status).toBe(429);
    }, "glimpse_rate_limit_refusals_total", { caller: "key" });
    expect(refusals).toBe(2);
  });
});

describe("where /metrics is served", () => {
  let own: TestApp | undefined;
  let off: TestApp | undefined;
  afterAll(async () => {
    await own?.close();
    await off?.close();
  });

  it("serves it on an address of its own when GLIMPSE_METRICS_ADDRESS is set, and not on the HTTP port", async () => {
    own = await startTestApp({ metricsAddress: { host: "127.0.0.1", port: 0 } });
    expect(own.app.metricsPort).toBeGreaterThan(0);
    await own.client(ImageServiceDefinition).listImages({});
    const samples = await scrape(`http://127.0.0.1:${own.app.metricsPort}/metrics`);
    expect(total(samples, "glimpse_calls_total", { method: "ListImages", transport: "grpc", code: "OK" })).toBe(1);
    expect((await fetch(`http://127.0.0.1:${own.app.httpPort}/metrics`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${own.app.metricsPort}/other`)).status).toBe(404);
  });

  it("answers 404 with GLIMPSE_METRICS=off", async () => {
    off = await startTestApp({ metrics: false });
    expect(off.app.metricsPort).toBeUndefined();
    expect((await fetch(`http://127.0.0.1:${off.app.httpPort}/metrics`)).status).toBe(404);
  });
});
