import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageServiceDefinition, type SearchImagesRequest } from "../../src/gen/glimpse/image/v1/image_service.js";
import { Visibility } from "../../src/gen/glimpse/image/v1/image.js";
import { createLogger } from "../../src/logging/logger.js";
import { startTestApp, withKey, type TestAccount, type TestApp } from "../helpers/app.js";
import { solidImage } from "../helpers/images.js";
import { startSearchTestApp } from "../helpers/search.js";

/** A logger that keeps its records, to see how the index was loaded. */
function recordingLogger() {
  const records: Record<string, unknown>[] = [];
  const logger = createLogger("info", (line) => records.push(JSON.parse(line) as Record<string, unknown>));
  const loads = () => records.filter((r) => r.msg === "vector index loaded");
  return { logger, loads };
}

describe("the search filter index follows the catalogue", () => {
  let t: TestApp & { modelDir: string };
  let second: TestApp;
  let owner: TestAccount;
  let other: TestAccount;
  const ids: Record<string, string> = {};

  const request = (extra: Partial<SearchImagesRequest> = {}): SearchImagesRequest =>
    ({ query: { $case: "prompt", value: "red" }, limit: 50, ...extra }) as SearchImagesRequest;
  /** The ids a key finds on an app, and the total. */
  async function found(app: TestApp, key: string, extra: Partial<SearchImagesRequest> = {}) {
    const res = await app.client(ImageServiceDefinition, key).searchImages(request(extra));
    return { ids: res.results.map((r) => r.id).sort(), total: Number(res.total) };
  }

  beforeAll(async () => {
    t = await startSearchTestApp();
    owner = await t.newAccount({ username: "owner" });
    other = await t.newAccount({ username: "other" });
    const client = t.client(ImageServiceDefinition, owner.key);
    const colours = { red: { r: 230, g: 20, b: 20 }, pink: { r: 230, g: 90, b: 120 }, secret: { r: 200, g: 30, b: 30 } };
    let seed = 1;
    for (const [name, colour] of Object.entries(colours)) {
      const { image } = await client.uploadImage({
        content: await solidImage(32, 32, colour, "png", seed++),
        tags: name === "secret" ? ["hidden"] : ["warm", `colour:${name}`],
        visibility: name === "secret" ? Visibility.VISIBILITY_PRIVATE : Visibility.VISIBILITY_PUBLIC,
        waitForIndex: true,
      });
      ids[name] = image!.id;
    }
    second = await startTestApp({ model: t.modelDir }, {}, t.db);
    await second.app.searchReady;
  });
  afterAll(async () => {
    await second?.app.stop();
    second?.channel.close();
    await rm(second?.dataDir ?? "/nonexistent", { recursive: true, force: true });
    await t?.close();
  });

  it("shows private images to their owner only, on both replicas", async () => {
    for (const app of [t, second]) {
      expect(await found(app, owner.key)).toEqual({ ids: [ids.red, ids.pink, ids.secret].sort(), total: 3 });
      expect(await found(app, other.key)).toEqual({ ids: [ids.red, ids.pink].sort(), total: 2 });
      expect(await found(app, other.key, { filter: { tags: ["hidden"] } as never })).toEqual({ ids: [], total: 0 });
      expect((await found(app, other.key, { filter: { tags: ["colour"] } as never })).total).toBe(2);
    }
  });

  it("reflects a visibility change and a tag change at once on the replica that made them, and on another after it follows the log", async () => {
    const client = t.client(ImageServiceDefinition, owner.key);
    const { image: red } = await client.getImage({ id: ids.red });
    await client.updateImage({ image: { ...red!, visibility: Visibility.VISIBILITY_PRIVATE }, updateMask: ["visibility"] });
    const { image: pink } = await client.getImage({ id: ids.pink });
    await client.updateImage({ image: { ...pink!, tags: ["cool"] }, updateMask: ["tags"] });

    // The replica that answered the update already searches the new state.
    expect(await found(t, other.key)).toEqual({ ids: [ids.pink], total: 1 });
    expect((await found(t, other.key, { filter: { tags: ["warm"] } as never })).ids).toEqual([]);
    expect((await found(t, other.key, { filter: { tags: ["cool"] } as never })).ids).toEqual([ids.pink]);
    // Like-image search by a key that may no longer read the image is refused as not found.
    await expect(
      t.client(ImageServiceDefinition, other.key).searchImages(request({ query: { $case: "likeImageId", value: ids.red } })),
    ).rejects.toThrow(/not found|NOT_FOUND/i);

    // The other replica follows index_log (NOTIFY); once caught up it agrees.
    await second.app.searchCatchUp();
    expect(await found(second, other.key)).toEqual({ ids: [ids.pink], total: 1 });
    expect((await found(second, other.key, { filter: { tags: ["cool"] } as never })).ids).toEqual([ids.pink]);
    expect((await found(second, owner.key)).total).toBe(3);

    // Deleted on one replica: gone from both.
    await client.deleteImage({ id: ids.pink });
    expect(await found(t, other.key)).toEqual({ ids: [], total: 0 });
    await second.app.searchCatchUp();
    expect(await found(second, other.key)).toEqual({ ids: [], total: 0 });
    expect(await found(second, owner.key, { fields: ["id", "created", "owner", "url"] })).toEqual({
      ids: [ids.red, ids.secret].sort(),
      total: 2,
    });
  });

  it("answers id, created, owner, url, name and tags from memory, matching the image after changes", async () => {
    const client = t.client(ImageServiceDefinition, owner.key);
    const { image: before } = await client.getImage({ id: ids.red });
    await client.updateImage({ image: { ...before!, fileName: "renamed.png", tags: ["Warm", "colour:red"] }, updateMask: ["file_name", "tags"] });
    await second.app.searchCatchUp();
    const { image } = await client.getImage({ id: ids.red });
    for (const app of [t, second]) {
      const res = await app
        .client(ImageServiceDefinition, owner.key)
        .searchImages(request({ fields: ["id", "created", "owner", "url", "name", "tags"] }));
      const hit = res.results.find((r) => r.id === ids.red)!;
      expect(hit.created).toEqual(image!.createdAt);
      expect(hit.owner).toBe(owner.id);
      expect(hit.url).toContain(ids.red);
      expect(hit.name).toBe("renamed.png");
      expect(hit.tags).toEqual(["warm", "colour:red"]);
    }
  });
});

