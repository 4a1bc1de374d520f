import * as grpc from "@grpc/grpc-js";
import { randomUUID } from "node:crypto";
import { ClientError, Metadata, Status } from "nice-grpc";
import sharp from "sharp";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { AccountServiceDefinition, TransactionType } from "../../src/gen/glimpse/account/v1/account_service.js";
import {
  GenerateImageRequest,
  GenerateImageResponse,
  GenerationServiceDefinition,
  ThinkingLevel,
} from "../../src/gen/glimpse/generation/v1/generation_service.js";
import { ImageView, IndexStatus, Visibility } from "../../src/gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { GenerationsRepository } from "../../src/store/generations-repository.js";
import { decodeStatusDetails } from "../../src/server/status-details.js";
import { startTestApp, type TestAccount, type TestApp } from "../helpers/app.js";
import { solidImage } from "../helpers/images.js";
import { geminiImage, openaiImage, startFakeProvider, type FakeProvider } from "./fake-provider.js";

const SEED_MODELS = [
  "google:gemini-2.5-flash-image",
  "google:gemini-3-pro-image-preview",
  "google:gemini-3.1-flash-image-preview",
  "openai:gpt-image-1.5",
  "openai:gpt-image-2",
];

/** The error of a call that must fail, with its status details. */
async function failed(call: (opts: { onTrailer: (t: Metadata) => void }) => Promise<unknown>) {
  let trailer: Metadata | undefined;
  const err = await call({ onTrailer: (t) => (trailer = t) }).then(
    () => undefined,
    (e) => e,
  );
  expect(err).toBeInstanceOf(ClientError);
  const raw = trailer?.get("grpc-status-details-bin") as unknown as Uint8Array | undefined;
  const details = raw ? decodeStatusDetails(raw) : { violations: [], retryAfterMs: undefined };
  return { code: (err as ClientError).code, message: (err as ClientError).details, ...details };
}

/**
 * GenerateImage through a plain grpc-js client, which sends the deadline as `grpc-timeout` the
 * way other languages' clients do; resolves with the status code.
 */
