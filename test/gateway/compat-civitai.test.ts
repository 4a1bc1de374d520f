import type { Client } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/clock.js";
import { NsfwLevel, ReactionKind, Visibility, type Image } from "../../src/gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { startTestApp, withKey, type TestAccount, type TestApp } from "../helpers/app.js";
import { distinctPng, solidImage } from "../helpers/images.js";

/**
 * Seed 2 (civitai's GET /api/v1/images) under /compat/civitai, over real HTTP: the seed's
 * example request, every documented query parameter, walks that follow `nextPage` to the
 * end, errors, and reads with and without a key.
 */

const PATH = "/compat/civitai/api/v1/images";

/** The generation parameters of the seed's example item. */
const SEED_META = {
  Size: "512x768",
  seed: 234871805,
  Model: "Meina",
  steps: 35,
  prompt:
    "<lora:setsunaTokage_v10:0.6>, green hair, long hair, standing, (ribbed dress), zettai ryouiki, choker, (black eyes), looking at viewer, adjusting hair, hand in own hair, street, grin, sharp teeth, high ponytail, [Style of boku no hero academia]",
  sampler: "DPM++ SDE Karras",
  cfgScale: 7,
  "Clip skip": "2",
  "Hires upscale": "2",
  "Hires upscaler": "4x-AnimeSharp",
  negativePrompt: "(worst quality, low quality, extra digits:1.3), easynegative,",
  "Denoising strength": "0.4",
};

/** The item fields seed 2 documents, in its order. */
const ITEM_FIELDS = [
  "id",
  "url",
  "hash",
  "width",
  "height",
  "nsfw",
  "nsfwLevel",
  "createdAt",
  "postId",
  "stats",
  "meta",
  "username",
];

interface Answer {
  status: number;
  headers: Headers;
  /** The raw JSON text. */
  text: string;
  /** The parsed body, with integers too long for a double (snowflake ids) kept as digit strings. */
  body: any;
}

/** Parses JSON keeping every integer literal of 16 or more digits exactly, as a string. */
function parseExact(text: string): any {
  return JSON.parse(text.replace(/([:[,]\s*)(-?\d{16,})(?=\s*[,}\]])/g, '$1"$2"'));
}

async function get(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(url, { headers });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: parseExact(text) };
}

