import { mkdtemp, readdir, rm, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import postgres from "postgres";
import sharp from "sharp";
import { ClientError, Status, type Client } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexStatus } from "../../src/gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition, type SearchImagesRequest } from "../../src/gen/glimpse/image/v1/image_service.js";
import { writeClipTestModel } from "../fixtures/clip-test-model.js";
import { startTestApp, type TestApp } from "../helpers/app.js";
import { solidImage } from "../helpers/images.js";

type ImageClient = Client<typeof ImageServiceDefinition>;

const COLOURS = {
  red: { r: 230, g: 20, b: 20 },
  darkred: { r: 150, g: 10, b: 10 },
  green: { r: 20, g: 220, b: 30 },
  blue: { r: 20, g: 30, b: 230 },
  yellow: { r: 235, g: 225, b: 20 },
  white: { r: 250, g: 250, b: 250 },
};
type Name = keyof typeof COLOURS;

/** A picture with structure (a gradient and a disc), so its perceptual hash means something. */
function pattern(size: number, format: "png" | "jpeg"): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 100 100">
    <defs><linearGradient id="g"><stop offset="0" stop-color="#203080"/><stop offset="1" stop-color="#e0c040"/></linearGradient></defs>
    <rect width="100" height="100" fill="url(#g)"/><circle cx="35" cy="60" r="22" fill="#f4f4f4"/></svg>`;
  return sharp(Buffer.from(svg))[format]().toBuffer();
}

async function expectCode(promise: Promise<unknown>, code: Status): Promise<ClientError> {
  const err = await promise.catch((e) => e);
  expect(err).toBeInstanceOf(ClientError);
  expect((err as ClientError).code, (err as ClientError).details).toBe(code);
  return err as ClientError;
}

describe("semantic search with the test model", () => {
  let modelDir: string;
  let t: TestApp;
  let client: ImageClient;
  const ids = {} as Record<Name, string>;

  const search = (request: Partial<SearchImagesRequest>) => client.searchImages(request);
  const prompt = (text: string, extra: Partial<SearchImagesRequest> = {}) =>
    search({ query: { $case: "prompt", value: text }, ...extra });

  beforeAll(async () => {
    modelDir = await mkdtemp(path.join(tmpdir(), "glimpse-test-model-"));
    await writeClipTestModel(modelDir);
    t = await startTestApp({ model: modelDir });
    client = t.client(ImageServiceDefinition);
    await t.app.searchReady;
    let seed = 1;
    for (const [name, colour] of Object.entries(COLOURS) as [Name, (typeof COLOURS)[Name]][]) {
      const { image } = await client.uploadImage({
        content: await solidImage(64, 64, colour, "png", seed++),
        fileName: `${name}.png`,
        tags: [name.includes("red") ? "warm" : "other", `colour:${name}`],
        annotations: name === "green" ? { count: 1, classes: { tree: 1 }, boxes: [] } : undefined,
        meta: { split: name === "blue" ? "valid" : "train" },
        waitForIndex: true,
      });
      expect(image!.indexStatus).toBe(IndexStatus.INDEX_STATUS_INDEXED);
      ids[name] = image!.id;
    }
  });
  afterAll(async () => {
    await t?.close();
    await rm(modelDir, { recursive: true, force: true });
  });

  it("ranks the images of the colour a prompt names first", async () => {
    const res = await prompt("a red square");
    expect(res.embeddingModel).toMatch(new RegExp(`^dir:${path.basename(modelDir)}:[0-9a-f]{12}$`));
    expect(res.results.slice(0, 2).map((r) => r.id).sort()).toEqual([ids.red, ids.darkred].sort());
    expect(Number(res.total)).toBe(6);
    const scores = res.results.map((r) => r.score);
    expect([...scores].sort((a, b) => b - a)).toEqual(scores);
    for (const s of scores) expect(s).toBeGreaterThanOrEqual(0), expect(s).toBeLessThanOrEqual(1);
    expect(scores[0]).toBeGreaterThan(0.95);

    const blue = await prompt("BLUE");
    expect(blue.results[0].id).toBe(ids.blue);
  });

  it("finds the closest colour to an existing image, leaving the image itself out", async () => {
    const res = await search({ query: { $case: "likeImageId", value: ids.red } });
    expect(res.results.map((r) => r.id)).not.toContain(ids.red);
    expect(res.results[0].id).toBe(ids.darkred);
    expect(Number(res.total)).toBe(5);
  });

  it("searches by raw image bytes without storing them", async () => {
    const before = Number((await t.app.sql`select count(*) as n from images`)[0].n);
    const res = await search({
      query: { $case: "likeImageContent", value: await solidImage(40, 30, { r: 240, g: 235, b: 40 }, "jpeg") },
    });
    expect(res.results[0].id).toBe(ids.yellow);
    expect(Number((await t.app.sql`select count(*) as n from images`)[0].n)).toBe(before);
  });

  it("applies the threshold to the score and counts what passes", async () => {
    const res = await prompt("red", { threshold: 0.9 });
    expect(res.results.map((r) => r.id).sort()).toEqual([ids.red, ids.darkred].sort());
    expect(res.results.every((r) => r.score >= 0.9)).toBe(true);
    // Unfiltered, HNSW scored only what it examined: a lower bound.
    expect(Number(res.total)).toBe(2);
    expect(res.totalIsLowerBound).toBe(true);
    // With a filter the planner scans every candidate: exact.
    const filtered = await prompt("red", { threshold: 0.9, filter: { tags: ["warm"] } as never });
    expect(Number(filtered.total)).toBe(2);
    expect(filtered.totalIsLowerBound).toBe(false);
    const none = await prompt("green", { threshold: 0.99, filter: { tags: ["warm"] } as never });
    expect(none.results).toEqual([]);
    expect(Number(none.total)).toBe(0);
  });

  it("applies the catalogue's filters and class names", async () => {
    const warm = await prompt("green", { filter: { tags: ["warm"] } as never });
    expect(warm.results.map((r) => r.id).sort()).toEqual([ids.red, ids.darkred].sort());
    expect(Number(warm.total)).toBe(2);
    const trees = await prompt("red", { filter: { className: "tree" } as never });
    expect(trees.results.map((r) => r.id)).toEqual([ids.green]);
  });

  it("pages with offset and limit over one ranking", async () => {
    const all = await prompt("yellow", { limit: 6 });
    const page = await prompt("yellow", { offset: 2, limit: 2 });
    expect(page.offset).toBe(2);
    expect(page.results.map((r) => r.id)).toEqual(all.results.slice(2, 4).map((r) => r.id));
  });

  it("fills only the selected fields", async () => {
    const plain = await prompt("green", { limit: 1 });
    expect(plain.results[0].created).toBeInstanceOf(Date);
    expect(plain.results[0].name).toBe("");
    expect(plain.results[0].embedding).toEqual([]);

    const rich = await prompt("green", {
      limit: 1,
      fields: ["id", "name", "labels", "split", "tags", "embedding", "url", "owner", "annotations"],
    });
    const r = rich.results[0];
    expect(r.id).toBe(ids.green);
    expect(r.name).toBe("green.png");
    expect(r.labels).toEqual(["tree"]);
    expect(r.split).toBe("train");
    expect(r.tags).toEqual(["other", "colour:green"]);
    expect(r.created).toBeUndefined();
    expect(r.url).toMatch(new RegExp(`/v1/images/${ids.green}/content$`));
    expect(r.owner).not.toBe("");
    expect(r.annotations?.classes).toEqual({ tree: 1 });
    const norm = Math.hypot(...r.embedding);
    expect(norm).toBeCloseTo(1, 5);
  });

  it("rejects bad requests naming the field", async () => {
    await expectCode(search({}), Status.INVALID_ARGUMENT);
    const unknown = await expectCode(prompt("red", { fields: ["colour"] }), Status.INVALID_ARGUMENT);
    expect(unknown.details).toContain("fields");
    expect((await expectCode(prompt("red", { threshold: 1.5 }), Status.INVALID_ARGUMENT)).details).toContain("threshold");
    expect((await expectCode(prompt("red", { limit: 251 }), Status.INVALID_ARGUMENT)).details).toContain("limit");
    expect((await expectCode(prompt("red", { ef: 5000 }), Status.INVALID_ARGUMENT)).details).toContain("ef");
    expect((await expectCode(prompt("x".repeat(2001)), Status.INVALID_ARGUMENT)).details).toContain("prompt");
    await expectCode(search({ query: { $case: "likeImageId", value: "999999" } }), Status.NOT_FOUND);
    await expectCode(
      search({ query: { $case: "likeImageContent", value: Buffer.from("not an image") } }),
      Status.INVALID_ARGUMENT,
    );
  });

  it("never searches images uploaded with index false, and says why like-image cannot use them", async () => {
    const { image } = await client.uploadImage({
      content: await solidImage(64, 64, { r: 255, g: 0, b: 0 }, "png", 99),
      index: false,
    });
    expect(image!.indexStatus).toBe(IndexStatus.INDEX_STATUS_NOT_INDEXED);
    const res = await prompt("red", { limit: 250 });
    expect(res.results.map((r) => r.id)).not.toContain(image!.id);
    const err = await expectCode(
      search({ query: { $case: "likeImageId", value: image!.id } }),
      Status.FAILED_PRECONDITION,
    );
    expect(err.details).toContain("not indexed");
  });

  it("indexes bytes first stored without indexing when they are uploaded again asking for it", async () => {
    const content = await solidImage(64, 64, { r: 10, g: 240, b: 240 }, "png", 123);
    const { image: first } = await client.uploadImage({ content, index: false });
    expect(first!.indexStatus).toBe(IndexStatus.INDEX_STATUS_NOT_INDEXED);
    // Without `index` set, a repeat returns the image as stored: still out of search.
    const { image: unset } = await client.uploadImage({ content, waitForIndex: true });
    expect(unset!.id).toBe(first!.id);
    expect(unset!.deduplicated).toBe(true);
    expect(unset!.indexStatus).toBe(IndexStatus.INDEX_STATUS_NOT_INDEXED);
    const { image: again } = await client.uploadImage({ content, index: true, waitForIndex: true });
    expect(again!.id).toBe(first!.id);
    expect(again!.deduplicated).toBe(true);
    expect(again!.indexStatus).toBe(IndexStatus.INDEX_STATUS_INDEXED);
    await client.deleteImage({ id: again!.id });
  });

  it("never returns a deleted image", async () => {
    const { image } = await client.uploadImage({
      content: await solidImage(64, 64, { r: 255, g: 5, b: 5 }, "png", 77),
      waitForIndex: true,
    });
    expect((await prompt("red", { limit: 1 })).results[0].id).toBe(image!.id);
    const before = Number((await prompt("red")).total);
    await client.deleteImage({ id: image!.id });
    const after = await prompt("red", { limit: 250 });
    expect(after.results.map((r) => r.id)).not.toContain(image!.id);
    // Gone from the index itself, not only hidden when results are loaded.
    expect(Number(after.total)).toBe(before - 1);
  });

  it("streams the same ranking in score order with ranks", async () => {
    const whole = await prompt("blue", { limit: 6, fields: ["id", "name"] });
    const streamed = [];
    for await (const message of client.streamSearchImages({
      search: { query: { $case: "prompt", value: "blue" }, limit: 6, fields: ["id", "name"] } as SearchImagesRequest,
    })) {
      streamed.push(message);
    }
    expect(streamed.map((m) => m.result!.id)).toEqual(whole.results.map((r) => r.id));
    expect(streamed.map((m) => m.rank)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(streamed[0].result!.name).toBe("blue.png");
  });

  it("stops a stream the client abandons", async () => {
    const controller = new AbortController();
    const seen: unknown[] = [];
    const err = await (async () => {
      for await (const message of client.streamSearchImages(
        { search: { query: { $case: "prompt", value: "red" }, limit: 6 } as SearchImagesRequest },
        { signal: controller.signal },
      )) {
        seen.push(message);
        controller.abort();
      }
    })().catch((e) => e);
    expect(seen).toHaveLength(1);
    expect((err as Error).name).toBe("AbortError");
    // The server is fine afterwards.
    expect((await prompt("red", { limit: 1 })).results).toHaveLength(1);
  });

  it("finds near-duplicates by perceptual hash and embedding", async () => {
    const { image: original } = await client.uploadImage({ content: await pattern(96, "png"), waitForIndex: true });
    const { image: copy } = await client.uploadImage({ content: await pattern(160, "jpeg"), waitForIndex: true });
    const { duplicates } = await client.findDuplicates({ imageId: original!.id });
    const found = duplicates.find((d) => d.imageId === copy!.id);
    expect(found).toBeDefined();
    expect(found!.hammingDistance).toBeLessThanOrEqual(10);
    expect(found!.score).toBeGreaterThan(0.99);
    expect(found!.image?.id).toBe(copy!.id);
    expect(duplicates.map((d) => d.imageId)).not.toContain(original!.id);
    // Hamming distance orders the answer, closest first.
    const distances = duplicates.map((d) => d.hammingDistance);
    expect([...distances].sort((a, b) => a - b)).toEqual(distances);

    const strict = await client.findDuplicates({ imageId: original!.id, maxHammingDistance: 0, minScore: 1 });
    for (const d of strict.duplicates) expect(d.hammingDistance === 0 || (d.score ?? 0) >= 1).toBe(true);
    const err = await expectCode(
      client.findDuplicates({ imageId: original!.id, maxHammingDistance: 65 }),
      Status.INVALID_ARGUMENT,
    );
    expect(err.details).toContain("max_hamming_distance");
  });

  it("gives the same results after a restart, and heals changes the index never saw", async () => {
    const before = await prompt("white", { limit: 10 });
    const dataDir = t.app.options.dataDir;
    const db = t.db;
    // Keep the database and the data directory: stop the app only.
    await t.app.stop();
    t.channel.close();

    // While it is down, the database changes under it (as after a crash between commit and
    // index update): one image's vector goes away, another image appears indexed.
    const ghost = "7000000000000000001";
    const sql = postgres(db.url);
    await sql`delete from images where id = ${ids.yellow}`;
    await sql`
      insert into images (id, owner_id, sha256, file_name, media_type, width, height, byte_size, index_status)
      select ${ghost}, owner_id, ${"f".repeat(64)}, 'ghost.png', media_type, width, height, byte_size, 2
      from images where id = ${ids.white}`;
    await sql`
      insert into embeddings (image_id, model_id, dimension, vector)
      select ${ghost}, model_id, dimension, vector from embeddings where image_id = ${ids.white}`;
    await sql.end();

    const restarted = await startTestApp({ model: modelDir, dataDir }, {}, db);
    const oldT = t;
    t = { ...restarted, close: async () => { await restarted.close(); await oldT.close().catch(() => undefined); } };
    client = t.client(ImageServiceDefinition);
    await t.app.searchReady;
    const after = await prompt("white", { limit: 10 });
    // The insert reached the index (it can only be found through it), the delete too (the
    // total counts the index's images), and everything else ranks and scores as before.
    expect(after.results[0].id === ghost || after.results[1].id === ghost).toBe(true);
    expect(after.results.find((r) => r.id === ghost)!.score).toBe(before.results[0].score);
    expect(Number(after.total)).toBe(Number(before.total));
    const kept = after.results.filter((r) => r.id !== ghost);
    expect(kept.map((r) => r.id)).toEqual(before.results.map((r) => r.id).filter((id) => id !== ids.yellow));
    expect(kept.map((r) => r.score)).toEqual(before.results.filter((r) => r.id !== ids.yellow).map((r) => r.score));
    const snapshots = await readdir(path.join(dataDir, "index"));
    expect(snapshots.length).toBeGreaterThan(0);
  });
});

describe("search index recovery", () => {
  let modelDir: string;
  beforeAll(async () => {
    modelDir = await mkdtemp(path.join(tmpdir(), "glimpse-test-model-"));
    await writeClipTestModel(modelDir);
  });
  afterAll(async () => {
    await rm(modelDir, { recursive: true, force: true });
  });

  it("rebuilds from the database when the snapshot is corrupt, and re-embeds on a model change", async () => {
    const first = await startTestApp({ model: modelDir });
    const dataDir = first.app.options.dataDir;
    let client = first.client(ImageServiceDefinition);
    await first.app.searchReady;
    const uploaded: string[] = [];
    for (const [i, colour] of [COLOURS.red, COLOURS.green, COLOURS.blue].entries()) {
      const { image } = await client.uploadImage({ content: await solidImage(32, 32, colour, "png", i + 1), waitForIndex: true });
      uploaded.push(image!.id);
    }
    const query = { query: { $case: "prompt" as const, value: "green" }, fields: ["id", "embedding"] };
    const before = await client.searchImages(query);
    await first.app.stop();
    first.channel.close();

    // Damage the snapshot's graph file.
    const [snapshots] = (await readdir(path.join(dataDir, "index"))).filter((d) => d.startsWith(`dir_${path.basename(modelDir)}_`));
    const dir = path.join(dataDir, "index", snapshots);
    const graph = (await readdir(dir)).find((f) => f.endsWith(".hnsw"))!;
    await truncate(path.join(dir, graph), 10);
    const second = await startTestApp({ model: modelDir, dataDir }, {}, first.db);
    client = second.client(ImageServiceDefinition);
    await second.app.searchReady;
    const rebuilt = await client.searchImages(query);
    expect(rebuilt.results.map((r) => [r.id, r.score])).toEqual(before.results.map((r) => [r.id, r.score]));
    await second.app.stop();
    second.channel.close();

    // Another model (16 dimensions) put in place of the first one's files: it is told apart by
    // its files, and every image is embedded again, nothing mixed.
    const firstModel = before.embeddingModel;
    await rm(modelDir, { recursive: true, force: true });
    await writeClipTestModel(modelDir, { plain: true, dimension: 16 });
    const third = await startTestApp({ model: modelDir, dataDir }, {}, first.db);
    client = third.client(ImageServiceDefinition);
    await third.app.searchReady;
    for (const id of uploaded) {
      for (let i = 0; i < 200; i++) {
        const { image } = await client.getImage({ id });
        if (image!.indexStatus === IndexStatus.INDEX_STATUS_INDEXED) break;
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    // Indexed in the tables; the index follows the log (NOTIFY), caught up here.
    await third.app.searchCatchUp();
    const switched = await client.searchImages(query);
    expect(switched.embeddingModel).not.toBe(firstModel);
    expect(switched.embeddingModel).toMatch(new RegExp(`^dir:${path.basename(modelDir)}:`));
    expect(switched.results[0].id).toBe(uploaded[1]);
    expect(switched.results[0].embedding).toHaveLength(16);
    const models = await third.app.sql`select distinct model_id, dimension from embeddings`;
    expect(models.map((m) => [m.model_id, m.dimension])).toEqual([[switched.embeddingModel, 16]]);
    await third.close();
    await first.close().catch(() => undefined);
  });

  it("serves the catalogue without a model, refuses search with the reason, and keeps uploads pending", async () => {
    const t = await startTestApp({ model: "clip-vit-b32", modelAutoPull: false });
    try {
      const client = t.client(ImageServiceDefinition);
      const err = await expectCode(
        client.searchImages({ query: { $case: "prompt", value: "red" } }),
        Status.FAILED_PRECONDITION,
      );
      expect(err.details).toContain("glimpse model pull clip-vit-b32");
      const { image } = await client.uploadImage({ content: await solidImage(32, 32, COLOURS.red) });
      expect(image!.indexStatus).toBe(IndexStatus.INDEX_STATUS_PENDING);
      const count = Number((await t.app.sql`select count(*) as n from images`)[0].n);
      await expectCode(
        client.uploadImage({ content: await solidImage(32, 32, COLOURS.green), waitForIndex: true }),
        Status.FAILED_PRECONDITION,
      );
      expect(Number((await t.app.sql`select count(*) as n from images`)[0].n)).toBe(count);
    } finally {
      await t.close();
    }
  });
});
