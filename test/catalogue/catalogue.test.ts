import { randomUUID } from "node:crypto";
import { createHash } from "node:crypto";
import { ClientError, Metadata, Status, type Client } from "nice-grpc";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/clock.js";
import { NsfwLevel, ImageView, ReactionKind, Visibility, IndexStatus } from "../../src/gen/glimpse/image/v1/image.js";
import { Period } from "../../src/gen/glimpse/image/v1/image_filter.js";
import { ImageServiceDefinition, ImageSort } from "../../src/gen/glimpse/image/v1/image_service.js";
import { DEFAULT_ACCOUNT_ID } from "../../src/server/middleware/caller.js";
import { decodeStatusDetails } from "../../src/server/status-details.js";
import { startTestApp, withKey, type TestApp } from "../helpers/app.js";
import { distinctPng, solidImage } from "../helpers/images.js";

type ImageClient = Client<typeof ImageServiceDefinition>;

async function violationsOf(call: (opts: { onTrailer: (t: Metadata) => void }) => Promise<unknown>) {
  let trailer: Metadata | undefined;
  const err = await call({ onTrailer: (t) => (trailer = t) }).catch((e) => e);
  expect(err).toBeInstanceOf(ClientError);
  const raw = trailer?.get("grpc-status-details-bin") as unknown as Uint8Array | undefined;
  return { err: err as ClientError, violations: raw ? decodeStatusDetails(raw).violations : [] };
}