describe("civitai-compatible image list (seed 2)", () => {
  let t: TestApp;
  let images: Client<typeof ImageServiceDefinition>;
  let base: string;
  let auth: Record<string, string>;
  let reactorA: TestAccount;
  let reactorB: TestAccount;
  const clock = new ManualClock(new Date("2026-06-15T12:00:00Z"));
  const stored: Record<string, Image> = {};
  const nameOf = (id: string) => Object.entries(stored).find(([, image]) => image.id === id)?.[0] ?? id;
  const names = (answer: Answer) => (answer.body.items as { id: string }[]).map((item) => nameOf(item.id));

  /** Uploads at `daysAgo` before the clock's present, then puts the clock back. */
  async function upload(name: string, daysAgo: number, fields: Record<string, unknown>, key?: string) {
    const present = clock.now();
    clock.set(new Date(present.getTime() - daysAgo * 86_400_000));
    const { image } = await images.uploadImage(
      {
        content: (fields.content as Buffer | undefined) ?? (await distinctPng(Object.keys(stored).length + 1)),
        index: false,
        visibility: Visibility.VISIBILITY_PUBLIC,
        ...fields,
      } as never,
      key ? withKey(key) : {},
    );
    clock.set(present);
    stored[name] = image!;
  }

  async function list(query: string, headers = auth): Promise<Answer> {
    return get(`${base}${PATH}${query}`, headers);
  }

  /** Follows `nextPage` from `query` to the last page; every page must answer 200. */
  async function walk(query: string): Promise<Answer[]> {
    const pages: Answer[] = [];
    let url: string | undefined = `${base}${PATH}${query}`;
    while (url) {
      const page = await get(url, auth);
      expect(page.status).toBe(200);
      pages.push(page);
      url = page.body.metadata.nextPage;
      expect(pages.length).toBeLessThan(20);
    }
    return pages;
  }

  beforeAll(async () => {
    t = await startTestApp({}, { clock });
    base = `http://127.0.0.1:${t.app.httpPort}`;
    auth = { authorization: `Bearer ${t.adminKey}` };
    images = t.client(ImageServiceDefinition);
    reactorA = await t.newAccount();
    reactorB = await t.newAccount();
    await upload("old", 400, { username: "ann", postId: "1", modelId: "9", nsfwLevel: NsfwLevel.NSFW_LEVEL_NONE });
    await upload("cat", 40, {
      username: "Bob",
      postId: "1",
      modelId: "9",
      modelVersionId: "90",
      nsfwLevel: NsfwLevel.NSFW_LEVEL_SOFT,
    });
    await upload(
      "private",
      20,
      { username: "dee", visibility: Visibility.VISIBILITY_PRIVATE, nsfwLevel: NsfwLevel.NSFW_LEVEL_NONE },
      reactorA.key,
    );
    await upload("dogcat", 10, {
      username: "ann",
      modelId: "9",
      modelVersionId: "91",
      nsfwLevel: NsfwLevel.NSFW_LEVEL_MATURE,
    });
    await upload("bird", 3, { username: "cy", nsfwLevel: NsfwLevel.NSFW_LEVEL_X });
    // The seed's example item: a 1024x1536 image in post 138779 by Cooler_Rider, with its meta.
    await upload("example", 0, {
      content: await solidImage(1024, 1536, { r: 40, g: 160, b: 90 }, "jpeg", 7),
      username: "Cooler_Rider",
      postId: "138779",
      nsfwLevel: NsfwLevel.NSFW_LEVEL_NONE,
      meta: SEED_META,
    });
    const react = (name: string, kind: ReactionKind, key?: string) =>
      images.addReaction({ imageId: stored[name].id, kind }, key ? withKey(key) : {});
    await react("cat", ReactionKind.REACTION_KIND_LIKE);
    await react("cat", ReactionKind.REACTION_KIND_HEART);
    await react("cat", ReactionKind.REACTION_KIND_LIKE, reactorA.key);
    await react("cat", ReactionKind.REACTION_KIND_CRY, reactorB.key);
    await react("bird", ReactionKind.REACTION_KIND_LAUGH);
    await react("bird", ReactionKind.REACTION_KIND_DISLIKE, reactorA.key);
    await images.addComment({ imageId: stored.dogcat.id, text: "first" });
    await images.addComment({ imageId: stored.dogcat.id, text: "second" });
    await images.addComment({ imageId: stored.old.id, text: "only" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("replays the seed's example request (limit=1) field by field", async () => {
    const answer = await list("?limit=1");
    expect(answer.status).toBe(200);
    expect(answer.headers.get("content-type")).toMatch(/^application\/json/);
    expect(Object.keys(answer.body)).toEqual(["items", "metadata"]);
    expect(answer.body.items).toHaveLength(1);
    const item = answer.body.items[0];
    const example = stored.example;
    expect(Object.keys(item)).toEqual(ITEM_FIELDS);

    // Snowflake ids exceed 2^53: they arrive as JSON numbers with every digit intact.
    expect(BigInt(example.id)).toBeGreaterThan(2n ** 53n);
    expect(answer.text).toContain(`"id":${example.id},`);
    expect(item.id).toBe(example.id);
    expect(item.url).toBe(`${t.app.options.publicUrl}/v1/images/${example.id}/content`);
    expect(typeof item.hash).toBe("string");
    expect(item.hash).toBe(example.hash);
    expect(item.hash.length).toBeGreaterThan(6);
    expect(item.width).toBe(1024);
    expect(item.height).toBe(1536);
    expect(item.nsfw).toBe(false);
    expect(item.nsfwLevel).toBe("None");
    expect(item.createdAt).toBe("2026-06-15T12:00:00.000Z");
    expect(item.postId).toBe(138779);
    expect(item.stats).toEqual({
      cryCount: 0,
      laughCount: 0,
      likeCount: 0,
      dislikeCount: 0,
      heartCount: 0,
      commentCount: 0,
    });
    expect(item.meta).toEqual(SEED_META);
    expect(item.username).toBe("Cooler_Rider");

    const { metadata } = answer.body;
    expect(Object.keys(metadata).sort()).toEqual(["currentPage", "nextCursor", "nextPage", "pageSize"]);
    // As the seed's table says: a number, the id of the first image in the next batch.
    expect(answer.text).toMatch(/"nextCursor":\d+[,}]/);
    const two = await list("?limit=2");
    expect(metadata.nextCursor).toBe(two.body.items[1].id);
    expect(metadata.currentPage).toBe(1);
    expect(metadata.pageSize).toBe(1);
    expect(metadata.nextPage.startsWith(`${t.app.options.publicUrl}${PATH}?`)).toBe(true);
    const next = new URL(metadata.nextPage);
    expect(next.searchParams.get("limit")).toBe("1");
    expect(next.searchParams.get("cursor")).toBeTruthy();
    // Passed back as `cursor`, the id starts the page at that image.
    const fromId = await list(`?limit=1&cursor=${metadata.nextCursor}`);
    expect(fromId.status).toBe(200);
    expect(fromId.body.items[0].id).toBe(metadata.nextCursor);
  });

  it("reports stats from reactions and comments, nsfw levels by name, and no postId or meta as null", async () => {
    const answer = await list("?limit=10");
    const byName: Record<string, any> = Object.fromEntries(
      answer.body.items.map((item: { id: string }) => [nameOf(item.id), item]),
    );
    expect(byName.cat.stats).toEqual({
      cryCount: 1,
      laughCount: 0,
      likeCount: 2,
      dislikeCount: 0,
      heartCount: 1,
      commentCount: 0,
    });
    expect(byName.bird.stats).toMatchObject({ laughCount: 1, dislikeCount: 1, likeCount: 0 });
    expect(byName.dogcat.stats.commentCount).toBe(2);
    expect(byName.cat).toMatchObject({ nsfw: true, nsfwLevel: "Soft", postId: 1, username: "Bob", meta: null });
    expect(byName.dogcat).toMatchObject({ nsfw: true, nsfwLevel: "Mature", postId: null });
    expect(byName.bird).toMatchObject({ nsfw: true, nsfwLevel: "X" });
    expect(byName.old).toMatchObject({ nsfw: false, nsfwLevel: "None", createdAt: "2025-05-11T12:00:00.000Z" });
    for (const item of answer.body.items) {
      expect(typeof item.width).toBe("number");
      expect(typeof item.height).toBe("number");
      expect(typeof item.username).toBe("string");
      for (const count of Object.values(item.stats)) expect(typeof count).toBe("number");
    }
  });

  it("follows nextPage by cursor to the end, seeing every image once", async () => {
    const pages = await walk("?limit=2");
    const seen = pages.flatMap((page) => names(page));
    expect(seen).toEqual(["example", "bird", "dogcat", "private", "cat", "old"]);
    expect(new Set(seen).size).toBe(Object.keys(stored).length);
    expect(pages.map((page) => page.body.metadata.currentPage)).toEqual([1, 2, 3]);
    expect(pages.every((page) => page.body.metadata.pageSize === 2)).toBe(true);
    const last = pages[pages.length - 1].body.metadata;
    expect(last.nextPage).toBeUndefined();
    expect(last.nextCursor).toBeUndefined();
  });

  it("keeps the filters and sort on every page it links to", async () => {
    const pages = await walk("?limit=1&sort=Most+Reactions&nsfw=true");
    expect(pages.flatMap((page) => names(page))).toEqual(["cat", "bird", "dogcat"]);
    const second = new URL(pages[0].body.metadata.nextPage);
    expect(second.searchParams.get("sort")).toBe("Most Reactions");
    expect(second.searchParams.get("nsfw")).toBe("true");
    expect(pages[2].body.metadata.nextPage).toBeUndefined();

    const byUser = await walk("?limit=1&username=ANN&period=Year");
    expect(byUser.flatMap((page) => names(page))).toEqual(["dogcat"]);
  });

  it("pages by number when asked with page, linking to the next page number", async () => {
    const pages = await walk("?limit=4&page=1");
    expect(pages).toHaveLength(2);
    expect(pages.map((page) => page.body.metadata.currentPage)).toEqual([1, 2]);
    const next = new URL(pages[0].body.metadata.nextPage);
    expect(next.searchParams.get("page")).toBe("2");
    expect(next.searchParams.get("cursor")).toBeNull();
    expect(next.searchParams.get("limit")).toBe("4");
    expect(pages.flatMap((page) => names(page))).toEqual(["example", "bird", "dogcat", "private", "cat", "old"]);
    expect(pages[1].body.metadata.nextPage).toBeUndefined();

    const second = await list("?limit=4&page=2");
    expect(names(second)).toEqual(["cat", "old"]);
    expect(second.body.metadata.currentPage).toBe(2);
  });

  it("filters by postId, modelId, modelVersionId and username", async () => {
    expect(names(await list("?postId=1"))).toEqual(["cat", "old"]);
    expect(names(await list("?postId=138779"))).toEqual(["example"]);
    expect(names(await list("?modelId=9"))).toEqual(["dogcat", "cat", "old"]);
    expect(names(await list("?modelVersionId=90"))).toEqual(["cat"]);
    expect(names(await list("?modelId=9&modelVersionId=91"))).toEqual(["dogcat"]);
    expect(names(await list("?username=ann"))).toEqual(["dogcat", "old"]);
    expect(names(await list("?username=Cooler_Rider"))).toEqual(["example"]);
    expect(names(await list("?username=nobody"))).toEqual([]);
  });

  it("filters by nsfw as a boolean or a level name (that level and below)", async () => {
    expect(names(await list("?nsfw=false"))).toEqual(["example", "private", "old"]);
    expect(names(await list("?nsfw=true"))).toEqual(["bird", "dogcat", "cat"]);
    expect(names(await list("?nsfw=None"))).toEqual(["example", "private", "old"]);
    expect(names(await list("?nsfw=Soft"))).toEqual(["example", "private", "cat", "old"]);
    expect(names(await list("?nsfw=Mature"))).toEqual(["example", "dogcat", "private", "cat", "old"]);
    expect(names(await list("?nsfw=X"))).toHaveLength(6);
  });

  it("sorts by the seed's sort names", async () => {
    expect(names(await list("?sort=Newest"))).toEqual(["example", "bird", "dogcat", "private", "cat", "old"]);
    expect(names(await list("?sort=Most%20Reactions"))).toEqual(["cat", "bird", "example", "dogcat", "private", "old"]);
    expect(names(await list("?sort=Most+Comments")).slice(0, 2)).toEqual(["dogcat", "old"]);
  });

  it("limits to the seed's periods, alone and with a sort", async () => {
    expect(names(await list("?period=Day"))).toEqual(["example"]);
    expect(names(await list("?period=Week"))).toEqual(["example", "bird"]);
    expect(names(await list("?period=Month"))).toEqual(["example", "bird", "dogcat", "private"]);
    expect(names(await list("?period=Year"))).toEqual(["example", "bird", "dogcat", "private", "cat"]);
    expect(names(await list("?period=AllTime"))).toHaveLength(6);
    expect(names(await list("?sort=Most+Reactions&period=Week"))).toEqual(["bird", "example"]);
  });

  it("answers 100 items per page by default and accepts limits from 0 to 200", async () => {
    const all = await list("");
    expect(all.body.items).toHaveLength(6);
    expect(all.body.metadata).toEqual({ currentPage: 1, pageSize: 100 });
    expect((await list("?limit=200")).body.metadata.pageSize).toBe(200);
    expect((await list("?limit=0")).body.metadata.pageSize).toBe(100);
  });

  it("answers bad parameter values with 400 and an error naming the parameter", async () => {
    const cases: [string, string][] = [
      ["?limit=201", "limit"],
      ["?limit=-1", "limit"],
      ["?limit=ten", "limit"],
      ["?postId=abc", "postId"],
      ["?postId=0", "postId"],
      ["?modelId=1.5", "modelId"],
      ["?modelVersionId=99999999999999999999", "modelVersionId"],
      ["?nsfw=maybe", "nsfw"],
      ["?sort=Popular", "sort"],
      ["?period=Decade", "period"],
      ["?page=0", "page"],
      ["?page=two", "page"],
      ["?cursor=not-a-cursor", "cursor"],
      ["?page=2&cursor=abc", "cursor"],
    ];
    for (const [query, parameter] of cases) {
      const answer = await list(query);
      expect(answer.status, query).toBe(400);
      expect(answer.headers.get("content-type")).toMatch(/^application\/json/);
      expect(Object.keys(answer.body), query).toEqual(["error"]);
      expect(typeof answer.body.error).toBe("string");
      expect(answer.body.error, query).toContain(parameter);
    }
  });

  it("refuses a cursor issued for another filter or sort", async () => {
    const first = await list("?limit=1&sort=Newest");
    const cursor = new URL(first.body.metadata.nextPage).searchParams.get("cursor")!;
    const other = await list(`?limit=1&sort=Most+Comments&cursor=${encodeURIComponent(cursor)}`);
    expect(other.status).toBe(400);
    expect(other.body.error).toContain("cursor");
  });

  it("needs a key when anonymous reads are off: 401 in the same error shape", async () => {
    const anonymous = await list("?limit=1", {});
    expect(anonymous.status).toBe(401);
    expect(Object.keys(anonymous.body)).toEqual(["error"]);
    expect(anonymous.body.error).toMatch(/API key/);
    expect(anonymous.headers.get("www-authenticate")).toBe("Bearer");
    const wrong = await list("?limit=1", { authorization: "Bearer glk_not-a-real-key-at-all-000000" });
    expect(wrong.status).toBe(401);
    expect(typeof wrong.body.error).toBe("string");
  });

  it("accepts the key as X-Api-Key and shows an account its own and public images", async () => {
    const own = await list("", { "x-api-key": reactorB.key });
    expect(own.status).toBe(200);
    expect(names(own)).toEqual(["example", "bird", "dogcat", "cat", "old"]);
    const owner = await list("", { "x-api-key": reactorA.key });
    expect(names(owner)).toContain("private");
  });

  describe("with a rate limit of 2 requests a minute", () => {
    let limited: TestApp;
    beforeAll(async () => {
      limited = await startTestApp({ rateLimitPerMinute: 2 }, { clock }, t.db);
    });
    afterAll(async () => {
      await limited?.close();
    });

    it("answers 429 with Retry-After in the same error shape", async () => {
      const url = `http://127.0.0.1:${limited.app.httpPort}${PATH}?limit=1`;
      const key = { authorization: `Bearer ${limited.adminKey}` };
      expect((await get(url, key)).status).toBe(200);
      expect((await get(url, key)).status).toBe(200);
      const refused = await get(url, key);
      expect(refused.status).toBe(429);
      expect(Object.keys(refused.body)).toEqual(["error"]);
      expect(refused.body.error).toMatch(/rate limit/);
      expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    });
  });

  describe("with anonymous reads on", () => {
    let open: TestApp;
    beforeAll(async () => {
      // A second server over the same database, started with GLIMPSE_ANONYMOUS_READ on.
      open = await startTestApp({ anonymousRead: true }, { clock }, t.db);
    });
    afterAll(async () => {
      await open?.close();
    });

    it("lists public images without a key, and follows nextPage without one", async () => {
      const openBase = `http://127.0.0.1:${open.app.httpPort}`;
      const pages: Answer[] = [];
      let url: string | undefined = `${openBase}${PATH}?limit=3&sort=Newest`;
      while (url) {
        const page = await get(url);
        expect(page.status).toBe(200);
        pages.push(page);
        url = page.body.metadata.nextPage;
      }
      expect(pages[0].body.metadata.nextPage.startsWith(`${open.app.options.publicUrl}${PATH}?`)).toBe(true);
      expect(pages.flatMap((page) => names(page))).toEqual(["example", "bird", "dogcat", "cat", "old"]);
      expect(pages[0].body.items[0].meta).toEqual(SEED_META);
    });

    it("still refuses a key that is sent but wrong", async () => {
      const answer = await get(`http://127.0.0.1:${open.app.httpPort}${PATH}`, {
        "x-api-key": "glk_unknown-key-0000000000000000",
      });
      expect(answer.status).toBe(401);
      expect(typeof answer.body.error).toBe("string");
    });
  });
});