describe("the search filter index across restarts", () => {
  it("loads from the snapshot without a rebuild, and rebuilds from the tables when the snapshot is gone", async () => {
    const first = await startSearchTestApp();
    const account = await first.newAccount();
    const client = first.client(ImageServiceDefinition, account.key);
    for (const [i, colour] of [{ r: 230, g: 20, b: 20 }, { r: 20, g: 220, b: 30 }].entries()) {
      await client.uploadImage({
        content: await solidImage(32, 32, colour, "png", i + 1),
        tags: [i === 0 ? "warm" : "cool"],
        visibility: Visibility.VISIBILITY_PRIVATE,
        waitForIndex: true,
      });
    }
    const query = { query: { $case: "prompt" as const, value: "red" }, filter: { tags: ["warm"] } as never };
    const before = await client.searchImages(query);
    expect(before.results).toHaveLength(1);
    const dataDir = first.app.options.dataDir;
    await first.app.stop(); // writes the final snapshot
    first.channel.close();

    try {
      const fromSnapshot = recordingLogger();
      const restarted = await startTestApp({ model: first.modelDir, dataDir }, { logger: fromSnapshot.logger }, first.db);
      await restarted.app.searchReady;
      expect(fromSnapshot.loads()).toMatchObject([{ source: "snapshot", vectors: 2, filtered: 2, replayed: 0 }]);
      const again = await restarted.client(ImageServiceDefinition, account.key).searchImages(query);
      expect(again.results.map((r) => [r.id, r.score])).toEqual(before.results.map((r) => [r.id, r.score]));
      const stranger = await restarted.newAccount();
      expect((await restarted.client(ImageServiceDefinition, stranger.key).searchImages(query)).results).toEqual([]);
      await restarted.app.stop();
      restarted.channel.close();

      for (const dir of await readdir(path.join(dataDir, "index"))) await rm(path.join(dataDir, "index", dir), { recursive: true });
      const rebuilt = recordingLogger();
      const third = await startTestApp({ model: first.modelDir, dataDir }, { logger: rebuilt.logger }, first.db);
      await third.app.searchReady;
      expect(rebuilt.loads()).toMatchObject([{ source: "database", vectors: 2, filtered: 2 }]);
      const fromTables = await third.client(ImageServiceDefinition, account.key).searchImages(query);
      expect(fromTables.results.map((r) => [r.id, r.score])).toEqual(before.results.map((r) => [r.id, r.score]));
      expect((await third.client(ImageServiceDefinition, stranger.key).searchImages(query)).results).toEqual([]);
      await third.app.stop();
      third.channel.close();
    } finally {
      await first.close();
    }
  });
});