describe("catalogue over gRPC", () => {
  let t: TestApp;
  let client: ImageClient;
  const clock = new ManualClock(new Date("2026-06-15T12:00:00Z"));
  // Calls without options act as the default admin account (the test app's admin key).
  let otherAccount: string;
  const as = withKey;
  const rowCount = async () => Number((await t.app.sql`select count(*) as n from images`)[0].n);

  beforeAll(async () => {
    t = await startTestApp({ maxUploadBytes: 256 * 1024, maxImagePixels: 4_000_000 }, { clock });
    client = t.client(ImageServiceDefinition);
    otherAccount = (await t.newAccount({ username: "other" })).key;
  });
  afterAll(async () => {
    await t?.close();
  });

  it("round-trips every field of an upload", async () => {
    const content = await solidImage(64, 48, { r: 200, g: 30, b: 30 }, "jpeg");
    const meta = { prompt: "a red square", seed: 234871805, cfgScale: 7, Size: "64x48", nested: { ok: true } };
    const { image } = await client.uploadImage({
      content,
      fileName: "photos/red.jpg",
      tags: ["Animal", "bird:lovebird", "  Bird  "],
      username: "Cooler_Rider",
      postId: "138779",
      modelId: "4201",
      modelVersionId: "130072",
      nsfwLevel: NsfwLevel.NSFW_LEVEL_SOFT,
      meta,
      annotations: {
        count: 0,
        classes: { whale: 1, fish: 4 },
        boxes: [{ className: "whale", x: 1, y: 2, width: 10, height: 5, confidence: 0.5 }],
      },
      index: false,
      visibility: Visibility.VISIBILITY_PUBLIC,
    });
    expect(image).toBeDefined();
    const img = image!;
    expect(BigInt(img.id)).toBeGreaterThan(2n ** 53n);
    expect(img.url).toBe(`${t.app.options.publicUrl}/v1/images/${img.id}/content`);
    expect(img).toMatchObject({
      fileName: "red.jpg",
      mediaType: "image/jpeg",
      width: 64,
      height: 48,
      byteSize: String(content.length),
      sha256: createHash("sha256").update(content).digest("hex"),
      tags: ["animal", "bird:lovebird", "bird"],
      nsfw: true,
      nsfwLevel: NsfwLevel.NSFW_LEVEL_SOFT,
      postId: "138779",
      modelId: "4201",
      modelVersionId: "130072",
      username: "Cooler_Rider",
      meta,
      owner: DEFAULT_ACCOUNT_ID,
      visibility: Visibility.VISIBILITY_PUBLIC,
      indexStatus: IndexStatus.INDEX_STATUS_NOT_INDEXED,
      deduplicated: false,
    });
    expect(img.hash).toMatch(/^[0-9A-Za-z#$%*+,\-.:;=?@[\]^_{|}~]{6,}$/);
    expect(img.phash).toMatch(/^[0-9a-f]{16}$/);
    expect(img.createdAt).toEqual(clock.now());
    expect(img.stats).toEqual({
      likeCount: "0",
      heartCount: "0",
      laughCount: "0",
      cryCount: "0",
      dislikeCount: "0",
      commentCount: "0",
      reactionCount: "0",
    });
    expect(img.annotations?.count).toBe(5);
    expect(img.annotations?.boxes[0]).toMatchObject({ className: "whale", x: 1, y: 2, width: 10, height: 5 });

    const got = (await client.getImage({ id: img.id })).image!;
    expect({ ...got, content: undefined }).toEqual({ ...img, content: undefined });
    expect(got.content).toBeUndefined();
    const withBytes = await client.getImage({ id: img.id, view: ImageView.IMAGE_VIEW_WITH_CONTENT });
    expect(Buffer.compare(withBytes.image!.content!, content)).toBe(0);
    const body = await client.getImageContent({ id: img.id });
    expect(body.contentType).toBe("image/jpeg");
    expect(Buffer.compare(Buffer.from(body.data), content)).toBe(0);
  });

  it("applies EXIF orientation to the reported size", async () => {
    const rotated = await sharp(await solidImage(40, 20, { r: 0, g: 90, b: 0 }, "jpeg"))
      .withMetadata({ orientation: 6 })
      .jpeg()
      .toBuffer();
    const { image } = await client.uploadImage({ content: rotated, index: false });
    expect([image!.width, image!.height]).toEqual([20, 40]);
  });

  it("returns the existing image when the same account uploads the same bytes", async () => {
    const content = await distinctPng(1001);
    const first = (await client.uploadImage({ content, index: false })).image!;
    const before = await rowCount();
    const again = (await client.uploadImage({ content, tags: ["ignored"], index: false })).image!;
    expect(again.id).toBe(first.id);
    expect(again.deduplicated).toBe(true);
    expect(await rowCount()).toBe(before);
    // Another account's upload of the same bytes is its own image, sharing the blob.
    const theirs = (await client.uploadImage({ content, index: false }, as(otherAccount))).image!;
    expect(theirs.id).not.toBe(first.id);
    expect(theirs.deduplicated).toBe(false);
    const blobs = await t.app.blobs.list();
    expect(blobs.filter((b) => b === first.sha256)).toHaveLength(1);
  });

  it("returns bytes stored without indexing as stored when uploaded again without `index`, and queues them with index true", async () => {
    const content = await distinctPng(1003);
    const first = (await client.uploadImage({ content, index: false })).image!;
    expect(first.indexStatus).toBe(IndexStatus.INDEX_STATUS_NOT_INDEXED);
    const unset = (await client.uploadImage({ content })).image!;
    expect(unset).toMatchObject({ id: first.id, deduplicated: true, indexStatus: IndexStatus.INDEX_STATUS_NOT_INDEXED });
    const refused = (await client.uploadImage({ content, index: false })).image!;
    expect(refused.indexStatus).toBe(IndexStatus.INDEX_STATUS_NOT_INDEXED);
    const asked = (await client.uploadImage({ content, index: true })).image!;
    expect(asked).toMatchObject({ id: first.id, deduplicated: true, indexStatus: IndexStatus.INDEX_STATUS_PENDING });
  });

  it("replays an upload retried with the same request_id", async () => {
    const requestId = randomUUID();
    const first = (await client.uploadImage({ content: await distinctPng(1002), requestId, index: false })).image!;
    const retry = (await client.uploadImage({ content: await distinctPng(1003), requestId, index: false })).image!;
    expect(retry.id).toBe(first.id);
    const { err, violations } = await violationsOf((o) =>
      client.uploadImage({ content: Buffer.from("x"), requestId: "not-a-uuid" }, o),
    );
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(violations.map((v) => v.field)).toContain("request_id");
  });

  describe("rejects bad input and stores nothing", () => {
    const cases: [string, () => Promise<Buffer>, RegExp][] = [
      ["text", async () => Buffer.from("hello, this is not an image"), /not a supported image/],
      ["an SVG", async () => Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'), /not a supported image/],
      ["a truncated JPEG", async () => {
        const jpeg = await sharp({ create: { width: 300, height: 200, channels: 3, background: "#3366cc" } })
          .composite([{ input: await solidImage(100, 100, { r: 250, g: 250, b: 0 }, "png"), left: 50, top: 50 }])
          .jpeg()
          .toBuffer();
        return jpeg.subarray(0, Math.floor(jpeg.length / 2));
      }, /./],
      ["a corrupt PNG", async () => {
        const png = Buffer.from(await solidImage(200, 200, { r: 10, g: 200, b: 10 }, "png", 77));
        for (let i = 60; i < png.length - 20; i += 7) png[i] ^= 0x5a;
        return png;
      }, /./],
      ["an oversize file", async () => sharp({ create: { width: 1500, height: 1500, channels: 3, background: "#000" } })
        .composite([{ input: Buffer.from(Array.from({ length: 1500 * 1500 * 3 }, (_, i) => (i * 7919) % 256)), raw: { width: 1500, height: 1500, channels: 3 } }])
        .png({ compressionLevel: 0 })
        .toBuffer(), /256 KiB|limit/],
      ["a decompression bomb", async () => sharp({ create: { width: 5000, height: 5000, channels: 3, background: "#fff" } }).png().toBuffer(), /megapixel|pixel/],
    ];
    for (const [name, make, message] of cases) {
      it(name, async () => {
        const before = await rowCount();
        const blobsBefore = (await t.app.blobs.list()).length;
        const { err, violations } = await violationsOf(async (o) =>
          client.uploadImage({ content: await make(), tags: ["should-not-exist"] }, o),
        );
        expect(err.code).toBe(Status.INVALID_ARGUMENT);
        expect(violations[0]?.field).toBe("content");
        expect(err.details).toMatch(message);
        expect(await rowCount()).toBe(before);
        expect((await t.app.blobs.list()).length).toBe(blobsBefore);
        const tagged = await t.app.sql`select 1 from images where 'should-not-exist' = any(tags)`;
        expect(tagged).toHaveLength(0);
      });
    }

    it("bad fields, each named", async () => {
      const before = await rowCount();
      const { err, violations } = await violationsOf(async (o) =>
        client.uploadImage(
          {
            content: await distinctPng(1010),
            tags: ["ok", "a+b", "-neg"],
            postId: "-4",
            annotations: { count: 0, classes: {}, boxes: [{ className: "cat", x: 30, y: 0, width: 10, height: 10 }] },
          },
          o,
        ),
      );
      expect(err.code).toBe(Status.INVALID_ARGUMENT);
      expect(violations.map((v) => v.field).sort()).toEqual(["post_id", "tags[1]", "tags[2]"].sort());
      expect(await rowCount()).toBe(before);
      const boxes = await violationsOf(async (o) =>
        client.uploadImage(
          {
            content: await distinctPng(1011),
            annotations: { count: 0, classes: {}, boxes: [{ className: "cat", x: 30, y: 0, width: 10, height: 10 }] },
          },
          o,
        ),
      );
      expect(boxes.violations.map((v) => v.field)).toEqual(["annotations.boxes[0]"]);
      expect(await rowCount()).toBe(before);
    });
  });

  it("updates the fields named in the mask and rejects unknown paths", async () => {
    const { image } = await client.uploadImage({ content: await distinctPng(1020), tags: ["a"], postId: "5", index: false });
    const { image: updated } = await client.updateImage({
      image: { ...image!, tags: ["B", "c:d"], postId: undefined, meta: { steps: 35 }, fileName: "x.png" },
      updateMask: ["tags", "post_id", "meta"],
    });
    expect(updated).toMatchObject({ tags: ["b", "c:d"], meta: { steps: 35 }, fileName: "" });
    expect(updated!.postId).toBeUndefined();
    // file_name was not in the mask: unchanged.
    expect(updated!.fileName).toBe(image!.fileName);
    const bad = await violationsOf((o) => client.updateImage({ image: image!, updateMask: ["width"] }, o));
    expect(bad.err.code).toBe(Status.INVALID_ARGUMENT);
    expect(bad.violations[0].field).toBe("update_mask");
    const byTag = await client.listImages({ filter: { tags: ["c"] } as never });
    expect(byTag.images.map((i) => i.id)).toContain(image!.id);
  });

  it("deletes an image with its reactions and comments, and its blob with the last reference", async () => {
    const content = await distinctPng(1030);
    const mine = (await client.uploadImage({ content, index: false })).image!;
    const theirs = (await client.uploadImage({ content, index: false }, as(otherAccount))).image!;
    await client.addReaction({ imageId: mine.id, kind: ReactionKind.REACTION_KIND_LIKE });
    await client.addComment({ imageId: mine.id, text: "nice" });
    await client.deleteImage({ id: mine.id });
    expect((await client.getImage({ id: mine.id }).catch((e) => e)).code).toBe(Status.NOT_FOUND);
    expect(await t.app.sql`select 1 from reactions where image_id = ${mine.id}`).toHaveLength(0);
    expect(await t.app.sql`select 1 from comments where image_id = ${mine.id}`).toHaveLength(0);
    expect(await t.app.blobs.has(mine.sha256)).toBe(true); // still referenced by theirs
    await client.deleteImage({ id: theirs.id }, as(otherAccount));
    expect(await t.app.blobs.has(mine.sha256)).toBe(false);
    expect((await client.deleteImage({ id: mine.id }).catch((e) => e)).code).toBe(Status.NOT_FOUND);
  });

  it("hides private images of other accounts and forbids changing public ones", async () => {
    const priv = (await client.uploadImage({ content: await distinctPng(1040), index: false }, as(otherAccount))).image!;
    const pub = (
      await client.uploadImage(
        { content: await distinctPng(1041), visibility: Visibility.VISIBILITY_PUBLIC, index: false },
        as(otherAccount),
      )
    ).image!;
    const third = (await t.newAccount({ username: "third" })).key;
    expect((await client.getImage({ id: priv.id }, as(third)).catch((e) => e)).code).toBe(Status.NOT_FOUND);
    expect((await client.getImage({ id: pub.id }, as(third))).image!.id).toBe(pub.id);
    expect((await client.deleteImage({ id: pub.id }, as(third)).catch((e) => e)).code).toBe(Status.PERMISSION_DENIED);
    const listed = await client.listImages({ pageSize: 200 }, as(third));
    expect(listed.images.map((i) => i.id)).toContain(pub.id);
    expect(listed.images.map((i) => i.id)).not.toContain(priv.id);
  });

  it("keeps reaction counts exact under 50 concurrent callers", async () => {
    const img = (
      await client.uploadImage({ content: await distinctPng(1050), visibility: Visibility.VISIBILITY_PUBLIC, index: false })
    ).image!;
    const accounts = await Promise.all(Array.from({ length: 50 }, () => t.newAccount()));
    const results = await Promise.all(
      accounts.flatMap((a) => [
        client.addReaction({ imageId: img.id, kind: ReactionKind.REACTION_KIND_HEART }, as(a.key)),
        client.addReaction({ imageId: img.id, kind: ReactionKind.REACTION_KIND_HEART }, as(a.key)),
        client.addReaction({ imageId: img.id, kind: ReactionKind.REACTION_KIND_LIKE }, as(a.key)),
      ]),
    );
    expect(results.filter((r) => r.changed)).toHaveLength(100);
    let stats = (await client.getImage({ id: img.id })).image!.stats!;
    expect([stats.heartCount, stats.likeCount, stats.reactionCount]).toEqual(["50", "50", "100"]);
    await Promise.all(
      accounts.slice(0, 20).map((a) => client.removeReaction({ imageId: img.id, kind: ReactionKind.REACTION_KIND_HEART }, as(a.key))),
    );
    const again = await client.removeReaction({ imageId: img.id, kind: ReactionKind.REACTION_KIND_HEART }, as(accounts[0].key));
    expect(again.changed).toBe(false);
    stats = again.stats!;
    expect([stats.heartCount, stats.reactionCount]).toEqual(["30", "80"]);
    const [{ n }] = await t.app.sql`select count(*)::int as n from reactions where image_id = ${img.id}`;
    expect(n).toBe(80);
  });

  it("adds and pages comments, keeping commentCount in step", async () => {
    const img = (await client.uploadImage({ content: await distinctPng(1060), index: false })).image!;
    const texts = Array.from({ length: 7 }, (_, i) => `comment ${i}`);
    for (const text of texts) await client.addComment({ imageId: img.id, text });
    const requestId = randomUUID();
    const once = await client.addComment({ imageId: img.id, text: "only once", requestId });
    const twice = await client.addComment({ imageId: img.id, text: "only once", requestId });
    expect(twice.comment!.id).toBe(once.comment!.id);
    const seen: string[] = [];
    let token = "";
    do {
      const page = await client.listComments({ imageId: img.id, pageSize: 3, pageToken: token });
      seen.push(...page.comments.map((c) => c.text));
      token = page.nextPageToken;
    } while (token);
    expect(seen).toEqual([...texts, "only once"]);
    expect((await client.getImage({ id: img.id })).image!.stats!.commentCount).toBe("8");
    const empty = await violationsOf((o) => client.addComment({ imageId: img.id, text: "   " }, o));
    expect(empty.violations[0].field).toBe("text");
  });

  it("gives each batch item its own result; a bad item does not stop the batch", async () => {
    const good1 = await distinctPng(1070);
    const good2 = await distinctPng(1071);
    async function* items() {
      yield { request: { content: good1, requestId: "", tags: ["batch"], index: false } as never };
      yield { request: { content: Buffer.from("garbage"), requestId: "" } as never };
      yield { request: { content: good2, tags: ["batch"], index: false } as never };
    }
    const results = [];
    for await (const r of client.batchUploadImages(items())) results.push(r);
    expect(results.map((r) => [r.index, r.result?.$case])).toEqual([
      [0, "image"],
      [1, "error"],
      [2, "image"],
    ]);
    const failed = results[1].result;
    expect(failed?.$case === "error" && failed.value.code).toBe(Status.INVALID_ARGUMENT);
  });
});

describe("listing", () => {
  let t: TestApp;
  let client: ImageClient;
  const clock = new ManualClock(new Date("2026-06-15T12:00:00Z"));
  const ids: Record<string, string> = {};

  /** Uploads at `daysAgo` before the clock's present, then returns the clock to it. */
  async function upload(name: string, daysAgo: number, fields: Record<string, unknown>) {
    const present = clock.now();
    clock.set(new Date(present.getTime() - daysAgo * 86_400_000));
    const { image } = await client.uploadImage({
      content: await distinctPng(Object.keys(ids).length + 1),
      index: false,
      ...fields,
    } as never);
    clock.set(present);
    ids[name] = image!.id;
  }
  const names = (images: { id: string }[]) => images.map((i) => Object.entries(ids).find(([, id]) => id === i.id)?.[0]);

  beforeAll(async () => {
    t = await startTestApp({}, { clock });
    client = t.client(ImageServiceDefinition);
    await upload("dog", 400, { tags: ["animal", "dog"], username: "ann", postId: "1", nsfwLevel: NsfwLevel.NSFW_LEVEL_NONE });
    await upload("cat", 40, { tags: ["animal", "cat"], username: "Bob", postId: "1", modelId: "9", nsfwLevel: NsfwLevel.NSFW_LEVEL_SOFT });
    await upload("dogcat", 10, { tags: ["animal", "dog", "cat"], username: "ann", modelId: "9", modelVersionId: "90", nsfwLevel: NsfwLevel.NSFW_LEVEL_MATURE });
    await upload("lovebird", 3, { tags: ["animal", "bird:lovebird"], username: "cy", nsfwLevel: NsfwLevel.NSFW_LEVEL_X });
    await upload("car", 0.5, { tags: ["vehicle"], username: "cy", meta: { split: "train" }, annotations: { count: 0, classes: { car: 2 }, boxes: [] } });
    for (let i = 0; i < 3; i++) await client.addReaction({ imageId: ids.cat, kind: [ReactionKind.REACTION_KIND_LIKE, ReactionKind.REACTION_KIND_HEART, ReactionKind.REACTION_KIND_CRY][i] });
    await client.addReaction({ imageId: ids.lovebird, kind: ReactionKind.REACTION_KIND_LIKE });
    for (let i = 0; i < 2; i++) await client.addComment({ imageId: ids.dog, text: `c${i}` });
  });
  afterAll(async () => {
    await t?.close();
  });

  const list = async (req: Record<string, unknown>) => (await client.listImages(req as never)).images;

  it("sorts newest first by default, and oldest, most reactions, most comments", async () => {
    expect(names(await list({}))).toEqual(["car", "lovebird", "dogcat", "cat", "dog"]);
    expect(names(await list({ sort: ImageSort.IMAGE_SORT_OLDEST }))).toEqual(["dog", "cat", "dogcat", "lovebird", "car"]);
    expect(names(await list({ sort: ImageSort.IMAGE_SORT_MOST_REACTIONS }))).toEqual(["cat", "lovebird", "car", "dogcat", "dog"]);
    expect(names(await list({ sort: ImageSort.IMAGE_SORT_MOST_COMMENTS }))[0]).toBe("dog");
  });

  it("filters by tags, tag expressions and namespaces", async () => {
    expect(names(await list({ filter: { tagsQuery: "animal+dog+-cat" } }))).toEqual(["dog"]);
    expect(names(await list({ filter: { tagsQuery: "animal dog -cat" } }))).toEqual(["dog"]);
    expect(names(await list({ filter: { tags: ["dog", "cat"] } }))).toEqual(["dogcat"]);
    expect(names(await list({ filter: { tags: ["animal"], excludeTags: ["dog"] } }))).toEqual(["lovebird", "cat"]);
    expect(names(await list({ filter: { tags: ["bird"] } }))).toEqual(["lovebird"]);
    expect(names(await list({ filter: { tags: ["bird:lovebird"] } }))).toEqual(["lovebird"]);
    const bad = await client.listImages({ filter: { tagsQuery: "dog++cat" } } as never).catch((e) => e);
    expect(bad.code).toBe(Status.INVALID_ARGUMENT);
    expect(bad.details).toContain("filter.tags_query");
  });

  it("filters by username, post, model, model version, class and meta", async () => {
    expect(names(await list({ filter: { username: "ANN" } }))).toEqual(["dogcat", "dog"]);
    expect(names(await list({ filter: { postId: "1" } }))).toEqual(["cat", "dog"]);
    expect(names(await list({ filter: { modelId: "9" } }))).toEqual(["dogcat", "cat"]);
    expect(names(await list({ filter: { modelVersionId: "90" } }))).toEqual(["dogcat"]);
    expect(names(await list({ filter: { className: "car" } }))).toEqual(["car"]);
    expect(names(await list({ filter: { metaEquals: { split: "train" } } }))).toEqual(["car"]);
    expect(names(await list({ filter: { metaKeys: ["split"], username: "cy" } }))).toEqual(["car"]);
  });

  it("filters by nsfw as a boolean or a level (that level and below)", async () => {
    expect(names(await list({ filter: { nsfw: false } }))).toEqual(["car", "dog"]);
    expect(names(await list({ filter: { nsfw: true } }))).toEqual(["lovebird", "dogcat", "cat"]);
    expect(names(await list({ filter: { nsfwLevel: NsfwLevel.NSFW_LEVEL_SOFT } }))).toEqual(["car", "cat", "dog"]);
    expect(names(await list({ filter: { nsfwLevel: NsfwLevel.NSFW_LEVEL_X } }))).toHaveLength(5);
    const both = await client.listImages({ filter: { nsfw: true, nsfwLevel: NsfwLevel.NSFW_LEVEL_X } } as never).catch((e) => e);
    expect(both.code).toBe(Status.INVALID_ARGUMENT);
  });

  it("limits to a period measured back from now", async () => {
    const period = (p: Period) => list({ filter: { period: p } });
    expect(names(await period(Period.PERIOD_DAY))).toEqual(["car"]);
    expect(names(await period(Period.PERIOD_WEEK))).toEqual(["car", "lovebird"]);
    expect(names(await period(Period.PERIOD_MONTH))).toEqual(["car", "lovebird", "dogcat"]);
    expect(names(await period(Period.PERIOD_YEAR))).toEqual(["car", "lovebird", "dogcat", "cat"]);
    expect(names(await period(Period.PERIOD_ALL_TIME))).toHaveLength(5);
    expect(names(await list({ filter: { period: Period.PERIOD_WEEK }, sort: ImageSort.IMAGE_SORT_MOST_REACTIONS }))).toEqual(["lovebird", "car"]);
  });

  it("pages by token, cursor, 1-based page, 0-based page and offset, with metadata", async () => {
    const first = await client.listImages({ pageSize: 2, includeTotal: true } as never);
    expect(names(first.images)).toEqual(["car", "lovebird"]);
    expect(first.metadata).toMatchObject({ currentPage: 1, pageSize: 2, totalItems: "5" });
    expect(first.metadata!.nextCursor).toBe(first.nextPageToken);
    expect(first.metadata!.nextPage).toMatch(/^\/v1\/images\?.*pageToken=/);
    const second = await client.listImages({ pageSize: 2, pageToken: first.nextPageToken } as never);
    expect(names(second.images)).toEqual(["dogcat", "cat"]);
    expect(second.metadata!.currentPage).toBe(2);
    const viaCursor = await client.listImages({ limit: 2, cursor: first.nextPageToken } as never);
    expect(names(viaCursor.images)).toEqual(["dogcat", "cat"]);
    expect(viaCursor.metadata!.nextPage).toContain("cursor=");
    const page2 = await client.listImages({ pageSize: 2, page: 2 } as never);
    expect(names(page2.images)).toEqual(["dogcat", "cat"]);
    expect(page2.metadata).toMatchObject({ currentPage: 2 });
    expect(page2.metadata!.nextPage).toContain("page=3");
    const zero = await client.listImages({ pageSize: 2, zeroBasedPage: 2 } as never);
    expect(names(zero.images)).toEqual(["dog"]);
    expect(zero.metadata).toMatchObject({ currentPage: 3, nextPage: "", nextCursor: "" });
    const offset = await client.listImages({ pageSize: 2, offset: 1 } as never);
    expect(names(offset.images)).toEqual(["lovebird", "dogcat"]);
    expect(offset.metadata!.nextPage).toContain("offset=3");
    const dflt = await client.listImages({} as never);
    expect(dflt.metadata!.pageSize).toBe(100);
  });

  it("rejects bad paging, naming the field", async () => {
    for (const [req, field] of [
      [{ pageSize: 201 }, "page_size"],
      [{ limit: -1 }, "limit"],
      [{ page: 2, offset: 4 }, "offset"],
      [{ pageToken: "garbage" }, "page_token"],
    ] as const) {
      const err = await client.listImages(req as never).catch((e) => e);
      expect(err.code).toBe(Status.INVALID_ARGUMENT);
      expect(err.details).toContain(field);
    }
    const first = await client.listImages({ pageSize: 1 } as never);
    const other = await client
      .listImages({ pageSize: 1, pageToken: first.nextPageToken, sort: ImageSort.IMAGE_SORT_OLDEST } as never)
      .catch((e) => e);
    expect(other.code).toBe(Status.INVALID_ARGUMENT);
    expect(other.details).toContain("different filter or sort");
  });
});

describe("paging stability", () => {
  let t: TestApp;
  let client: ImageClient;
  beforeAll(async () => {
    t = await startTestApp();
    client = t.client(ImageServiceDefinition);
    for (let i = 0; i < 40; i++) {
      await client.uploadImage({
        content: await distinctPng(2000 + i),
        tags: ["walk"],
        visibility: Visibility.VISIBILITY_PUBLIC,
        index: false,
      });
    }
  });
  afterAll(async () => {
    await t?.close();
  });

  async function walk(sort: ImageSort, during: (page: number) => Promise<void>) {
    const seen: string[] = [];
    let token = "";
    let page = 0;
    do {
      const res = await client.listImages({ filter: { tags: ["walk"] }, sort, pageSize: 7, pageToken: token } as never);
      seen.push(...res.images.map((i) => i.id));
      token = res.nextPageToken;
      await during(page++);
    } while (token);
    return seen;
  }

  it("returns each image exactly once for NEWEST and OLDEST while images arrive", async () => {
    const before = (await client.listImages({ filter: { tags: ["walk"] }, pageSize: 200 } as never)).images.map((i) => i.id);
    let extra = 0;
    const arrive = async () => {
      await Promise.all(
        [0, 1].map(async () =>
          client.uploadImage({
            content: await distinctPng(3000 + extra++),
            tags: ["walk"],
            visibility: Visibility.VISIBILITY_PUBLIC,
            index: false,
          }),
        ),
      );
    };
    for (const sort of [ImageSort.IMAGE_SORT_NEWEST, ImageSort.IMAGE_SORT_OLDEST]) {
      const seen = await walk(sort, arrive);
      expect(new Set(seen).size).toBe(seen.length);
      for (const id of before) expect(seen).toContain(id);
    }
  });

  it("never repeats an image in a MOST_REACTIONS walk while reactions change", async () => {
    const all = (await client.listImages({ filter: { tags: ["walk"] }, pageSize: 200 } as never)).images;
    const accounts = await Promise.all(Array.from({ length: 5 }, () => t.newAccount()));
    const kinds = [ReactionKind.REACTION_KIND_LIKE, ReactionKind.REACTION_KIND_HEART, ReactionKind.REACTION_KIND_LAUGH];
    // Start with a spread of counts so the order is not just by id.
    for (const [i, img] of all.slice(0, 20).entries()) {
      for (let k = 0; k < (i % 3) + 1; k++) await client.addReaction({ imageId: img.id, kind: kinds[k] });
    }
    const seen = await walk(ImageSort.IMAGE_SORT_MOST_REACTIONS, async (page) => {
      // Between pages, move images both up and down the ranking.
      const target = all[(page * 5) % all.length];
      await client.removeReaction({ imageId: target.id, kind: ReactionKind.REACTION_KIND_LIKE });
      for (const a of accounts) {
        await client.addReaction({ imageId: all[(page * 7 + 3) % all.length].id, kind: ReactionKind.REACTION_KIND_CRY }, withKey(a.key));
      }
    });
    expect(new Set(seen).size).toBe(seen.length);
  });
});
