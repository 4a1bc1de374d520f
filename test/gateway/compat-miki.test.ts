import type { Client } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Visibility } from "../../src/gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { startTestApp, type TestApp } from "../helpers/app.js";
import { distinctPng } from "../helpers/images.js";

/**
 * Seed 1 (miki's image API) under /compat/miki, over real HTTP: the list with 0-based pages
 * and tag expressions, one image by its snowflake id, errors, and reads with and without a
 * key.
 */

interface Answer {
  status: number;
  headers: Headers;
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

/** Images uploaded before the named ones, so the list runs over more than one page. */
const BULK = 101;

describe("miki-compatible images (seed 1)", () => {
  let t: TestApp;
  let images: Client<typeof ImageServiceDefinition>;
  let base: string;
  let auth: Record<string, string>;
  const ids: Record<string, string> = {};
  const bulkIds: string[] = [];
  const nameOf = (id: string) => Object.entries(ids).find(([, known]) => known === id)?.[0] ?? id;
  const names = (answer: Answer) => (answer.body as { id: string }[]).map((image) => nameOf(image.id));
  let uploads = 0;

  async function upload(tags: string[], visibility = Visibility.VISIBILITY_PUBLIC): Promise<string> {
    const { image } = await images.uploadImage({ content: await distinctPng(++uploads), tags, index: false, visibility });
    return image!.id;
  }

  const list = (query: string, headers = auth) => get(`${base}/compat/miki/images${query}`, headers);

  beforeAll(async () => {
    t = await startTestApp();
    base = `http://127.0.0.1:${t.app.httpPort}`;
    auth = { authorization: `Bearer ${t.adminKey}` };
    images = t.client(ImageServiceDefinition);
    for (let i = 0; i < BULK; i += 10) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(10, BULK - i) }, () => upload(["bulk"])),
      );
      bulkIds.push(...batch);
    }
    ids.cat = await upload(["animal", "cat"]);
    ids.dogcat = await upload(["animal", "dog", "cat"]);
    ids.dog = await upload(["animal", "dog"]);
    ids.retriever = await upload(["dog", "golden retriever"]);
    ids.car = await upload(["vehicle"]);
    ids.secret = await upload(["secret"], Visibility.VISIBILITY_PRIVATE);
    // The seed's example image.
    ids.lovebird = await upload(["animal", "bird:lovebird", "bird"]);
  });
  afterAll(async () => {
    await t?.close();
  });

  it("replays GET /images: the newest images first, each as {id, tags, url}", async () => {
    const answer = await list("");
    expect(answer.status).toBe(200);
    expect(answer.headers.get("content-type")).toMatch(/^application\/json/);
    expect(Array.isArray(answer.body)).toBe(true);
    expect(answer.body).toHaveLength(100);
    expect(names(answer).slice(0, 7)).toEqual(["lovebird", "secret", "car", "retriever", "dog", "dogcat", "cat"]);
    const ordered = (answer.body as { id: string }[]).map((image) => BigInt(image.id));
    expect(ordered.every((id, i) => i === 0 || id < ordered[i - 1])).toBe(true);

    const example = answer.body[0];
    expect(Object.keys(example)).toEqual(["id", "tags", "url"]);
    // A snowflake id beyond 2^53, written as a JSON number with every digit.
    expect(BigInt(ids.lovebird)).toBeGreaterThan(2n ** 53n);
    expect(answer.text.startsWith(`[{"id":${ids.lovebird},`)).toBe(true);
    expect(example.id).toBe(ids.lovebird);
    expect([...example.tags].sort()).toEqual(["animal", "bird", "bird:lovebird"]);
    expect(example.url).toBe(`${t.app.options.publicUrl}/v1/images/${ids.lovebird}/content`);
    for (const image of answer.body) {
      expect(typeof image.url).toBe("string");
      expect(image.tags.every((tag: unknown) => typeof tag === "string")).toBe(true);
    }
  });

  it("pages from 0: every image once, then an empty page", async () => {
    const first = await list("?page=0");
    const second = await list("?page=1");
    const third = await list("?page=2");
    expect(first.body).toHaveLength(100);
    expect(second.body).toHaveLength(BULK + Object.keys(ids).length - 100);
    expect(third.status).toBe(200);
    expect(third.body).toEqual([]);
    const seen = [...first.body, ...second.body].map((image: { id: string }) => image.id);
    expect(new Set(seen).size).toBe(seen.length);
    expect(new Set(seen)).toEqual(new Set([...bulkIds, ...Object.values(ids)]));
    expect(names(first)).toEqual(names(await list("")));
  });

  it("filters with the seed's tag expressions", async () => {
    expect(names(await list("?tags=animal+dog+-cat"))).toEqual(["dog"]);
    expect(names(await list("?tags=animal%2Bdog%2B-cat"))).toEqual(["dog"]);
    expect(names(await list("?tags=animal+-dog"))).toEqual(["lovebird", "cat"]);
    expect(names(await list("?tags=dog"))).toEqual(["retriever", "dog", "dogcat"]);
    expect(names(await list("?tags=Dog+-Animal"))).toEqual(["retriever"]);
    // A namespaced tag is matched whole and by its namespace.
    expect(names(await list("?tags=bird"))).toEqual(["lovebird"]);
    expect(names(await list("?tags=bird:lovebird"))).toEqual(["lovebird"]);
    // A literal '+' separates tags; an encoded space stays inside one.
    expect(names(await list("?tags=golden%20retriever"))).toEqual(["retriever"]);
    expect(names(await list("?tags=golden+retriever"))).toEqual([]);
    expect(names(await list("?tags=animal&page=0"))).toEqual(["lovebird", "dog", "dogcat", "cat"]);
    expect(await list("?tags=animal&page=1")).toMatchObject({ status: 200, body: [] });
    expect(names(await list("?tags=nothing-has-this"))).toEqual([]);
  });

  it("returns one image by its snowflake id in the same shape", async () => {
    const answer = await get(`${base}/compat/miki/images/${ids.lovebird}`, auth);
    expect(answer.status).toBe(200);
    expect(answer.text.startsWith(`{"id":${ids.lovebird},`)).toBe(true);
    expect(Object.keys(answer.body)).toEqual(["id", "tags", "url"]);
    expect(answer.body.id).toBe(ids.lovebird);
    expect([...answer.body.tags].sort()).toEqual(["animal", "bird", "bird:lovebird"]);
    expect(answer.body.url).toBe(`${t.app.options.publicUrl}/v1/images/${ids.lovebird}/content`);
  });

  it("answers an unknown id with 404 and a malformed one with 400, as {error}", async () => {
    const missing = await get(`${base}/compat/miki/images/1169529585188999168`, auth);
    expect(missing.status).toBe(404);
    expect(Object.keys(missing.body)).toEqual(["error"]);
    expect(missing.body.error).toContain("1169529585188999168");
    for (const id of ["abc", "0", "-5", "1.5", "99999999999999999999"]) {
      const bad = await get(`${base}/compat/miki/images/${id}`, auth);
      expect(bad.status, id).toBe(400);
      expect(Object.keys(bad.body)).toEqual(["error"]);
      expect(bad.body.error, id).toContain("id");
    }
  });

  it("answers bad page and tags values with 400 naming the parameter", async () => {
    for (const [query, parameter] of [
      ["?page=-1", "page"],
      ["?page=first", "page"],
      ["?page=1.5", "page"],
      ["?tags=animal++dog", "tags"],
      ["?tags=animal+-", "tags"],
      ["?tags=%E0%A4%A", "tags"],
    ]) {
      const answer = await list(query);
      expect(answer.status, query).toBe(400);
      expect(answer.headers.get("content-type")).toMatch(/^application\/json/);
      expect(Object.keys(answer.body)).toEqual(["error"]);
      expect(answer.body.error, query).toContain(parameter);
    }
  });

  it("needs a key when anonymous reads are off, taken from Authorization, Authentication or X-Api-Key", async () => {
    const none = await list("", {});
    expect(none.status).toBe(401);
    expect(Object.keys(none.body)).toEqual(["error"]);
    expect(none.headers.get("www-authenticate")).toBe("Bearer");
    const single = await get(`${base}/compat/miki/images/${ids.dog}`);
    expect(single.status).toBe(401);
    // The seed names the header "Authentication".
    const seedHeader = await list("?tags=bird", { authentication: `Bearer ${t.adminKey}` });
    expect(seedHeader.status).toBe(200);
    expect(names(seedHeader)).toEqual(["lovebird"]);
    const apiKey = await get(`${base}/compat/miki/images/${ids.dog}`, { "x-api-key": t.adminKey });
    expect(apiKey.status).toBe(200);
    const wrong = await list("", { authorization: "Bearer glk_not-a-real-key-at-all-000000" });
    expect(wrong.status).toBe(401);
  });

  describe("with anonymous reads on", () => {
    let open: TestApp;
    let openBase: string;
    beforeAll(async () => {
      // A second server over the same database, started with GLIMPSE_ANONYMOUS_READ on.
      open = await startTestApp({ anonymousRead: true }, {}, t.db);
      openBase = `http://127.0.0.1:${open.app.httpPort}`;
    });
    afterAll(async () => {
      await open?.close();
    });

    it("lists and reads public images without a key, never private ones", async () => {
      const listed = await get(`${openBase}/compat/miki/images?tags=animal+dog`);
      expect(listed.status).toBe(200);
      expect(names(listed)).toEqual(["dog", "dogcat"]);
      const first = await get(`${openBase}/compat/miki/images`);
      expect(names(first)).not.toContain("secret");
      expect(first.body).toHaveLength(100);
      const one = await get(`${openBase}/compat/miki/images/${ids.lovebird}`);
      expect(one.status).toBe(200);
      expect(one.body.id).toBe(ids.lovebird);
      expect(one.body.url.startsWith(open.app.options.publicUrl)).toBe(true);
      const hidden = await get(`${openBase}/compat/miki/images/${ids.secret}`);
      expect(hidden.status).toBe(404);
      expect(Object.keys(hidden.body)).toEqual(["error"]);
    });
  });
});
