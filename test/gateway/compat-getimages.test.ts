import { Validator } from "@seriousme/openapi-schema-validator";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccountServiceDefinition } from "../../src/gen/glimpse/account/v1/account_service.js";
import { startTestApp, type TestAccount, type TestApp } from "../helpers/app.js";
import { solidImage } from "../helpers/images.js";
import { geminiImage, startFakeProvider, type FakeProvider } from "../generation/fake-provider.js";

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** The seed's own example request. */
const EXAMPLE = {
  prompt: "A warm editorial product photo of a ceramic coffee cup on a studio desk",
  modelId: "google:gemini-2.5-flash-image",
  aspectRatio: "1:1",
};

/** The fields the seed documents for an image, in its order. */
const IMAGE_FIELDS = ["id", "prompt", "modelId", "providerId", "aspectRatio", "style", "thinkingLevel", "mediaType"];

interface Answer {
  status: number;
  headers: Headers;
  body: any;
}

describe("getimages-compatible API (seed 5)", () => {
  let t: TestApp;
  let google: FakeProvider;
  let png: Buffer;
  let base: string;
  let spec: any;

  /** One request to the compat surface, the way the seed's curl examples make it. */
  async function api(path: string, init: { key?: string; method?: string; body?: unknown; raw?: string } = {}): Promise<Answer> {
    const headers: Record<string, string> = {};
    if (init.key) headers.authorization = `Bearer ${init.key}`;
    let body: string | undefined = init.raw;
    if (init.body !== undefined) body = JSON.stringify(init.body);
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${base}/compat/getimages${path}`, { method: init.method ?? (body ? "POST" : "GET"), headers, body });
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    return { status: res.status, headers: res.headers, body: await res.json() };
  }

  const generate = (key: string, body: unknown) => api("/api/v1/images/generate", { key, body });

  /** Checks an answer against the schema openapi.json gives for its path, method and status. */
  function conforms(path: string, method: string, answer: Answer): void {
    const response = spec.paths[path][method].responses[String(answer.status)];
    expect(response, `openapi.json documents ${answer.status} for ${method} ${path}`).toBeDefined();
    const ajv = addFormats(new Ajv2020({ strict: false }));
    const validate = ajv.compile(response.content["application/json"].schema);
    expect(validate(answer.body), JSON.stringify(validate.errors)).toBe(true);
  }

  /** Whether an error answer has exactly the seed's error shape. */
  function isSeedError(answer: Answer, status: number): void {
    expect(answer.status).toBe(status);
    expect(Object.keys(answer.body)).toEqual(["error"]);
    expect(Object.keys(answer.body.error).sort()).toEqual(["details", "message"]);
    expect(typeof answer.body.error.message).toBe("string");
    expect(answer.body.error.message).not.toBe("");
    expect(Array.isArray(answer.body.error.details)).toBe(true);
    for (const d of answer.body.error.details) expect(Object.keys(d).sort()).toEqual(["code", "message", "path"]);
  }

  beforeAll(async () => {
    png = await solidImage(64, 64, { r: 180, g: 120, b: 60 });
    google = await startFakeProvider(() => geminiImage(png));
    // Google answers from a local fake; OpenAI has no key, so its models are unavailable.
    t = await startTestApp({ googleBaseUrl: google.url, googleApiKey: "AIza-test", providerRetries: 0 });
    base = `http://127.0.0.1:${t.app.httpPort}`;
    const served = await fetch(`${base}/compat/getimages/openapi.json`);
    spec = await served.json();
    const validator = new Validator();
    const result = await validator.validate(structuredClone(spec));
    expect(result.errors ?? []).toEqual([]);
    spec = validator.resolveRefs();
  });
  afterAll(async () => {
    await t?.close();
    await google?.close();
  });

  describe("generating", () => {
    it("answers the documented example request with the documented fields and charges 3 of 100 credits", async () => {
      const user = await t.newAccount({ credits: 100 });
      const res = await generate(user.key, EXAMPLE);
      expect(res.status).toBe(200);
      expect(Object.keys(res.body)).toEqual(["image", "credits"]);
      const image = res.body.image;
      expect(Object.keys(image)).toEqual([...IMAGE_FIELDS, "b64_json", "createdAt"]);
      expect(image.id).toMatch(UUID);
      expect(image.prompt).toBe(EXAMPLE.prompt);
      expect(image.modelId).toBe("google:gemini-2.5-flash-image");
      expect(image.providerId).toBe("google");
      expect(image.aspectRatio).toBe("1:1");
      expect(image.style).toBeNull();
      expect(image.thinkingLevel).toBeNull();
      expect(image.mediaType).toBe("image/png");
      expect(Buffer.from(image.b64_json, "base64").equals(png)).toBe(true);
      expect(image.createdAt).toMatch(ISO);
      expect(res.body.credits).toEqual({ charged: 3, remaining: 97 });
      expect(google.received.at(-1)!.body.contents[0].parts[0].text).toContain(EXAMPLE.prompt);
      conforms("/api/v1/images/generate", "post", res);
    });

    it("passes style, aspect ratio and thinking level through, and draws offline with a local model", async () => {
      const user = await t.newAccount({ credits: 20 });
      const local = await generate(user.key, { prompt: "a lighthouse at dusk", modelId: "local:shapes", aspectRatio: "16:9", style: "poster" });
      expect(local.status).toBe(200);
      expect(local.body.image).toMatchObject({ providerId: "local", aspectRatio: "16:9", style: "poster", thinkingLevel: null });
      const meta = await sharp(Buffer.from(local.body.image.b64_json, "base64")).metadata();
      expect(meta.width! * 9).toBe(meta.height! * 16);
      expect(local.body.credits).toEqual({ charged: 1, remaining: 19 });

      const deep = await generate(user.key, { prompt: "a clockwork owl", modelId: "google:gemini-3-pro-image-preview", thinkingLevel: "deep", style: null });
      expect(deep.status).toBe(200);
      expect(deep.body.image).toMatchObject({ modelId: "google:gemini-3-pro-image-preview", thinkingLevel: "deep", style: null, aspectRatio: "1:1" });
      expect(deep.body.credits).toEqual({ charged: 10, remaining: 9 });
    });
  });

  describe("reading", () => {
    let user: TestAccount;
    const made: any[] = [];
    beforeAll(async () => {
      user = await t.newAccount({ credits: 100 });
      for (const prompt of ["first", "second", "third"]) {
        made.push((await generate(user.key, { prompt, modelId: "local:gradient", style: "ink" })).body.image);
      }
      made.push((await generate(user.key, EXAMPLE)).body.image);
    });

    it("lists images newest first with the documented fields and no bytes", async () => {
      const res = await api("/api/v1/images?limit=20&offset=0", { key: user.key });
      expect(res.status).toBe(200);
      expect(Object.keys(res.body)).toEqual(["images", "total", "limit", "offset"]);
      expect(res.body).toMatchObject({ total: 4, limit: 20, offset: 0 });
      expect(res.body.images.map((i: any) => i.id)).toEqual(made.map((i) => i.id).reverse());
      const [newest] = res.body.images;
      expect(Object.keys(newest)).toEqual([...IMAGE_FIELDS, "creditCost", "createdAt"]);
      const { b64_json: _, ...expected } = made[3];
      expect(newest).toEqual({ ...expected, creditCost: 3 });
      expect(res.body.images[1]).toMatchObject({ prompt: "third", modelId: "local:gradient", providerId: "local", style: "ink", creditCost: 1 });
      conforms("/api/v1/images", "get", res);
    });

    it("pages by limit and offset, 20 by default", async () => {
      const page = await api("/api/v1/images?limit=2&offset=1", { key: user.key });
      expect(page.body).toMatchObject({ total: 4, limit: 2, offset: 1 });
      expect(page.body.images.map((i: any) => i.prompt)).toEqual(["third", "second"]);
      const plain = await api("/api/v1/images", { key: user.key });
      expect(plain.body).toMatchObject({ total: 4, limit: 20, offset: 0 });
      const past = await api("/api/v1/images?offset=4", { key: user.key });
      expect(past.body).toMatchObject({ images: [], total: 4 });
    });

    it("returns one image with its bytes, or metadata only with format=metadata", async () => {
      const full = await api(`/api/v1/images/${made[3].id}`, { key: user.key });
      expect(full.status).toBe(200);
      expect(Object.keys(full.body)).toEqual(["image"]);
      expect(Object.keys(full.body.image)).toEqual([...IMAGE_FIELDS, "creditCost", "b64_json", "createdAt"]);
      expect(full.body.image).toEqual({ ...made[3], creditCost: 3 });
      conforms("/api/v1/images/{id}", "get", full);

      const meta = await api(`/api/v1/images/${made[0].id}?format=metadata`, { key: user.key });
      expect(meta.status).toBe(200);
      const { b64_json: _, ...expected } = made[0];
      expect(meta.body.image).toEqual({ ...expected, creditCost: 1 });
      conforms("/api/v1/images/{id}", "get", meta);
    });

    it("answers 404 for an unknown id, a malformed id and another account's image", async () => {
      const other = await t.newAccount();
      for (const [id, key] of [
        ["0c7f0b4a-2c7b-43b6-9b65-6d4e4d0c4b8b", user.key],
        ["not-an-id", user.key],
        [made[0].id, other.key],
      ]) {
        const res = await api(`/api/v1/images/${id}`, { key });
        isSeedError(res, 404);
        expect(res.body.error).toEqual({ message: "Image not found.", details: [] });
      }
      expect((await api("/api/v1/images", { key: other.key })).body).toMatchObject({ images: [], total: 0 });
    });

    it("returns the account with its balance", async () => {
      const res = await api("/api/v1/account", { key: user.key });
      expect(res.status).toBe(200);
      expect(Object.keys(res.body)).toEqual(["userId", "email", "creditBalance"]);
      expect(res.body.userId).toBe(user.id);
      expect(res.body.email).toMatch(/@example\.com$/);
      expect(res.body.creditBalance).toBe(100 - 3 * 1 - 3);
      conforms("/api/v1/account", "get", res);
    });

    it("lists usage: one deduction per image, referencing it, and the starting grant", async () => {
      const res = await api("/api/v1/usage?limit=20&offset=0", { key: user.key });
      expect(res.status).toBe(200);
      expect(Object.keys(res.body)).toEqual(["transactions", "total", "limit", "offset"]);
      expect(res.body).toMatchObject({ total: 5, limit: 20, offset: 0 });
      const [latest] = res.body.transactions;
      expect(Object.keys(latest)).toEqual(["id", "amount", "type", "description", "referenceId", "createdAt"]);
      expect(latest.id).toMatch(UUID);
      expect(latest).toMatchObject({ amount: -3, type: "deduction", description: "Generated image", referenceId: made[3].id });
      expect(latest.createdAt).toMatch(ISO);
      expect(res.body.transactions.slice(1, 4).map((x: any) => x.referenceId)).toEqual([made[2].id, made[1].id, made[0].id]);
      expect(res.body.transactions[4]).toMatchObject({ amount: 100, type: "grant" });
      conforms("/api/v1/usage", "get", res);
      const page = await api("/api/v1/usage?limit=1&offset=4", { key: user.key });
      expect(page.body).toMatchObject({ total: 5, limit: 1, offset: 4, transactions: [{ type: "grant" }] });
    });
  });

  describe("errors", () => {
    let user: TestAccount;
    beforeAll(async () => {
      user = await t.newAccount({ credits: 50 });
    });

    it("answers the documented validation error for an empty prompt", async () => {
      const res = await generate(user.key, { ...EXAMPLE, prompt: "" });
      isSeedError(res, 400);
      expect(res.body).toEqual({
        error: {
          message: "Invalid request body.",
          details: [{ path: "prompt", message: "Too small: expected string to have >=1 characters", code: "too_small" }],
        },
      });
      conforms("/api/v1/images/generate", "post", res);
    });

    it("names every bad field of the request body at once", async () => {
      const res = await generate(user.key, { prompt: "x".repeat(2001), aspectRatio: "5:4", thinkingLevel: "max", style: 7 });
      isSeedError(res, 400);
      expect(res.body.error.details).toEqual([
        { path: "prompt", message: "Too big: expected string to have <=2000 characters", code: "too_big" },
        { path: "modelId", message: "Invalid input: expected string, received undefined", code: "invalid_type" },
        { path: "aspectRatio", message: expect.stringContaining('"16:9"'), code: "invalid_value" },
        { path: "style", message: "Invalid input: expected string, received number", code: "invalid_type" },
        { path: "thinkingLevel", message: 'Invalid option: expected one of "default"|"deep"', code: "invalid_value" },
      ]);
    });

    it("reports the model's own limits under the seed's field names", async () => {
      const unknown = await generate(user.key, { prompt: "a cat", modelId: "acme:imagine", style: "s".repeat(201) });
      isSeedError(unknown, 400);
      expect(unknown.body.error.message).toBe("Invalid request body.");
      expect(unknown.body.error.details).toEqual([
        { path: "modelId", message: expect.stringContaining("acme:imagine"), code: "invalid_value" },
        { path: "style", message: "must be at most 200 characters, got 201", code: "too_big" },
      ]);
      const thinking = await generate(user.key, { ...EXAMPLE, thinkingLevel: "deep" });
      isSeedError(thinking, 400);
      expect(thinking.body.error.details).toEqual([
        { path: "thinkingLevel", message: expect.stringContaining("does not support thinking"), code: "invalid_value" },
      ]);
      expect((await api("/api/v1/account", { key: user.key })).body.creditBalance).toBe(50);
    });

    it("refuses a model whose provider is not configured with 400 on modelId, charging nothing", async () => {
      const res = await generate(user.key, { ...EXAMPLE, modelId: "openai:gpt-image-1.5" });
      isSeedError(res, 400);
      expect(res.body.error.details).toEqual([
        { path: "modelId", message: expect.stringContaining("GLIMPSE_OPENAI_API_KEY"), code: "invalid_value" },
      ]);
      expect((await api("/api/v1/account", { key: user.key })).body.creditBalance).toBe(50);
    });

    it("answers 400 for malformed JSON and a body that is not an object", async () => {
      const broken = await api("/api/v1/images/generate", { key: user.key, raw: '{"prompt": ' });
      isSeedError(broken, 400);
      expect(broken.body.error).toEqual({ message: "Invalid JSON body.", details: [] });
      const list = await api("/api/v1/images/generate", { key: user.key, body: [EXAMPLE] });
      isSeedError(list, 400);
      expect(list.body.error.details).toEqual([
        { path: "", message: "Invalid input: expected object, received array", code: "invalid_type" },
      ]);
    });

    it("answers 400 for bad pagination and an unknown format", async () => {
      for (const path of ["/api/v1/images", "/api/v1/usage"]) {
        const res = await api(`${path}?limit=101&offset=-1`, { key: user.key });
        isSeedError(res, 400);
        expect(res.body.error).toEqual({
          message: "Invalid query parameters.",
          details: [
            { path: "limit", message: "Too big: expected number to be <=100", code: "too_big" },
            { path: "offset", message: "Too small: expected number to be >=0", code: "too_small" },
          ],
        });
        conforms(path, "get", res);
      }
      const zero = await api("/api/v1/images?limit=0", { key: user.key });
      expect(zero.body.error.details).toEqual([{ path: "limit", message: "Too small: expected number to be >=1", code: "too_small" }]);
      const words = await api("/api/v1/usage?limit=ten&offset=1.5", { key: user.key });
      expect(words.body.error.details).toEqual([
        { path: "limit", message: "Invalid input: expected number, received NaN", code: "invalid_type" },
        { path: "offset", message: "Invalid input: expected int, received number", code: "invalid_type" },
      ]);
      const format = await api("/api/v1/images/0c7f0b4a-2c7b-43b6-9b65-6d4e4d0c4b8b?format=png", { key: user.key });
      isSeedError(format, 400);
      expect(format.body.error.details).toEqual([
        { path: "format", message: 'Invalid option: expected one of "metadata"', code: "invalid_value" },
      ]);
    });

    it("refuses a generation the credits cannot cover with a 400 on modelId, charging nothing", async () => {
      const poor = await t.newAccount({ credits: 2 });
      const res = await generate(poor.key, EXAMPLE);
      isSeedError(res, 400);
      expect(res.body.error.message).toBe("Insufficient credits.");
      expect(res.body.error.details).toEqual([
        { path: "modelId", message: expect.stringContaining("not enough credits"), code: "insufficient_credits" },
      ]);
      conforms("/api/v1/images/generate", "post", res);
      expect((await api("/api/v1/account", { key: poor.key })).body.creditBalance).toBe(2);
      expect((await api("/api/v1/images", { key: poor.key })).body.total).toBe(0);
    });

    it("answers 401 for a missing, unknown or revoked key on every endpoint", async () => {
      const spare = await t.client(AccountServiceDefinition, user.key).createApiKey({ name: "spare" });
      await t.client(AccountServiceDefinition, user.key).revokeApiKey({ keyId: spare.apiKey!.id });
      const cases: [string, string | undefined][] = [
        ["/api/v1/account", undefined],
        ["/api/v1/usage", "glk_not_a_real_key"],
        ["/api/v1/images", spare.secret],
        ["/api/v1/images/0c7f0b4a-2c7b-43b6-9b65-6d4e4d0c4b8b", undefined],
      ];
      for (const [path, key] of cases) {
        const res = await api(path, { key });
        isSeedError(res, 401);
        expect(res.body.error.details).toEqual([]);
      }
      const gen = await api("/api/v1/images/generate", { body: EXAMPLE });
      isSeedError(gen, 401);
      conforms("/api/v1/images/generate", "post", gen);
    });

    it("answers 429 with Retry-After when the key's rate limit is spent", async () => {
      const slow = await t.client(AccountServiceDefinition, user.key).createApiKey({ name: "slow", rateLimitPerMinute: 1 });
      expect((await api("/api/v1/account", { key: slow.secret })).status).toBe(200);
      const res = await api("/api/v1/account", { key: slow.secret });
      isSeedError(res, 429);
      const retryAfter = Number(res.headers.get("retry-after"));
      expect(Number.isInteger(retryAfter)).toBe(true);
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(60);
      conforms("/api/v1/account", "get", res);
      // The limit is the key's, not the account's.
      expect((await api("/api/v1/account", { key: user.key })).status).toBe(200);
    });

    it("answers 500 when the provider fails, charging nothing", async () => {
      google.reply({ status: 503, json: { error: { code: 503, message: "The model is overloaded.", status: "UNAVAILABLE" } } });
      const res = await generate(user.key, EXAMPLE);
      isSeedError(res, 500);
      expect(res.body.error.message).toContain("Google");
      conforms("/api/v1/images/generate", "post", res);
      expect((await api("/api/v1/account", { key: user.key })).body.creditBalance).toBe(50);
    });

    it("answers other paths and methods under the prefix in the seed's shape: 404", async () => {
      const missing = await api("/api/v1/images/one/two", { key: user.key });
      isSeedError(missing, 404);
      const wrong = await api("/api/v1/account", { key: user.key, method: "DELETE" });
      isSeedError(wrong, 404);
    });
  });

  describe("openapi.json", () => {
    it("is a valid OpenAPI document describing the seed's endpoints on this server", async () => {
      const res = await fetch(`${base}/compat/getimages/openapi.json`);
      expect(res.status).toBe(200);
      const doc: any = await res.json();
      const validator = new Validator();
      const result = await validator.validate(doc);
      expect(result.errors ?? []).toEqual([]);
      expect(result.valid).toBe(true);
      expect(doc.openapi).toMatch(/^3\.1\./);
      expect(doc.servers).toEqual([{ url: `${t.app.options.publicUrl}/compat/getimages` }]);
      expect(Object.keys(doc.paths).sort()).toEqual([
        "/api/v1/account",
        "/api/v1/images",
        "/api/v1/images/generate",
        "/api/v1/images/{id}",
        "/api/v1/usage",
      ]);
      expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: "http", scheme: "bearer" });
      expect(doc.components.schemas.GenerateImageRequest.properties.modelId.enum).toEqual(
        expect.arrayContaining([
          "openai:gpt-image-1.5",
          "openai:gpt-image-2",
          "google:gemini-2.5-flash-image",
          "google:gemini-3.1-flash-image-preview",
          "google:gemini-3-pro-image-preview",
        ]),
      );
      expect(doc.components.responses.RateLimited.headers["Retry-After"]).toBeDefined();
    });

    it("is served without a key", async () => {
      expect((await fetch(`${base}/compat/getimages/openapi.json`)).status).toBe(200);
    });
  });
});
