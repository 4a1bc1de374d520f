import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestAccount, type TestApp } from "../helpers/app.js";
import { distinctPng, solidImage } from "../helpers/images.js";
import { ClientError } from "nice-grpc";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";

/** One HTTP exchange with the bridge, JSON decoded when the answer is JSON. */
interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

/** A key in the range where JSON numbers lose precision: only a string carries it exactly. */
const BIG_ID = "9007199254740993";

describe("native HTTP/JSON routes", () => {
  let t: TestApp;
  let base: string;
  let user: TestAccount;

  /** Sends `body` as JSON (or as is, when it is a string, FormData or Buffer) with the admin key. */
  async function call(
    method: string,
    path: string,
    options: { body?: unknown; key?: string | null; headers?: Record<string, string> } = {},
  ): Promise<Answer> {
    const headers: Record<string, string> = { ...options.headers };
    const key = options.key === undefined ? t.adminKey : options.key;
    if (key) headers.authorization = `Bearer ${key}`;
    let body: RequestInit["body"];
    if (options.body instanceof FormData || typeof options.body === "string" || Buffer.isBuffer(options.body)) {
      body = options.body as RequestInit["body"];
    } else if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers["content-type"] ??= "application/json";
    }
    const res = await fetch(`${base}${path}`, { method, headers, body });
    const text = await res.text();
    const isJson = (res.headers.get("content-type") ?? "").startsWith("application/json");
    return { status: res.status, headers: res.headers, text, json: isJson && text ? JSON.parse(text) : undefined };
  }

  async function upload(fields: Record<string, unknown> = {}, seed = 1, key?: string): Promise<any> {
    const content = (await distinctPng(seed)).toString("base64");
    const res = await call("POST", "/v1/images", { body: { content, ...fields }, key });
    expect(res.status, res.text).toBe(200);
    return res.json.image;
  }

  beforeAll(async () => {
    // A small upload limit keeps the body-limit test cheap (the bridge allows about 4/3 of it + 1 MiB).
    t = await startTestApp({ maxUploadBytes: 200_000 });
    base = `http://127.0.0.1:${t.app.httpPort}`;
    user = await t.newAccount({ credits: 100 });
  });
  afterAll(async () => {
    await t?.close();
  });

  describe("images", () => {
    it("uploads JSON with base64 content and answers every field, unset ones with their defaults", async () => {
      const png = await distinctPng(1);
      const res = await call("POST", "/v1/images", {
        body: {
          content: png.toString("base64url"), // the URL-safe alphabet, unpadded, is accepted too
          fileName: "first.png",
          tags: ["Animal", "dog"],
          nsfw_level: "NSFW_LEVEL_SOFT", // original proto names are accepted on input
          visibility: "VISIBILITY_PUBLIC",
          postId: BIG_ID,
          modelId: 42, // int64 as a JSON number is accepted
          meta: { prompt: "a dog", seed: 7, nested: { list: [1, "two", null, true] } },
          annotations: { classes: { dog: 1 }, boxes: [{ className: "dog", x: 1, y: 2, width: 10, height: 12 }] },
          clientOnly: "skipped", // unknown fields are skipped, as grpc-gateway v2's default marshaler does
        },
      });
      expect(res.status, res.text).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
      const image = res.json.image;
      expect(image).toMatchObject({
        fileName: "first.png",
        mediaType: "image/png",
        width: 32,
        height: 24,
        byteSize: String(png.length),
        tags: ["animal", "dog"],
        nsfw: true,
        nsfwLevel: "NSFW_LEVEL_SOFT",
        visibility: "VISIBILITY_PUBLIC",
        indexStatus: expect.stringMatching(/^INDEX_STATUS_/),
        postId: BIG_ID,
        modelId: "42",
        meta: { prompt: "a dog", seed: 7, nested: { list: [1, "two", null, true] } },
        annotations: { count: 1, classes: { dog: 1 }, boxes: [{ className: "dog", x: 1, y: 2, width: 10, height: 12 }] },
        stats: { likeCount: "0", heartCount: "0", commentCount: "0", reactionCount: "0" },
        username: "",
        indexError: "",
        deduplicated: false,
      });
      expect(image.id).toMatch(/^\d+$/);
      expect(image.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
      expect(image.url).toBe(`${base}/v1/images/${image.id}/content`);
      // proto3 `optional` fields are left out when unset; no bytes in the metadata view.
      expect(image).not.toHaveProperty("modelVersionId");
      expect(image).not.toHaveProperty("content");
      // lowerCamelCase only on output.
      expect(image).not.toHaveProperty("file_name");
    });

    it("writes unset message fields as null, empty repeated fields as [] and enums by name", async () => {
      const image = await upload({}, 2);
      expect(image.meta).toBeNull();
      expect(image.tags).toEqual([]);
      expect(image.visibility).toBe("VISIBILITY_PRIVATE");
      expect(image.nsfwLevel).toBe("NSFW_LEVEL_NONE");
      expect(image.fileName).toBe("");
      expect(Object.keys(image)).toEqual(expect.arrayContaining(["id", "url", "stats", "updatedAt", "owner", "hash", "phash", "sha256"]));
      const empty = await call("GET", `/v1/images?filter.tags=nothing-has-this-tag`);
      expect(empty.status).toBe(200);
      expect(empty.json).toEqual({
        images: [],
        nextPageToken: "",
        metadata: { nextCursor: "", currentPage: 1, pageSize: 100, nextPage: "" },
      });
    });

    it("uploads multipart/form-data: the file becomes content and its name the file name", async () => {
      const png = await distinctPng(3);
      const form = new FormData();
      form.append("image", new Blob([png], { type: "image/png" }), "from-disk.png");
      form.append("tags", "cat");
      form.append("tags", "Cute");
      form.append("meta", JSON.stringify({ prompt: "a cat", steps: 20 }));
      form.append("annotations", JSON.stringify({ classes: { cat: 2 } }));
      form.append("nsfwLevel", "NSFW_LEVEL_NONE");
      form.append("visibility", "VISIBILITY_PUBLIC");
      form.append("post_id", BIG_ID);
      const res = await call("POST", "/v1/images", { body: form });
      expect(res.status, res.text).toBe(200);
      expect(res.json.image).toMatchObject({
        fileName: "from-disk.png",
        byteSize: String(png.length),
        tags: ["cat", "cute"],
        meta: { prompt: "a cat", steps: 20 },
        annotations: { count: 2, classes: { cat: 2 } },
        visibility: "VISIBILITY_PUBLIC",
        postId: BIG_ID,
      });
      // A field part overrides the file's own name.
      const named = new FormData();
      named.append("file", new Blob([await distinctPng(4)]), "ignored.png");
      named.append("fileName", "chosen.png");
      const second = await call("POST", "/v1/images", { body: named });
      expect(second.status, second.text).toBe(200);
      expect(second.json.image.fileName).toBe("chosen.png");
      const badMeta = new FormData();
      badMeta.append("file", new Blob([await distinctPng(5)]), "x.png");
      badMeta.append("meta", "{not json");
      const bad = await call("POST", "/v1/images", { body: badMeta });
      expect(bad.status).toBe(400);
      expect(bad.json.details[0].fieldViolations[0].field).toBe("meta");
    });

    it("gets an image, with its bytes when the view asks, and int64 ids above 2^53 survive", async () => {
      const png = await distinctPng(6);
      const image = await upload({ modelVersionId: BIG_ID }, 6);
      const res = await call("GET", `/v1/images/${image.id}`);
      expect(res.status).toBe(200);
      expect(res.json.image).toMatchObject({ id: image.id, modelVersionId: BIG_ID });
      expect(res.json.image).not.toHaveProperty("content");
      const withBytes = await call("GET", `/v1/images/${image.id}?view=IMAGE_VIEW_WITH_CONTENT`);
      expect(Buffer.from(withBytes.json.image.content, "base64").equals(png)).toBe(true);
      // Enums in query parameters also by number.
      const byNumber = await call("GET", `/v1/images/${image.id}?view=2`);
      expect(byNumber.json.image.content).toBe(withBytes.json.image.content);
    });

    it("lists with nested filters from the query string: repeated keys, maps, enums, int64", async () => {
      const post = "9007199254740995";
      await upload({ tags: ["list-a", "list-b"], meta: { split: "train" }, postId: post, nsfwLevel: "NSFW_LEVEL_MATURE" }, 10);
      await upload({ tags: ["list-a", "list-b"], meta: { split: "valid" } }, 11);
      await upload({ tags: ["list-a"] }, 12);
      const both = await call("GET", "/v1/images?filter.tags=list-a&filter.tags=list-b&includeTotal=true");
      expect(both.status, both.text).toBe(200);
      expect(both.json.images).toHaveLength(2);
      expect(both.json.metadata.totalItems).toBe("2");
      const train = await call("GET", "/v1/images?filter.tags=list-a&filter.meta_equals[split]=train");
      expect(train.json.images.map((i: any) => i.meta)).toEqual([{ split: "train" }]);
      const byPost = await call("GET", `/v1/images?filter.postId=${post}&filter.nsfwLevel=NSFW_LEVEL_MATURE`);
      expect(byPost.json.images.map((i: any) => i.postId)).toEqual([post]);
      const paged = await call("GET", "/v1/images?filter.tags=list-a&page_size=2&sort=IMAGE_SORT_OLDEST");
      expect(paged.json.images.map((i: any) => i.tags)).toEqual([
        ["list-a", "list-b"],
        ["list-a", "list-b"],
      ]);
      expect(paged.json.nextPageToken).not.toBe("");
      const next = await call("GET", `/v1/images?filter.tags=list-a&page_size=2&sort=IMAGE_SORT_OLDEST&pageToken=${encodeURIComponent(paged.json.nextPageToken)}`);
      expect(next.json.images.map((i: any) => i.tags)).toEqual([["list-a"]]);
      // Parameters that name no field are ignored, as grpc-gateway does.
      expect((await call("GET", "/v1/images?filter.tags=list-a&utm_source=mail")).json.images).toHaveLength(3);
    });

    it("updates the fields an update mask names, or those the PATCH body sets", async () => {
      const image = await upload({ tags: ["before"], username: "someone", fileName: "old.png" }, 20);
      const masked = await call("PATCH", `/v1/images/${image.id}?updateMask=tags,fileName`, {
        body: { tags: ["after"], fileName: "new.png", username: "not applied" },
      });
      expect(masked.status, masked.text).toBe(200);
      expect(masked.json.image).toMatchObject({ tags: ["after"], fileName: "new.png", username: "someone" });
      // No mask: grpc-gateway derives it from the body's fields.
      const derived = await call("PATCH", `/v1/images/${image.id}`, { body: { username: "renamed", meta: { k: "v" } } });
      expect(derived.status, derived.text).toBe(200);
      expect(derived.json.image).toMatchObject({ tags: ["after"], fileName: "new.png", username: "renamed", meta: { k: "v" } });
      // Sending back what GET answered works: output-only fields stay out of the derived mask.
      const read = (await call("GET", `/v1/images/${image.id}`)).json.image;
      const roundTrip = await call("PATCH", `/v1/images/${image.id}`, { body: { ...read, visibility: "VISIBILITY_PUBLIC" } });
      expect(roundTrip.status, roundTrip.text).toBe(200);
      expect(roundTrip.json.image).toMatchObject({ visibility: "VISIBILITY_PUBLIC", username: "renamed" });
      const unknownPath = await call("PATCH", `/v1/images/${image.id}?update_mask=width`, { body: { width: 3 } });
      expect(unknownPath.status).toBe(400);
      expect(unknownPath.json.details[0].fieldViolations[0].field).toBe("update_mask");
    });

    it("deletes an image; it is then not found", async () => {
      const image = await upload({}, 30);
      const res = await call("DELETE", `/v1/images/${image.id}`);
      expect(res.status).toBe(200);
      expect(res.json).toEqual({});
      const gone = await call("GET", `/v1/images/${image.id}`);
      expect(gone.status).toBe(404);
      expect(gone.json).toMatchObject({ code: 5, details: [] });
      expect(gone.json.message).toContain(image.id);
    });

    it("adds reactions by body and by path (additional binding), removes them, and comments", async () => {
      const image = await upload({ visibility: "VISIBILITY_PUBLIC" }, 40);
      const like = await call("POST", `/v1/images/${image.id}/reactions`, { body: { kind: "REACTION_KIND_LIKE" } });
      expect(like.status, like.text).toBe(200);
      expect(like.json).toEqual({
        stats: { likeCount: "1", heartCount: "0", laughCount: "0", cryCount: "0", dislikeCount: "0", commentCount: "0", reactionCount: "1" },
        changed: true,
      });
      const heart = await call("PUT", `/v1/images/${image.id}/reactions/REACTION_KIND_HEART`);
      expect(heart.json.stats).toMatchObject({ heartCount: "1", reactionCount: "2" });
      const again = await call("PUT", `/v1/images/${image.id}/reactions/2`, { key: t.adminKey });
      expect(again.json.changed).toBe(false);
      const byUser = await call("PUT", `/v1/images/${image.id}/reactions/REACTION_KIND_LAUGH`, { key: user.key });
      expect(byUser.json.stats.laughCount).toBe("1");
      const removed = await call("DELETE", `/v1/images/${image.id}/reactions/REACTION_KIND_LIKE`);
      expect(removed.json).toMatchObject({ stats: { likeCount: "0", reactionCount: "2" }, changed: true });

      const comment = await call("POST", `/v1/images/${image.id}/comments`, { body: { text: "  nice one  " }, key: user.key });
      expect(comment.status, comment.text).toBe(200);
      expect(comment.json.comment).toMatchObject({ imageId: image.id, accountId: user.id, text: "nice one" });
      expect(comment.json.comment.id).toMatch(/^\d+$/);
      const form = await call("POST", `/v1/images/${image.id}/comments`, {
        body: "text=second",
        headers: { "content-type": "application/x-www-form-urlencoded" },
      });
      expect(form.json.comment.text).toBe("second");
      // What `curl -d '{...}'` sends: JSON labelled as a form.
      const curlish = await call("POST", `/v1/images/${image.id}/comments`, {
        body: JSON.stringify({ text: "third" }),
        headers: { "content-type": "application/x-www-form-urlencoded" },
      });
      expect(curlish.json.comment.text).toBe("third");
      const page = await call("GET", `/v1/images/${image.id}/comments?pageSize=1`);
      expect(page.json.comments.map((c: any) => c.text)).toEqual(["nice one"]);
      const rest = await call("GET", `/v1/images/${image.id}/comments?pageSize=1&pageToken=${encodeURIComponent(page.json.nextPageToken)}`);
      expect(rest.json.comments.map((c: any) => c.text)).toEqual(["second"]);
    });

    it("finds near-duplicates; without an index the optional score is left out", async () => {
      const colour = { r: 200, g: 40, b: 90 };
      const original = await call("POST", "/v1/images", { body: { content: (await solidImage(64, 64, colour, "png", 1)).toString("base64") } });
      const copy = await call("POST", "/v1/images", { body: { content: (await solidImage(64, 64, colour, "jpeg", 2)).toString("base64") } });
      const res = await call("GET", `/v1/images/${original.json.image.id}/duplicates?maxHammingDistance=64&limit=50`);
      expect(res.status, res.text).toBe(200);
      const found = res.json.duplicates.find((d: any) => d.imageId === copy.json.image.id);
      expect(found).toBeDefined();
      expect(found.hammingDistance).toBeLessThanOrEqual(64);
      expect(found).not.toHaveProperty("score");
      expect(found.image.id).toBe(copy.json.image.id);
    });

    it("uploads a batch as newline-delimited JSON and answers one NDJSON line per item", async () => {
      const lines = [
        { request: { content: (await distinctPng(50)).toString("base64"), fileName: "a.png", requestId: "7b0c4b9e-4a4c-4d4c-9a57-1c1b1d1e1f10" } },
        { request: { content: Buffer.from("not an image").toString("base64"), fileName: "b.png" } },
        { request: { content: (await distinctPng(51)).toString("base64"), fileName: "c.png" } },
      ];
      const res = await call("POST", "/v1/images:batchUpload", {
        body: lines.map((l) => JSON.stringify(l)).join("\n") + "\n",
        headers: { "content-type": "application/x-ndjson" },
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("application/x-ndjson");
      const results = res.text.trim().split("\n").map((l) => JSON.parse(l).result);
      expect(results).toHaveLength(3);
      const byIndex = new Map(results.map((r: any) => [r.index, r]));
      expect(byIndex.get(0)).toMatchObject({ requestId: lines[0].request.requestId, image: { fileName: "a.png" } });
      expect(byIndex.get(1).error).toMatchObject({ code: 3 });
      expect(byIndex.get(1)).not.toHaveProperty("image");
      expect(byIndex.get(2).image.fileName).toBe("c.png");
      // A stream that fails before its first answer: its status and grpc-gateway's {error} chunk.
      const broken = await call("POST", "/v1/images:batchUpload", { body: '{"request": {"fileName": 5}}\n' });
      expect(broken.status).toBe(400);
      expect(broken.text.endsWith("}\n")).toBe(true);
      expect(broken.json.error.details[0].fieldViolations[0].field).toBe("request.file_name");
      const refused = await call("POST", "/v1/images:batchUpload", { body: "{}\n", key: null });
      expect(refused.status).toBe(401);
      expect(refused.json.error).toMatchObject({ code: 16, details: [] });
    });

    it("takes the NDJSON upload body as application/x-ndjson, application/json or unlabelled", async () => {
      const line = async (seed: number) =>
        `${JSON.stringify({ request: { content: (await distinctPng(seed)).toString("base64"), fileName: `${seed}.png` } })}\n`;
      for (const [seed, type] of [[52, "application/json"], [53, "application/x-ndjson; charset=utf-8"], [54, undefined]] as const) {
        const res = await call("POST", "/v1/images:batchUpload", {
          body: (await line(seed)) + (await line(seed + 10)),
          headers: type ? { "content-type": type } : {},
        });
        expect(res.status, `${type}: ${res.text}`).toBe(200);
        expect(res.headers.get("content-type")).toBe("application/x-ndjson");
        const names = res.text.trim().split("\n").map((l) => JSON.parse(l).result.image.fileName);
        expect(names.sort(), String(type)).toEqual([`${seed}.png`, `${seed + 10}.png`]);
      }
    });
  });

  describe("accounts and generation", () => {
    it("creates an account, reads it both ways, grants credits and lists usage", async () => {
      const created = await call("POST", "/v1/accounts", {
        body: { email: "http-user@example.com", username: "http", initialCredits: "25", createApiKey: true },
      });
      expect(created.status, created.text).toBe(200);
      const { account, apiKey, apiKeySecret } = created.json;
      expect(account).toMatchObject({ email: "http-user@example.com", creditBalance: "25", reservedCredits: "0", isAdmin: false });
      expect(apiKey).toMatchObject({ accountId: account.id, lastUsedAt: null, revokedAt: null });
      const own = await call("GET", "/v1/account", { key: apiKeySecret });
      expect(own.json.account.id).toBe(account.id);
      const byId = await call("GET", `/v1/accounts/${account.id}`);
      expect(byId.json.account.email).toBe("http-user@example.com");
      const granted = await call("POST", `/v1/accounts/${account.id}/credits:grant`, { body: { amount: 10, description: "bonus" } });
      expect(granted.status, granted.text).toBe(200);
      expect(granted.json.account.creditBalance).toBe("35");
      expect(granted.json.transaction).toMatchObject({ amount: "10", type: "TRANSACTION_TYPE_GRANT", balanceAfter: "35" });
      const usage = await call("GET", "/v1/account/usage?limit=10", { key: apiKeySecret });
      expect(usage.json.transactions.map((x: any) => x.amount)).toEqual(expect.arrayContaining(["10"]));
      expect(usage.json.limit).toBe(10);
    });

    it("creates, lists and revokes API keys", async () => {
      const made = await call("POST", "/v1/account/keys", { body: { name: "laptop", rateLimitPerMinute: 30 }, key: user.key });
      expect(made.status, made.text).toBe(200);
      expect(made.json.apiKey).toMatchObject({ name: "laptop", rateLimitPerMinute: 30, revokedAt: null });
      expect(made.json.secret).toMatch(/^glk_/);
      const listed = await call("GET", "/v1/account/keys", { key: user.key });
      expect(listed.json.apiKeys.map((k: any) => k.name)).toContain("laptop");
      const revoked = await call("DELETE", `/v1/account/keys/${made.json.apiKey.id}`, { key: user.key });
      expect(revoked.status, revoked.text).toBe(200);
      expect(revoked.json.apiKey.revokedAt).toMatch(/Z$/);
      const withRevoked = await call("GET", "/v1/account/keys?showRevoked=true", { key: user.key });
      expect(withRevoked.json.apiKeys.find((k: any) => k.id === made.json.apiKey.id).revokedAt).not.toBeNull();
      const refused = await call("GET", "/v1/account", { key: made.json.secret });
      expect(refused.status).toBe(401);
    });

    it("lists models and generates with the local renderer, charging credits", async () => {
      const models = await call("GET", "/v1/models", { key: user.key });
      const local = models.json.models.find((m: any) => m.id === "local:gradient");
      expect(local).toMatchObject({ providerId: "local", available: true, local: true, unavailableReason: "" });
      const made = await call("POST", "/v1/generations", {
        body: { prompt: "a lighthouse", modelId: "local:gradient", aspectRatio: "1:1", visibility: "VISIBILITY_PRIVATE" },
        key: user.key,
      });
      expect(made.status, made.text).toBe(200);
      const { generation, credits } = made.json;
      expect(generation).toMatchObject({ prompt: "a lighthouse", modelId: "local:gradient", providerId: "local", thinkingLevel: expect.any(String) });
      expect(generation.imageId).toMatch(/^[1-9]\d*$/);
      expect(Number(credits.remaining)).toBe(100 - Number(credits.charged));
      const listed = await call("GET", "/v1/generations?limit=5", { key: user.key });
      expect(listed.json.generations.map((g: any) => g.id)).toContain(generation.id);
      const one = await call("GET", `/v1/generations/${generation.id}?view=IMAGE_VIEW_WITH_CONTENT`, { key: user.key });
      expect(one.json.generation.content).toMatch(/^[A-Za-z0-9+/]+=*$/);
      const image = await call("GET", `/v1/images/${generation.imageId}`, { key: user.key });
      expect(image.status).toBe(200);
    });
  });

  describe("errors", () => {
    it("answers malformed JSON, wrong types and unknown enum names with 400 naming the field", async () => {
      const image = await upload({}, 60);
      const malformed = await call("POST", `/v1/images/${image.id}/comments`, { body: '{"text": "unterminated' });
      expect(malformed.status).toBe(400);
      expect(malformed.json).toMatchObject({ code: 3, details: [] });
      expect(malformed.json.message).toContain("not valid JSON");

      const wrongType = await call("POST", "/v1/images:search", { body: { prompt: "x", limit: "many" } });
      expect(wrongType.status).toBe(400);
      expect(wrongType.json.details).toEqual([
        {
          "@type": "type.googleapis.com/google.rpc.BadRequest",
          fieldViolations: [{ field: "limit", description: expect.stringContaining("integer"), reason: "", localizedMessage: null }],
        },
      ]);

      const nested = await call("POST", "/v1/images", { body: { content: "", annotations: { boxes: [{ className: 7 }] } } });
      expect(nested.json.details[0].fieldViolations[0].field).toBe("annotations.boxes[0].class_name");

      const badEnum = await call("POST", `/v1/images/${image.id}/reactions`, { body: { kind: "REACTION_KIND_WOW" } });
      expect(badEnum.status).toBe(400);
      expect(badEnum.json.message).toContain("REACTION_KIND_WOW");
      expect(badEnum.json.details[0].fieldViolations[0].field).toBe("kind");

      const badQuery = await call("GET", "/v1/images?pageSize=ten");
      expect(badQuery.status).toBe(400);
      expect(badQuery.json.details[0].fieldViolations[0].field).toBe("page_size");

      const badPath = await call("GET", "/v1/images/not-a-number");
      expect(badPath.status).toBe(400);
      expect(badPath.json.details[0].fieldViolations[0].field).toBe("id");

      const bigInt32 = await call("GET", "/v1/images?pageSize=3000000000");
      expect(bigInt32.json.details[0].fieldViolations[0].description).toContain("out of range");
    });

    it("passes the server's own INVALID_ARGUMENT through with its BadRequest details", async () => {
      const res = await call("GET", "/v1/images?pageSize=500");
      expect(res.status).toBe(400);
      expect(res.json.code).toBe(3);
      expect(res.json.details[0]).toMatchObject({
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        fieldViolations: [expect.objectContaining({ field: "page_size" })],
      });
    });

    it("answers 401 without a key and 403 for another account's public image", async () => {
      const none = await call("GET", "/v1/images", { key: null });
      expect(none.status).toBe(401);
      expect(none.json).toMatchObject({ code: 16 });
      expect(none.headers.get("www-authenticate")).toMatch(/^Bearer/);
      const image = await upload({ visibility: "VISIBILITY_PUBLIC" }, 70);
      const denied = await call("DELETE", `/v1/images/${image.id}`, { key: user.key });
      expect(denied.status).toBe(403);
      expect(denied.json.code).toBe(7);
    });

    it("answers 404 for unknown paths and ids, 501 for a known path under another method", async () => {
      const path = await call("GET", "/v1/imagez");
      expect(path.status).toBe(404);
      expect(path.json.code).toBe(5);
      const id = await call("GET", "/v1/images/123456789");
      expect(id.status).toBe(404);
      expect(id.json.code).toBe(5);
      const method = await call("PUT", "/v1/images");
      expect(method.status).toBe(501);
      expect(method.json.code).toBe(12);
    });

    it("answers an empty path variable (a trailing slash) with 400 naming the field, as grpc-gateway does", async () => {
      const cases: [string, string, string][] = [
        ["GET", "/v1/images/", "id"],
        ["DELETE", "/v1/images/", "id"],
        ["PATCH", "/v1/images/", "image.id"],
        ["GET", "/v1/images//content", "id"],
        ["GET", "/v1/images//comments", "image_id"],
        ["DELETE", "/v1/account/keys/", "key_id"],
      ];
      for (const [method, path, field] of cases) {
        const res = await call(method, path, method === "PATCH" ? { body: { tags: ["x"] } } : {});
        expect(res.status, `${method} ${path}: ${res.text}`).toBe(400);
        expect(res.json.code).toBe(3);
        expect(res.json.details[0].fieldViolations[0].field, `${method} ${path}`).toBe(field);
      }
      // The collection itself and its other methods are unchanged.
      expect((await call("GET", "/v1/images")).status).toBe(200);
      expect((await call("POST", "/v1/images/")).status).toBe(501);
    });

    it("answers 429 with Retry-After when a key's rate limit is spent", async () => {
      const slow = await call("POST", "/v1/account/keys", { body: { name: "slow", rateLimitPerMinute: 1 }, key: user.key });
      const key = slow.json.secret;
      expect((await call("GET", "/v1/account", { key })).status).toBe(200);
      const limited = await call("GET", "/v1/account", { key });
      expect(limited.status).toBe(429);
      expect(limited.json.code).toBe(8);
      expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(limited.json.details).toContainEqual({
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        retryDelay: expect.stringMatching(/^\d+(\.\d+)?s$/),
      });
    });

    it("answers FAILED_PRECONDITION as 400 (no embedding model to wait for)", async () => {
      const res = await call("POST", "/v1/images", { body: { content: (await distinctPng(80)).toString("base64"), waitForIndex: true } });
      expect(res.status).toBe(400);
      expect(res.json.code).toBe(9);
    });

    it("answers an upload body over the limit as gRPC and multipart do: INVALID_ARGUMENT naming content and the limit", async () => {
      const res = await call("POST", "/v1/images", { body: { content: "A".repeat(1_700_000) } });
      expect(res.status).toBe(400);
      expect(res.json.code).toBe(3);
      expect(res.json.message).toBe("content: image is larger than the limit of 195.3 KiB");
      expect(res.json.details).toMatchObject([
        {
          "@type": "type.googleapis.com/google.rpc.BadRequest",
          fieldViolations: [{ field: "content", description: "image is larger than the limit of 195.3 KiB" }],
        },
      ]);
      const grpc = await t
        .client(ImageServiceDefinition)
        .uploadImage({ content: Buffer.alloc(200_001, 1) })
        .catch((error: ClientError) => error);
      expect((grpc as ClientError).details).toBe(res.json.message);
      const form = new FormData();
      form.append("content", new Blob([Buffer.alloc(200_001, 1)]), "big.png");
      const multipart = await fetch(`${base}/v1/images`, { method: "POST", body: form, headers: { authorization: `Bearer ${t.adminKey}` } });
      expect(multipart.status).toBe(400);
      expect(((await multipart.json()) as { message: string }).message).toBe(res.json.message);
    });

    it("answers 413 for a body over the limit on a route that carries no image", async () => {
      const res = await call("POST", "/v1/account/keys", { body: { name: "A".repeat(1_700_000) } });
      expect(res.status).toBe(413);
      expect(res.json.code).toBe(8);
    });

    it("takes Grpc-Timeout as the call's deadline and answers 504 once it passed", async () => {
      const expired = await call("GET", "/v1/images", { headers: { "grpc-timeout": "1n" } });
      expect(expired.status).toBe(504);
      expect(expired.json.code).toBe(4);
      expect((await call("GET", "/v1/images", { headers: { "grpc-timeout": "30S" } })).status).toBe(200);
      const invalid = await call("GET", "/v1/images", { headers: { "grpc-timeout": "soon" } });
      expect(invalid.status).toBe(400);
    });
  });

  it("passes x-request-id through and echoes it, or the id the server gave the call", async () => {
    const sent = await call("GET", "/v1/account", { headers: { "x-request-id": "req-http-123" } });
    expect(sent.headers.get("x-request-id")).toBe("req-http-123");
    const given = await call("GET", "/v1/account");
    expect(given.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    // The server's response headers also come back as grpc-gateway forwards them.
    expect(given.headers.get("grpc-metadata-x-request-id")).toBe(given.headers.get("x-request-id"));
    const failed = await call("GET", "/v1/images/123456789", { headers: { "x-request-id": "req-http-404" } });
    expect(failed.headers.get("x-request-id")).toBe("req-http-404");
  });

  it("forwards Grpc-Metadata-* headers as call metadata", async () => {
    // x-api-key as a Grpc-Metadata header reaches the server as the call's key.
    const res = await call("GET", "/v1/account", { key: null, headers: { "Grpc-Metadata-X-Api-Key": user.key } });
    expect(res.status).toBe(200);
    expect(res.json.account.id).toBe(user.id);
  });
});
