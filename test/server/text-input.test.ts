import { ClientError, Status, type Client, type Metadata } from "nice-grpc";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccountServiceDefinition } from "../../src/gen/glimpse/account/v1/account_service.js";
import { GenerationServiceDefinition } from "../../src/gen/glimpse/generation/v1/generation_service.js";
import { ImageServiceDefinition, ImageSort } from "../../src/gen/glimpse/image/v1/image_service.js";
import { decodeStatusDetails } from "../../src/server/status-details.js";
import { startTestApp, type TestApp } from "../helpers/app.js";
import { distinctPng } from "../helpers/images.js";

/**
 * Request text PostgreSQL cannot store (U+0000) is refused as INVALID_ARGUMENT naming the field,
 * on every transport, before anything is written; other request values that used to reach
 * PostgreSQL and fail there as INTERNAL (out-of-range ids in cursors and page tokens, keys gRPC
 * metadata cannot carry) are refused by name too.
 */

const NUL = "must not contain the NUL character (U+0000)";
const KEY_NUL = `the key ${NUL}`;

type ImageClient = Client<typeof ImageServiceDefinition>;
type Options = { onTrailer: (t: Metadata) => void };

/** The status and field violations of a call that must fail. */
async function failure(call: (options: Options) => Promise<unknown>) {
  let trailer: Metadata | undefined;
  const err = await call({ onTrailer: (t) => (trailer = t) }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ClientError);
  const raw = trailer?.get("grpc-status-details-bin") as unknown as Uint8Array | undefined;
  const details = raw ? decodeStatusDetails(raw) : undefined;
  return { code: (err as ClientError).code, message: (err as ClientError).details, violations: details?.violations ?? [] };
}

/** Expects INVALID_ARGUMENT with exactly these violations. */
async function expectRefused(call: (options: Options) => Promise<unknown>, violations: { field: string; description: string }[]) {
  const { code, message, violations: got } = await failure(call);
  expect(code, message).toBe(Status.INVALID_ARGUMENT);
  expect(got).toEqual(violations);
}