function generateWithDeadline(address: string, key: string, deadline: Date): Promise<number> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${key}`);
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      "/glimpse.generation.v1.GenerationService/GenerateImage",
      (req: GenerateImageRequest) => Buffer.from(GenerateImageRequest.encode(req).finish()),
      (buf: Buffer) => GenerateImageResponse.decode(buf),
      GenerateImageRequest.fromPartial({ prompt: "slow", modelId: "openai:gpt-image-1.5" }),
      metadata,
      { deadline },
      (err) => {
        client.close();
        resolve(err ? err.code : Status.OK);
      },
    );
  });
}

/** What an account holds: spendable and reserved credits, the ledger sum, and its rows. */
async function books(t: TestApp, accountId: string) {
  const [a] = await t.app.sql`select credit_balance, reserved_credits from accounts where id = ${accountId}`;
  const [l] = await t.app.sql`
    select coalesce(sum(amount) filter (where kind = 1), 0)::bigint as grants,
           coalesce(-sum(amount) filter (where kind = 2), 0)::bigint as charges,
           count(*)::int as rows
    from ledger where account_id = ${accountId}`;
  const [g] = await t.app.sql`
    select count(*) filter (where status = 1)::int as done, count(*) filter (where status = 0)::int as running
    from generations where account_id = ${accountId}`;
  const [i] = await t.app.sql`select count(*)::int as n from images where owner_id = ${accountId}`;
  return {
    balance: Number(a.credit_balance),
    reserved: Number(a.reserved_credits),
    grants: Number(l.grants),
    charges: Number(l.charges),
    ledgerRows: l.rows as number,
    generations: g.done as number,
    running: g.running as number,
    images: i.n as number,
  };
}

describe("generation without provider keys", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  it("lists every model, with the remote ones unavailable and saying what to configure", async () => {
    const { models } = await t.client(GenerationServiceDefinition).listModels({});
    const ids = models.map((m) => m.id);
    expect(ids).toEqual([...ids].sort());
    for (const id of SEED_MODELS) expect(ids).toContain(id);
    expect(ids).toContain("local:gradient");
    for (const m of models) {
      expect(m.aspectRatios).toContain("1:1");
      expect(Number(m.creditCost)).toBeGreaterThanOrEqual(0);
      if (m.providerId === "local") {
        expect(m).toMatchObject({ available: true, unavailableReason: "", local: true, supportsThinking: false });
        expect(m.displayName).toContain("not a learned model");
      } else {
        expect(m.available).toBe(false);
        expect(m.local).toBe(false);
        expect(m.unavailableReason).toContain(m.providerId === "openai" ? "GLIMPSE_OPENAI_API_KEY" : "GLIMPSE_GOOGLE_API_KEY");
      }
    }
    const thinking = models.filter((m) => m.supportsThinking).map((m) => m.id);
    expect(thinking).toEqual(["google:gemini-3-pro-image-preview", "google:gemini-3.1-flash-image-preview"]);
    expect(models.find((m) => m.id === "google:gemini-2.5-flash-image")!.creditCost).toBe("3");
  });

  it("refuses an unavailable model with FAILED_PRECONDITION and charges nothing", async () => {
    const user = await t.newAccount({ credits: 50 });
    const gen = t.client(GenerationServiceDefinition, user.key);
    const err = await failed((o) => gen.generateImage({ prompt: "a cat", modelId: "openai:gpt-image-1.5" } as never, o));
    expect(err.code).toBe(Status.FAILED_PRECONDITION);
    expect(err.message).toContain("GLIMPSE_OPENAI_API_KEY");
    expect(await books(t, user.id)).toMatchObject({ balance: 50, reserved: 0, charges: 0, generations: 0 });
  });
});

describe("generation", () => {
  let t: TestApp;
  let openai: FakeProvider;
  let google: FakeProvider;
  let png: Buffer;

  beforeAll(async () => {
    png = await solidImage(48, 32, { r: 200, g: 90, b: 20 });
    openai = await startFakeProvider(() => openaiImage(png));
    google = await startFakeProvider(() => geminiImage(png));
    t = await startTestApp({
      openaiBaseUrl: openai.url,
      openaiApiKey: "sk-test",
      googleBaseUrl: google.url,
      googleApiKey: "AIza-test",
      providerRetries: 0,
    });
  });
  afterAll(async () => {
    await t?.close();
    await openai?.close();
    await google?.close();
  });
  beforeEach(() => {
    openai.otherwise = () => openaiImage(png);
    openai.received.length = 0;
    google.received.length = 0;
  });

  const generator = (account: TestAccount) => t.client(GenerationServiceDefinition, account.key);

  it("draws with the local renderer, stores the image in the catalogue and charges the model's cost", async () => {
    const user = await t.newAccount({ credits: 10 });
    const gen = generator(user);
    const { generation, credits } = await gen.generateImage({
      prompt: "a lighthouse at dusk",
      modelId: "local:shapes",
      aspectRatio: "16:9",
      style: "poster",
    } as never);
    expect(credits).toEqual({ charged: "1", remaining: "9" });
    expect(generation).toMatchObject({
      prompt: "a lighthouse at dusk",
      modelId: "local:shapes",
      providerId: "local",
      aspectRatio: "16:9",
      style: "poster",
      thinkingLevel: ThinkingLevel.THINKING_LEVEL_UNSPECIFIED,
      mediaType: "image/png",
      creditCost: "1",
    });
    const meta = await sharp(generation!.content!).metadata();
    expect(meta.format).toBe("png");
    expect(meta.width! * 9).toBe(meta.height! * 16);

    const image = (await t.client(ImageServiceDefinition, user.key).getImage({ id: generation!.imageId })).image!;
    expect(image).toMatchObject({ owner: user.id, visibility: Visibility.VISIBILITY_PRIVATE, width: meta.width, height: meta.height });
    expect(image.meta).toMatchObject({ prompt: "a lighthouse at dusk", model: "local:shapes", aspect_ratio: "16:9", style: "poster" });
    expect(image.indexStatus).not.toBe(IndexStatus.INDEX_STATUS_NOT_INDEXED);

    const usage = await t.client(AccountServiceDefinition, user.key).listUsage({});
    expect(usage.transactions[0]).toMatchObject({
      amount: "-1",
      type: TransactionType.TRANSACTION_TYPE_DEDUCTION,
      description: "Generated image",
      referenceId: generation!.id,
      balanceAfter: "9",
    });
    expect(await books(t, user.id)).toMatchObject({ balance: 9, reserved: 0, grants: 10, charges: 1, generations: 1, images: 1 });
  });

  it("keeps generations and their images to their account (and admins)", async () => {
    const owner = await t.newAccount({ credits: 5 });
    const other = await t.newAccount({ credits: 5 });
    const { generation } = await generator(owner).generateImage({ prompt: "a private fox", modelId: "local:gradient" } as never);
    const otherImages = t.client(ImageServiceDefinition, other.key);
    expect((await failed((o) => otherImages.getImage({ id: generation!.imageId }, o))).code).toBe(Status.NOT_FOUND);
    expect((await otherImages.listImages({ pageSize: 200 } as never)).images.map((i) => i.id)).not.toContain(generation!.imageId);
    expect((await failed((o) => generator(other).getGeneration({ id: generation!.id } as never, o))).code).toBe(Status.NOT_FOUND);
    expect((await generator(other).listGenerations({} as never)).total).toBe("0");
    const asAdmin = await t.client(GenerationServiceDefinition).getGeneration({ id: generation!.id } as never);
    expect(asAdmin.generation!.id).toBe(generation!.id);

    const pub = await generator(owner).generateImage({
      prompt: "a public fox",
      modelId: "local:gradient",
      visibility: Visibility.VISIBILITY_PUBLIC,
    } as never);
    expect((await otherImages.getImage({ id: pub.generation!.imageId })).image!.visibility).toBe(Visibility.VISIBILITY_PUBLIC);
  });

  it("lists generations newest first without bytes and returns one with bytes on request", async () => {
    const user = await t.newAccount({ credits: 5 });
    const gen = generator(user);
    const made = [];
    for (const prompt of ["one", "two", "three"]) made.push((await gen.generateImage({ prompt, modelId: "local:gradient" } as never)).generation!);
    const list = await gen.listGenerations({ limit: 2 } as never);
    expect(list).toMatchObject({ total: "3", limit: 2, offset: 0 });
    expect(list.generations.map((g) => g.prompt)).toEqual(["three", "two"]);
    expect(list.generations.every((g) => g.content === undefined)).toBe(true);
    expect((await gen.listGenerations({ limit: 2, offset: 2 } as never)).generations.map((g) => g.prompt)).toEqual(["one"]);
    expect((await gen.listGenerations({} as never)).limit).toBe(20);

    const meta = await gen.getGeneration({ id: made[0].id } as never);
    expect(meta.generation!.content).toBeUndefined();
    const full = await gen.getGeneration({ id: made[0].id, view: ImageView.IMAGE_VIEW_WITH_CONTENT });
    expect(Buffer.compare(full.generation!.content!, made[0].content!)).toBe(0);
    const bad = await failed((o) => gen.getGeneration({ id: "17" } as never, o));
    expect(bad.violations.map((v) => v.field)).toEqual(["id"]);
    const paging = await failed((o) => gen.listGenerations({ limit: 500, offset: -2 }, o));
    expect(paging.violations.map((v) => v.field).sort()).toEqual(["limit", "offset"]);
  });

  it("names every invalid field and charges nothing", async () => {
    const user = await t.newAccount({ credits: 5 });
    const gen = generator(user);
    const all = await failed((o) =>
      gen.generateImage(
        { prompt: "", modelId: "acme:imagine", aspectRatio: "5:4", style: "s".repeat(201), requestId: "again" } as never,
        o,
      ),
    );
    expect(all.code).toBe(Status.INVALID_ARGUMENT);
    expect(all.violations.map((v) => v.field).sort()).toEqual(["aspect_ratio", "model_id", "prompt", "request_id", "style"]);
    const long = await failed((o) => gen.generateImage({ prompt: "é".repeat(2001), modelId: "local:gradient" } as never, o));
    expect(long.violations).toEqual([{ field: "prompt", description: "must be at most 2000 characters, got 2001" }]);
    // 2000 characters is fine, counted as characters rather than bytes.
    await gen.generateImage({ prompt: "é".repeat(2000), modelId: "local:gradient" } as never);
    const thinking = await failed((o) =>
      gen.generateImage({ prompt: "a cat", modelId: "local:gradient", thinkingLevel: ThinkingLevel.THINKING_LEVEL_DEEP } as never, o),
    );
    expect(thinking.violations.map((v) => v.field)).toEqual(["thinking_level"]);
    const flash = await failed((o) =>
      gen.generateImage(
        { prompt: "a cat", modelId: "google:gemini-2.5-flash-image", thinkingLevel: ThinkingLevel.THINKING_LEVEL_DEFAULT } as never,
        o,
      ),
    );
    expect(flash.violations.map((v) => v.field)).toEqual(["thinking_level"]);
    const noModel = await failed((o) => gen.generateImage({ prompt: "a cat", modelId: "" } as never, o));
    expect(noModel.violations.map((v) => v.field)).toEqual(["model_id"]);
    expect(await books(t, user.id)).toMatchObject({ balance: 4, charges: 1, generations: 1 });
  });

  it("refuses a generation the balance cannot cover", async () => {
    const user = await t.newAccount({ credits: 5 });
    const err = await failed((o) => generator(user).generateImage({ prompt: "a castle", modelId: "openai:gpt-image-2" } as never, o));
    expect(err.code).toBe(Status.FAILED_PRECONDITION);
    expect(err.message).toContain("not enough credits");
    expect(openai.received).toHaveLength(0);
    expect(await books(t, user.id)).toMatchObject({ balance: 5, reserved: 0, charges: 0 });
  });

  it("lets exactly as many of 50 concurrent generations succeed as the credits pay for", async () => {
    const user = await t.newAccount({ credits: 20 });
    const gen = generator(user);
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) => gen.generateImage({ prompt: `tile ${i}`, modelId: "local:gradient" } as never)),
    );
    const ok = results.filter((r) => r.status === "fulfilled");
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(ok).toHaveLength(20);
    for (const r of refused) {
      expect(r.reason.code).toBe(Status.FAILED_PRECONDITION);
      expect(r.reason.details).toContain("not enough credits");
    }
    const state = await books(t, user.id);
    expect(state).toMatchObject({ balance: 0, reserved: 0, grants: 20, charges: 20, generations: 20, running: 0, images: 20 });
    expect(state.balance + state.reserved).toBe(state.grants - state.charges);
    expect((await t.client(AccountServiceDefinition, user.key).getAccount({})).account!.creditBalance).toBe("0");
  });

  it("returns the first result for a repeated request id and charges once, also when the calls race", async () => {
    const user = await t.newAccount({ credits: 10 });
    const gen = generator(user);
    const requestId = randomUUID();
    const racing = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        // The server does not compare a retry with the first call: the prompt may differ.
        gen.generateImage({ prompt: `race ${i}`, modelId: "local:shapes", requestId } as never),
      ),
    );
    const ids = new Set(racing.map((r) => r.generation!.id));
    expect(ids.size).toBe(1);
    for (const r of racing) {
      expect(r.credits!.charged).toBe("1");
      expect(Buffer.compare(r.generation!.content!, racing[0].generation!.content!)).toBe(0);
    }
    const later = await gen.generateImage({ prompt: "anything", modelId: "local:gradient", requestId } as never);
    expect(later.generation!.id).toBe(racing[0].generation!.id);
    expect(later.credits).toEqual({ charged: "1", remaining: "9" });
    expect(await books(t, user.id)).toMatchObject({ balance: 9, reserved: 0, charges: 1, generations: 1, images: 1 });
  });

  it("shares one generation between replicas racing on a request id", async () => {
    const user = await t.newAccount({ credits: 10 });
    const second = await startTestApp({}, {}, t.db);
    try {
      const requestId = randomUUID();
      const clients = [t.client(GenerationServiceDefinition, user.key), second.client(GenerationServiceDefinition, user.key)];
      const racing = await Promise.all(
        Array.from({ length: 6 }, (_, i) => clients[i % 2].generateImage({ prompt: "shared", modelId: "local:shapes", requestId } as never)),
      );
      expect(new Set(racing.map((r) => r.generation!.id)).size).toBe(1);
      expect(await books(t, user.id)).toMatchObject({ balance: 9, charges: 1, generations: 1 });
    } finally {
      await second.close();
    }
  });

  it("calls OpenAI with the size for the ratio and charges the model's cost", async () => {
    const user = await t.newAccount({ credits: 10 });
    const { generation, credits } = await generator(user).generateImage({
      prompt: "a red kite",
      modelId: "openai:gpt-image-1.5",
      aspectRatio: "2:3",
    } as never);
    expect(credits).toEqual({ charged: "4", remaining: "6" });
    expect(Buffer.compare(generation!.content!, png)).toBe(0);
    expect(openai.received[0].body).toEqual({ model: "gpt-image-1.5", prompt: "a red kite", n: 1, size: "1024x1536" });
    expect(openai.received[0].headers.authorization).toBe("Bearer sk-test");
  });

  it("asks Gemini for deep thinking when the model supports it", async () => {
    const user = await t.newAccount({ credits: 20 });
    const { generation } = await generator(user).generateImage({
      prompt: "a crowded market, every stall labelled",
      modelId: "google:gemini-3-pro-image-preview",
      aspectRatio: "21:9",
      thinkingLevel: ThinkingLevel.THINKING_LEVEL_DEEP,
    } as never);
    expect(generation!.thinkingLevel).toBe(ThinkingLevel.THINKING_LEVEL_DEEP);
    const [sent] = google.received;
    expect(sent.path).toBe("/v1beta/models/gemini-3-pro-image-preview:generateContent");
    expect(sent.body.generationConfig).toEqual({
      responseModalities: ["IMAGE"],
      imageConfig: { aspectRatio: "21:9" },
      thinkingConfig: { thinkingLevel: "high" },
    });
    expect(await books(t, user.id)).toMatchObject({ balance: 10, charges: 10 });
  });

  it("charges nothing when the provider fails, refuses, or returns something that is not an image", async () => {
    const user = await t.newAccount({ credits: 10 });
    const gen = generator(user);
    const ask = (o: object) => gen.generateImage({ prompt: "a storm", modelId: "openai:gpt-image-1.5" } as never, o);

    openai.reply({ status: 503, json: { error: { message: "overloaded" } } });
    expect((await failed(ask)).code).toBe(Status.UNAVAILABLE);
    openai.reply({ status: 429, json: { error: { message: "slow down" } }, headers: { "retry-after": "7" } });
    const limited = await failed(ask);
    expect(limited.code).toBe(Status.UNAVAILABLE);
    expect(limited.retryAfterMs).toBe(7000);
    openai.reply({ status: 400, json: { error: { message: "blocked by the safety system", code: "moderation_blocked" } } });
    expect((await failed(ask)).code).toBe(Status.FAILED_PRECONDITION);
    openai.reply({ status: 400, json: { error: { message: "Invalid prompt" } } });
    const bad = await failed(ask);
    expect(bad.code).toBe(Status.INVALID_ARGUMENT);
    expect(bad.violations.map((v) => v.field)).toEqual(["prompt"]);
    openai.reply({ status: 200, json: { data: [{ b64_json: Buffer.from("not an image at all").toString("base64") }] } });
    expect((await failed(ask)).code).toBe(Status.UNAVAILABLE);

    expect(await books(t, user.id)).toMatchObject({ balance: 10, reserved: 0, charges: 0, ledgerRows: 1, generations: 0, running: 0, images: 0 });
    // A retry of a failed request id runs again, and is charged once.
    const requestId = randomUUID();
    openai.reply({ status: 500, json: {} });
    expect((await failed((o) => gen.generateImage({ prompt: "a storm", modelId: "openai:gpt-image-1.5", requestId } as never, o))).code).toBe(
      Status.UNAVAILABLE,
    );
    const retried = await gen.generateImage({ prompt: "a storm", modelId: "openai:gpt-image-1.5", requestId } as never);
    expect(retried.credits).toEqual({ charged: "4", remaining: "6" });
  });

  it("releases the reservation when the caller's deadline passes during the provider call", async () => {
    const user = await t.newAccount({ credits: 10 });
    openai.reply({ hang: true });
    const code = await generateWithDeadline(t.address, user.key, new Date(Date.now() + 300));
    expect(code).toBe(Status.DEADLINE_EXCEEDED);
    expect(openai.received).toHaveLength(1);
    // The client stops waiting at the deadline; the server releases as soon as its call aborts.
    await vi.waitFor(async () => expect(await books(t, user.id)).toMatchObject({ balance: 10, reserved: 0, running: 0 }), {
      timeout: 10_000,
    });
    expect(await books(t, user.id)).toMatchObject({ charges: 0, images: 0 });
  });

  it("returns abandoned reservations to their accounts", async () => {
    const user = await t.newAccount({ credits: 10 });
    await t.app.sql.begin(async (tx) => {
      await tx`update accounts set credit_balance = credit_balance - 4, reserved_credits = reserved_credits + 4 where id = ${user.id}`;
      await tx`
        insert into generations (id, account_id, prompt, model_id, provider_id, aspect_ratio, credit_cost, reserved_at)
        values (${randomUUID()}, ${user.id}, 'lost', 'openai:gpt-image-1.5', 'openai', '1:1', 4, now() - interval '5 minutes')`;
    });
    expect(await books(t, user.id)).toMatchObject({ balance: 6, reserved: 4, running: 1 });
    // Younger than the app's own sweep would release (every attempt and retry: minutes), so
    // only this call can release it.
    const released = await new GenerationsRepository(t.app.sql).releaseAbandoned(60_000);
    expect(released).toBe(1);
    expect(await books(t, user.id)).toMatchObject({ balance: 10, reserved: 0, running: 0, charges: 0 });
  });
});
