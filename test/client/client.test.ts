import { connect, createServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
// By package name, as another service would import it (package.json "exports").
import { createGlimpseClient, GlimpseError, Status, type GlimpseClient, type RetryEvent } from "glimpse/client";
import { startSearchTestApp } from "../helpers/search.js";
import { solidImage } from "../helpers/images.js";
import type { TestApp } from "../helpers/app.js";

/** A loopback port nothing listens on: connecting to it is refused at once. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A TCP proxy to `target` whose first connection loses its answers: once the client has sent
 * `marker` (a string the request's bytes hold as they are), nothing more from the server reaches
 * the client on that connection, and `cut()` then closes it as a network failure would. Later
 * connections pass everything through.
 */
async function answerLosingProxy(target: string, marker: string) {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const needle = Buffer.from(marker);
  const sockets: Socket[] = [];
  let first: { client: Socket; upstream: Socket } | undefined;
  let losing = false;
  const server = createServer((client) => {
    const upstream = connect(port, host);
    sockets.push(client, upstream);
    const isFirst = first === undefined;
    if (isFirst) first = { client, upstream };
    let seen = Buffer.alloc(0);
    client.on("data", (chunk: Buffer) => {
      if (isFirst && !losing) {
        seen = Buffer.concat([seen.subarray(-needle.length), chunk]);
        if (seen.includes(needle)) losing = true;
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (!(isFirst && losing)) client.write(chunk);
    });
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${(server.address() as { port: number }).port}`,
    /** Whether the marker went through and answers are being swallowed. */
    losing: () => losing,
    cut: () => {
      first?.client.destroy();
      first?.upstream.destroy();
    },
    close: () => {
      sockets.forEach((s) => s.destroy());
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("glimpse/client", () => {
  let t: TestApp;
  let key: string;
  let glimpse: GlimpseClient;

  beforeAll(async () => {
    t = await startSearchTestApp();
    key = (await t.newAccount()).key;
    glimpse = createGlimpseClient({ address: t.address, key });
  });
  afterAll(async () => {
    glimpse?.close();
    await t?.close();
  });

  it("retries RESOURCE_EXHAUSTED after the delay the server's RetryInfo asks for", async () => {
    // A real key limited to 30 calls a minute: a token comes back every 2 s.
    const { secret } = await glimpse.accounts.createApiKey({ name: "limited", rateLimitPerMinute: 30 });
    const retries: RetryEvent[] = [];
    const limited = createGlimpseClient({ address: t.address, key: secret, onRetry: (e) => retries.push(e) });
    try {
      let refusal: unknown;
      for (let i = 0; i < 100 && refusal === undefined; i++) {
        await limited.accounts.getAccount({}, { retry: false }).catch((err) => (refusal = err));
      }
      expect(refusal).toBeInstanceOf(GlimpseError);
      const error = refusal as GlimpseError;
      expect(error.code).toBe(Status.RESOURCE_EXHAUSTED);
      expect(error.retryInfo?.retryDelay).toBeDefined();
      expect(error.retryAfterMs).toBeGreaterThan(0);
      expect(error.retryAfterMs).toBeLessThanOrEqual(2000);
      expect(retries).toHaveLength(0);

      // The bucket is empty now; on a loaded machine a token may come back before the next
      // call, which then simply succeeds and takes it, so call until one is retried.
      let waited = 0;
      for (let i = 0; i < 5 && retries.length === 0; i++) {
        const started = Date.now();
        const { account } = await limited.accounts.getAccount({});
        waited = Date.now() - started;
        expect(account?.id).toBeTruthy();
      }
      expect(retries.length).toBeGreaterThanOrEqual(1);
      expect(retries[0].error.code).toBe(Status.RESOURCE_EXHAUSTED);
      expect(retries[0].delayMs).toBeGreaterThanOrEqual(retries[0].error.retryAfterMs!);
      // It waited as long as the server asked (not a short fixed backoff that fails again).
      expect(waited).toBeGreaterThanOrEqual(retries[0].error.retryAfterMs! - 50);
      expect(retries).toHaveLength(1);
    } finally {
      limited.close();
    }
  });

  it("gives up at once when the server's delay would pass the call's deadline", async () => {
    const { secret } = await glimpse.accounts.createApiKey({ name: "limited-2", rateLimitPerMinute: 1 });
    const limited = createGlimpseClient({ address: t.address, key: secret, deadlineMs: 3000 });
    try {
      await limited.accounts.getAccount({});
      const started = Date.now();
      const error = (await limited.accounts.getAccount({}).catch((e) => e)) as GlimpseError;
      expect(error).toBeInstanceOf(GlimpseError);
      expect(error.code).toBe(Status.RESOURCE_EXHAUSTED);
      expect(error.retryAfterMs).toBeGreaterThan(3000);
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      limited.close();
    }
  });

  it("exposes BadRequest field violations", async () => {
    const error = (await glimpse.images
      .uploadImage({ content: Buffer.alloc(0), requestId: "not-a-uuid" })
      .catch((e) => e)) as GlimpseError;
    expect(error).toBeInstanceOf(GlimpseError);
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.codeName).toBe("INVALID_ARGUMENT");
    const fields = error.fieldViolations.map((v) => v.field);
    expect(fields).toContain("request_id");
    expect(fields).toContain("content");
    expect(error.badRequest?.fieldViolations.find((v) => v.field === "request_id")?.description).toMatch(/UUID/);
    expect(error.attempts).toBe(1);
  });

  it("iterates server and bidirectional streams as async iterables", async () => {
    const colours = [
      { r: 255, g: 0, b: 0 },
      { r: 0, g: 0, b: 255 },
      { r: 0, g: 255, b: 0 },
    ];
    async function* requests() {
      for (const [i, colour] of colours.entries()) {
        yield { request: { content: await solidImage(32, 32, colour, "png", 900 + i), tags: ["stream"], waitForIndex: true } };
      }
    }
    const uploaded: string[] = [];
    for await (const response of glimpse.images.batchUploadImages(requests())) {
      expect(response.result?.$case).toBe("image");
      if (response.result?.$case === "image") uploaded.push(response.result.value.id);
    }
    expect(uploaded).toHaveLength(3);

    const ranked = [];
    for await (const { result, rank } of glimpse.images.streamSearchImages({
      search: { query: { $case: "prompt", value: "red" }, limit: 3, filter: { tags: ["stream"] } as never, fields: ["id", "tags"] },
    })) {
      ranked.push({ id: result!.id, rank, score: result!.score });
    }
    expect(ranked).toHaveLength(3);
    expect(ranked[0].id).toBe(uploaded[0]);
    expect(ranked.map((r) => r.score)).toEqual([...ranked.map((r) => r.score)].sort((a, b) => b - a));
  });

  it("spreads calls over several addresses and retries UNAVAILABLE on the next one", async () => {
    const retries: RetryEvent[] = [];
    const dead = `127.0.0.1:${await closedPort()}`;
    const both = createGlimpseClient({ address: [dead, t.address], key, onRetry: (e) => retries.push(e), retry: { initialBackoffMs: 10 } });
    try {
      for (let i = 0; i < 4; i++) expect((await both.generation.listModels({})).models.length).toBeGreaterThan(0);
      // Every call that was sent to the dead address first went on to the live one.
      expect(retries.length).toBeGreaterThanOrEqual(1);
      expect(retries.every((r) => r.error.code === Status.UNAVAILABLE)).toBe(true);
    } finally {
      both.close();
    }
  });

  it("retries a generation whose answer was lost under the same request id: one generation, charged once", async () => {
    const account = await t.newAccount({ credits: 5 });
    const proxy = await answerLosingProxy(t.address, "an answer lost on the way");
    const retries: RetryEvent[] = [];
    const viaProxy = createGlimpseClient({ address: proxy.address, key: account.key, onRetry: (e) => retries.push(e), retry: { initialBackoffMs: 10 } });
    const direct = createGlimpseClient({ address: t.address, key: account.key });
    try {
      const { models } = await direct.generation.listModels({});
      const cost = Number(models.find((m) => m.id === "local:gradient")!.creditCost);
      const answer = viaProxy.generation.generateImage({ prompt: "an answer lost on the way", modelId: "local:gradient" });
      // The first attempt runs to its end (generated, stored, charged); its answer never arrives.
      for (let i = 0; (await direct.generation.listGenerations({})).generations.length === 0; i++) {
        if (i > 300) throw new Error("the first attempt's generation never completed");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(proxy.losing()).toBe(true);
      proxy.cut();
      const { generation } = await answer;

      // The retry was answered with the first attempt's generation, not a second one.
      const { generations } = await direct.generation.listGenerations({});
      expect(generations.map((g) => g.id)).toEqual([generation!.id]);
      const { account: after } = await direct.accounts.getAccount({});
      expect(Number(after!.creditBalance)).toBe(5 - cost);
      expect(retries.map((r) => [r.path, Status[r.error.code]])).toEqual([
        ["/glimpse.generation.v1.GenerationService/GenerateImage", "UNAVAILABLE"],
      ]);
    } finally {
      viaProxy.close();
      direct.close();
      await proxy.close();
    }
  });

  it("ends a call at its deadline with DEADLINE_EXCEEDED", async () => {
    const error = (await glimpse.images
      .searchImages({ query: { $case: "prompt", value: "red" } }, { deadline: new Date(Date.now() + 1) })
      .catch((e) => e)) as GlimpseError;
    expect(error).toBeInstanceOf(GlimpseError);
    expect(error.code).toBe(Status.DEADLINE_EXCEEDED);
  });
});