describe("request text with NUL", () => {
  let t: TestApp;
  let client: ImageClient;
  let sql: postgres.Sql;
  let base: string;
  let imageId: string;
  let png = 2000;

  const count = async (table: "images" | "comments") =>
    Number((await sql`select count(*)::int as n from ${sql(table)}`)[0].n);

  beforeAll(async () => {
    t = await startTestApp();
    client = t.client(ImageServiceDefinition);
    sql = postgres(t.db.url, { max: 1, onnotice: () => {} });
    base = `http://127.0.0.1:${t.app.httpPort}`;
    const { image } = await client.uploadImage({
      content: await distinctPng(png++),
      username: "ada",
      meta: { prompt: "a lighthouse" },
      index: false,
    });
    imageId = image!.id;
  });

  afterAll(async () => {
    await sql?.end();
    await t?.close();
  });

  describe("gRPC", () => {
    it("UploadImage: username, meta keys and values, annotation classes; nothing is stored", async () => {
      const before = await count("images");
      const upload = async (fields: Record<string, unknown>) => {
        const content = await distinctPng(png++);
        return (options: Options) => client.uploadImage({ content, index: false, ...fields }, options);
      };
      await expectRefused(await upload({ username: "a\u0000b" }), [{ field: "username", description: NUL }]);
      await expectRefused(await upload({ meta: { "seed\u0000": 1 } }), [{ field: "meta.seed\\u0000", description: KEY_NUL }]);
      await expectRefused(await upload({ meta: { prompt: "sky\u0000" } }), [{ field: "meta.prompt", description: NUL }]);
      await expectRefused(await upload({ meta: { loras: [{ name: "ok" }, { name: "x\u0000" }] } }), [
        { field: "meta.loras[1].name", description: NUL },
      ]);
      await expectRefused(await upload({ annotations: { count: 0, classes: { "cat\u0000": 1 }, boxes: [] } }), [
        { field: "annotations.classes[cat\\u0000]", description: KEY_NUL },
      ]);
      await expectRefused(
        await upload({
          annotations: { count: 0, classes: {}, boxes: [{ className: "\u0000", x: 0, y: 0, width: 1, height: 1 }] },
        }),
        [{ field: "annotations.boxes[0].class_name", description: NUL }],
      );
      // Every bad field is named at once.
      await expectRefused(await upload({ username: "\u0000", fileName: "a\u0000.png", tags: ["ok", "b\u0000"] }), [
        { field: "file_name", description: NUL },
        { field: "tags[1]", description: NUL },
        { field: "username", description: NUL },
      ]);
      expect(await count("images")).toBe(before);
    });

    it("UploadImage: bytes holding zeros are not text and pass", async () => {
      const content = await distinctPng(png++);
      expect(content.includes(0)).toBe(true);
      const { image } = await client.uploadImage({ content, index: false, meta: { note: "zeros in the bytes only" } });
      expect(image!.meta).toEqual({ note: "zeros in the bytes only" });
    });

    it("UpdateImage: username and meta; the image is unchanged", async () => {
      await expectRefused(
        (o) => client.updateImage({ image: { id: imageId, username: "b\u0000" }, updateMask: ["username"] }, o),
        [{ field: "image.username", description: NUL }],
      );
      await expectRefused(
        (o) => client.updateImage({ image: { id: imageId, meta: { prompt: "\u0000" } }, updateMask: ["meta"] }, o),
        [{ field: "image.meta.prompt", description: NUL }],
      );
      const { image } = await client.getImage({ id: imageId });
      expect(image!.username).toBe("ada");
      expect(image!.meta).toEqual({ prompt: "a lighthouse" });
    });

    it("AddComment: text; no comment is stored", async () => {
      await expectRefused((o) => client.addComment({ imageId, text: "hello\u0000" }, o), [{ field: "text", description: NUL }]);
      expect(await count("comments")).toBe(0);
    });

    it("ListImages: filter username, class_name, meta_equals and meta_keys", async () => {
      const list = (filter: Record<string, unknown>) => (o: Options) => client.listImages({ filter }, o);
      await expectRefused(list({ username: "a\u0000b" }), [{ field: "filter.username", description: NUL }]);
      await expectRefused(list({ className: "\u0000" }), [{ field: "filter.class_name", description: NUL }]);
      await expectRefused(list({ metaEquals: { batch_id: "b\u0000" } }), [
        { field: "filter.meta_equals[batch_id]", description: NUL },
      ]);
      await expectRefused(list({ metaEquals: { "k\u0000": "v" } }), [
        { field: "filter.meta_equals[k\\u0000]", description: KEY_NUL },
      ]);
      await expectRefused(list({ metaKeys: ["ok", "\u0000"] }), [{ field: "filter.meta_keys[1]", description: NUL }]);
    });

    it("every RPC, whatever its service: oneof members, repeated fields, field masks", async () => {
      await expectRefused(
        (o) => client.searchImages({ query: { $case: "prompt", value: "red\u0000" }, fields: ["id", "x\u0000"] }, o),
        [
          { field: "prompt", description: NUL },
          { field: "fields[1]", description: NUL },
        ],
      );
      // Bytes in a oneof are not text.
      const search = await failure((o) =>
        client.searchImages({ query: { $case: "likeImageContent", value: Buffer.from([0, 0, 0]) } }, o),
      );
      expect(search.violations.filter((v) => v.description === NUL)).toEqual([]);
      await expectRefused(
        (o) => client.updateImage({ image: { id: imageId, username: "ok" }, updateMask: ["username\u0000"] }, o),
        [{ field: "update_mask[0]", description: NUL }],
      );
      await expectRefused(
        (o) => t.client(GenerationServiceDefinition).generateImage({ prompt: "a\u0000", modelId: "m" }, o),
        [{ field: "prompt", description: NUL }],
      );
      await expectRefused(
        (o) => t.client(AccountServiceDefinition).createAccount({ email: "a@example.com", username: "\u0000" }, o),
        [{ field: "username", description: NUL }],
      );
    });

    it("BatchUploadImages: a bad item is answered as UploadImage would, and the batch goes on", async () => {
      const before = await count("images");
      const good = await distinctPng(png++);
      const bad = await distinctPng(png++);
      async function* items() {
        yield { request: { content: bad, username: "x\u0000", index: false } as never };
        yield { request: { content: bad, meta: { "\u0000": "v" }, index: false } as never };
        yield { request: { content: good, username: "grace", index: false } as never };
      }
      const results = [];
      for await (const r of client.batchUploadImages(items())) results.push(r);
      results.sort((a, b) => a.index - b.index);
      const errors = results.slice(0, 2).map((r) => (r.result?.$case === "error" ? r.result.value : undefined));
      expect(errors.map((e) => [e?.code, e?.message])).toEqual([
        [Status.INVALID_ARGUMENT, `username: ${NUL}`],
        [Status.INVALID_ARGUMENT, `meta.\\u0000: ${KEY_NUL}`],
      ]);
      expect(results[2].result?.$case).toBe("image");
      expect(await count("images")).toBe(before + 1);
    });
  });

  describe("HTTP", () => {
    const get = (path: string, headers: Record<string, string> = { authorization: `Bearer ${t.adminKey}` }) =>
      fetch(`${base}${path}`, { headers });
    const roboflow = (project: string, body: unknown, key = t.adminKey) =>
      fetch(`${base}/compat/roboflow/ws/${project}/search?api_key=${encodeURIComponent(key)}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });

    it("GET /v1/images?filter.username=a%00b is a 400 naming the field", async () => {
      const res = await get("/v1/images?filter.username=a%00b");
      const body = (await res.json()) as { code: number; details: { fieldViolations: { field: string }[] }[] };
      expect(res.status).toBe(400);
      expect(body.code).toBe(Status.INVALID_ARGUMENT);
      expect(body.details[0].fieldViolations.map((v) => v.field)).toEqual(["filter.username"]);
    });

    it("civitai: username is a 400 naming the seed's parameter", async () => {
      const res = await get("/compat/civitai/api/v1/images?username=a%00b");
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({ error: `username: ${NUL}` });
    });

    it("roboflow: batch_id and the project path are 400s naming them", async () => {
      const batch = await roboflow("my-project", { batch_id: "b\u0000" });
      expect(batch.status).toBe(400);
      expect(await batch.json()).toEqual({ error: { message: `batch_id: ${NUL}`, type: "invalid_request" } });
      const project = await roboflow("my%00project", { in_dataset: true });
      expect(project.status).toBe(400);
      expect(await project.json()).toEqual({
        error: { message: `in_dataset (or the URL's project): ${NUL}`, type: "invalid_request" },
      });
    });

    it("API keys gRPC metadata cannot carry are a 401, not a 500", async () => {
      const flow = await roboflow("my-project", {}, "glk_a\u0000b");
      expect(flow.status).toBe(401);
      expect(((await flow.json()) as { error: { type: string } }).error.type).toBe("unauthorized");
      // Node sends header bytes above 0x7e as they are (obs-text); gRPC metadata is ASCII only.
      const miki = await get("/compat/miki/images", { authentication: "Bearer \u00e9t\u00e9" });
      expect(miki.status).toBe(401);
      expect(await miki.json()).toEqual({ error: "the Authentication header holds no valid API key" });
    });
  });
});

describe("paging values PostgreSQL cannot hold", () => {
  let t: TestApp;
  let client: ImageClient;

  beforeAll(async () => {
    t = await startTestApp();
    client = t.client(ImageServiceDefinition);
    for (let i = 0; i < 3; i++) await client.uploadImage({ content: await distinctPng(3000 + i), index: false });
  });

  afterAll(async () => {
    await t?.close();
  });

  it("a cursor of digits beyond int64 names no image", async () => {
    for (const cursor of ["9223372036854775808", "9999999999999999999", "123456789012345678901234"]) {
      await expectRefused((o) => client.listImages({ cursor }, o), [
        { field: "cursor", description: `no image with id ${cursor} to start at` },
      ]);
    }
  });

  it("a page token whose id, rank, time or page is out of range is not a page token", async () => {
    for (const sort of [ImageSort.IMAGE_SORT_NEWEST, ImageSort.IMAGE_SORT_MOST_REACTIONS]) {
      const { nextPageToken } = await client.listImages({ pageSize: 1, sort });
      const token = JSON.parse(Buffer.from(nextPageToken, "base64url").toString()) as Record<string, unknown>;
      // The token as issued works.
      await client.listImages({ pageSize: 1, sort, pageToken: nextPageToken });
      const forged: Record<string, unknown>[] = [
        { i: "99999999999999999999" },
        { i: "9223372036854775808" },
        { r: 1.5 },
        { r: 2 ** 31 },
        { t: 1e20 },
        { t: -1e15 },
        { p: 0 },
        { p: 2 ** 40 },
      ];
      for (const change of forged) {
        const pageToken = Buffer.from(JSON.stringify({ ...token, ...change })).toString("base64url");
        await expectRefused((o) => client.listImages({ pageSize: 1, sort, pageToken }, o), [
          { field: "page_token", description: "is not a page token returned by ListImages" },
        ]);
      }
    }
  });
});
