import sharp from "sharp";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DomainError } from "../../src/errors.js";
import { ASPECT_RATIOS } from "../../src/generation/models.js";
import { GoogleProvider } from "../../src/generation/providers/google.js";
import { defaultHttpPolicy, parseRetryAfter, type HttpPolicy } from "../../src/generation/providers/http.js";
import { LocalProvider, localSize } from "../../src/generation/providers/local.js";
import { OPENAI_SIZES, OpenAIProvider } from "../../src/generation/providers/openai.js";
import type { ProviderRequest } from "../../src/generation/providers/types.js";
import { solidImage } from "../helpers/images.js";
import { geminiImage, openaiImage, startFakeProvider, type FakeProvider } from "./fake-provider.js";

const NOW = Date.parse("2026-06-15T12:00:00Z");

/** A retry policy whose waits are recorded instead of slept. */
function recordingPolicy(overrides: Partial<HttpPolicy> = {}) {
  const waits: number[] = [];
  const policy = defaultHttpPolicy({
    sleep: async (ms) => {
      waits.push(ms);
    },
    now: () => NOW,
    random: () => 0.5,
    ...overrides,
  });
  return { policy, waits };
}

function request(fields: Partial<ProviderRequest> = {}): ProviderRequest {
  return {
    model: "m",
    prompt: "a lighthouse at dusk",
    aspectRatio: "1:1",
    style: "",
    thinkingLevel: undefined,
    signal: new AbortController().signal,
    deadline: undefined,
    ...fields,
  };
}

async function failure(promise: Promise<unknown>): Promise<DomainError> {
  const err = await promise.then(
    () => undefined,
    (e) => e,
  );
  expect(err).toBeInstanceOf(DomainError);
  return err as DomainError;
}

let png: Buffer;
beforeAll(async () => {
  png = await solidImage(16, 16, { r: 10, g: 120, b: 200 });
});

describe("Retry-After", () => {
  it("reads seconds and HTTP dates", () => {
    expect(parseRetryAfter("7", NOW)).toBe(7000);
    expect(parseRetryAfter(new Date(NOW + 12_000).toUTCString(), NOW)).toBe(12_000);
    expect(parseRetryAfter(new Date(NOW - 5000).toUTCString(), NOW)).toBe(0);
    expect(parseRetryAfter("soon", NOW)).toBeUndefined();
    expect(parseRetryAfter(null, NOW)).toBeUndefined();
  });
});

describe("OpenAI adapter", () => {
  let fake: FakeProvider;
  beforeAll(async () => {
    fake = await startFakeProvider(() => openaiImage(png));
  });
  afterAll(async () => {
    await fake?.close();
  });
  beforeEach(() => {
    fake.received.length = 0;
    fake.otherwise = () => openaiImage(png);
  });
  const provider = (policy: HttpPolicy) => new OpenAIProvider({ baseUrl: fake.url, apiKey: "sk-test", http: policy });

  it("posts the Images API request and decodes the base64 image", async () => {
    const { policy } = recordingPolicy();
    const image = await provider(policy).generate(request({ model: "gpt-image-1.5", aspectRatio: "16:9", style: "watercolour" }));
    expect(Buffer.compare(image.bytes, png)).toBe(0);
    expect(image.mediaType).toBe("image/png");
    expect(fake.received).toHaveLength(1);
    const [sent] = fake.received;
    expect(sent.method).toBe("POST");
    expect(sent.path).toBe("/v1/images/generations");
    expect(sent.headers.authorization).toBe("Bearer sk-test");
    expect(sent.headers["content-type"]).toBe("application/json");
    expect(sent.body).toEqual({
      model: "gpt-image-1.5",
      prompt: "a lighthouse at dusk\n\nStyle: watercolour",
      n: 1,
      size: "1536x1024",
    });
  });

  it("maps every aspect ratio to one of the three GPT Image sizes, nearest in shape", () => {
    for (const ratio of ASPECT_RATIOS) {
      const [w, h] = ratio.split(":").map(Number);
      const size = OPENAI_SIZES[ratio];
      expect(["1024x1024", "1536x1024", "1024x1536"]).toContain(size);
      const [sw, sh] = size.split("x").map(Number);
      expect(Math.sign(sw - sh)).toBe(Math.sign(w - h));
    }
  });

  it("waits out a 429's Retry-After (seconds or a date) and then succeeds", async () => {
    const { policy, waits } = recordingPolicy();
    fake.reply(
      { status: 429, json: { error: { message: "Rate limit reached" } }, headers: { "retry-after": "3" } },
      {
        status: 429,
        json: { error: { message: "Rate limit reached" } },
        headers: { "retry-after": new Date(NOW + 5000).toUTCString() },
      },
    );
    const image = await provider(policy).generate(request());
    expect(Buffer.compare(image.bytes, png)).toBe(0);
    expect(fake.received).toHaveLength(3);
    expect(waits).toEqual([3000, 5000]);
  });

  it("backs off exponentially on 5xx and answers UNAVAILABLE when retries run out", async () => {
    const { policy, waits } = recordingPolicy({ retries: 2, backoffMs: 100 });
    fake.otherwise = () => ({ status: 503, json: { error: { message: "The server is overloaded" } } });
    const err = await failure(provider(policy).generate(request()));
    expect(err.code).toBe("UNAVAILABLE");
    expect(err.message).toContain("HTTP 503");
    expect(err.message).toContain("overloaded");
    expect(fake.received).toHaveLength(3);
    expect(waits).toEqual([100, 200]);
  });

  it("gives up at once when Retry-After is longer than it waits, carrying the delay", async () => {
    const { policy, waits } = recordingPolicy();
    fake.reply({ status: 429, json: {}, headers: { "retry-after": "600" } });
    const err = await failure(provider(policy).generate(request()));
    expect(err.code).toBe("UNAVAILABLE");
    expect(err.retryAfterMs).toBe(600_000);
    expect(waits).toEqual([]);
  });

  it("does not start a retry the call's deadline cannot wait for", async () => {
    const { policy, waits } = recordingPolicy();
    fake.reply({ status: 500, json: {}, headers: { "retry-after": "10" } });
    const err = await failure(provider(policy).generate(request({ deadline: new Date(NOW + 5000) })));
    expect(err.code).toBe("UNAVAILABLE");
    expect(fake.received).toHaveLength(1);
    expect(waits).toEqual([]);
  });

  it("maps a malformed request to INVALID_ARGUMENT and a moderation block to FAILED_PRECONDITION, without retrying", async () => {
    const { policy, waits } = recordingPolicy();
    fake.reply({ status: 400, json: { error: { message: "Invalid size '13x13'", type: "invalid_request_error", code: null } } });
    const bad = await failure(provider(policy).generate(request()));
    expect(bad.code).toBe("INVALID_ARGUMENT");
    expect(bad.violations[0].field).toBe("prompt");
    expect(bad.message).toContain("Invalid size");
    fake.reply({
      status: 400,
      json: { error: { message: "Your request was rejected by the safety system.", code: "moderation_blocked" } },
    });
    const refused = await failure(provider(policy).generate(request()));
    expect(refused.code).toBe("FAILED_PRECONDITION");
    expect(refused.message).toContain("refused the prompt");
    expect(fake.received).toHaveLength(2);
    expect(waits).toEqual([]);
  });

  it("says the configured key was rejected on 401 and 403", async () => {
    const { policy } = recordingPolicy();
    for (const status of [401, 403]) {
      fake.reply({ status, json: { error: { message: "Incorrect API key provided: sk-***" } } });
      const err = await failure(provider(policy).generate(request()));
      expect(err.code).toBe("FAILED_PRECONDITION");
      expect(err.message).toContain("rejected the configured key");
      expect(err.message).toContain("GLIMPSE_OPENAI_API_KEY");
      expect(err.message).not.toContain("sk-");
    }
  });

  it("times an attempt out and retries it, then answers UNAVAILABLE", async () => {
    const { policy, waits } = recordingPolicy({ timeoutMs: 50, retries: 1 });
    fake.otherwise = () => ({ hang: true });
    const err = await failure(provider(policy).generate(request()));
    expect(err.code).toBe("UNAVAILABLE");
    expect(err.message).toContain("no answer within 50 ms");
    expect(fake.received).toHaveLength(2);
    expect(waits).toHaveLength(1);
  });

  it("stops when the call is aborted, with the abort rather than a provider error", async () => {
    const { policy } = recordingPolicy();
    fake.otherwise = () => ({ hang: true });
    const controller = new AbortController();
    const pending = provider(policy).generate(request({ signal: controller.signal }));
    while (fake.received.length === 0) await new Promise((r) => setImmediate(r));
    controller.abort();
    const err = await pending.catch((e) => e);
    expect(err).not.toBeInstanceOf(DomainError);
    expect((err as Error).name).toBe("AbortError");
  });

  it("is unavailable without a key, naming the option", async () => {
    const { policy } = recordingPolicy();
    const p = new OpenAIProvider({ baseUrl: fake.url, apiKey: undefined, http: policy });
    expect(p.unavailableReason()).toContain("GLIMPSE_OPENAI_API_KEY");
    const err = await failure(p.generate(request()));
    expect(err.code).toBe("FAILED_PRECONDITION");
    expect(fake.received).toHaveLength(0);
  });
});

describe("Google Gemini adapter", () => {
  let fake: FakeProvider;
  beforeAll(async () => {
    fake = await startFakeProvider(() => geminiImage(png));
  });
  afterAll(async () => {
    await fake?.close();
  });
  beforeEach(() => {
    fake.received.length = 0;
  });
  const provider = (policy: HttpPolicy) => new GoogleProvider({ baseUrl: fake.url, apiKey: "AIza-test", http: policy });

  it("posts generateContent asking for an image at the aspect ratio, with the thinking level", async () => {
    const { policy } = recordingPolicy();
    const image = await provider(policy).generate(
      request({ model: "gemini-3-pro-image-preview", aspectRatio: "9:16", style: "35 mm film", thinkingLevel: "high" }),
    );
    expect(Buffer.compare(image.bytes, png)).toBe(0);
    expect(image.mediaType).toBe("image/png");
    const [sent] = fake.received;
    expect(sent.path).toBe("/v1beta/models/gemini-3-pro-image-preview:generateContent");
    expect(sent.headers["x-goog-api-key"]).toBe("AIza-test");
    expect(sent.body).toEqual({
      contents: [{ role: "user", parts: [{ text: "a lighthouse at dusk\n\nStyle: 35 mm film" }] }],
      generationConfig: {
        responseModalities: ["IMAGE"],
        imageConfig: { aspectRatio: "9:16" },
        thinkingConfig: { thinkingLevel: "high" },
      },
    });
  });

  it("leaves thinking to the model when no level is given", async () => {
    const { policy } = recordingPolicy();
    await provider(policy).generate(request({ model: "gemini-2.5-flash-image" }));
    expect(fake.received[0].body.generationConfig.thinkingConfig).toBeUndefined();
  });

  it("retries 429 RESOURCE_EXHAUSTED honouring Retry-After", async () => {
    const { policy, waits } = recordingPolicy();
    fake.reply({
      status: 429,
      json: { error: { code: 429, message: "Resource has been exhausted (e.g. check quota).", status: "RESOURCE_EXHAUSTED" } },
      headers: { "retry-after": "2" },
    });
    const image = await provider(policy).generate(request());
    expect(Buffer.compare(image.bytes, png)).toBe(0);
    expect(waits).toEqual([2000]);
  });

  it("retries 429 honouring the RetryInfo delay Gemini puts in the body", async () => {
    const { policy, waits } = recordingPolicy();
    fake.reply({
      status: 429,
      json: {
        error: {
          code: 429,
          message: "You exceeded your current quota.",
          status: "RESOURCE_EXHAUSTED",
          details: [
            { "@type": "type.googleapis.com/google.rpc.QuotaFailure", violations: [] },
            { "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "27s" },
          ],
        },
      },
    });
    const image = await provider(policy).generate(request());
    expect(Buffer.compare(image.bytes, png)).toBe(0);
    expect(waits).toEqual([27_000]);
  });

  it("treats a blocked prompt or an image-less answer as a refusal", async () => {
    const { policy } = recordingPolicy();
    fake.reply({ status: 200, json: { promptFeedback: { blockReason: "SAFETY" } } });
    const blocked = await failure(provider(policy).generate(request()));
    expect(blocked.code).toBe("FAILED_PRECONDITION");
    expect(blocked.message).toContain("SAFETY");
    fake.reply({
      status: 200,
      json: { candidates: [{ content: { parts: [{ text: "I can't draw that." }] }, finishReason: "IMAGE_SAFETY" }] },
    });
    const textOnly = await failure(provider(policy).generate(request()));
    expect(textOnly.code).toBe("FAILED_PRECONDITION");
    expect(textOnly.message).toContain("IMAGE_SAFETY");
    expect(textOnly.message).toContain("I can't draw that.");
  });

  it("maps 400 INVALID_ARGUMENT to INVALID_ARGUMENT and 403 to a rejected key", async () => {
    const { policy } = recordingPolicy();
    fake.reply({ status: 400, json: { error: { code: 400, message: "Unsupported aspect ratio", status: "INVALID_ARGUMENT" } } });
    expect((await failure(provider(policy).generate(request()))).code).toBe("INVALID_ARGUMENT");
    fake.reply({ status: 403, json: { error: { code: 403, message: "API key not valid", status: "PERMISSION_DENIED" } } });
    const key = await failure(provider(policy).generate(request()));
    expect(key.code).toBe("FAILED_PRECONDITION");
    expect(key.message).toContain("GLIMPSE_GOOGLE_API_KEY");
  });

  it("answers UNAVAILABLE after repeated 500s", async () => {
    const { policy } = recordingPolicy({ retries: 1 });
    fake.reply({ status: 500, json: { error: { code: 500, message: "Internal error encountered.", status: "INTERNAL" } } });
    fake.reply({ status: 500, json: { error: { code: 500, message: "Internal error encountered.", status: "INTERNAL" } } });
    const err = await failure(provider(policy).generate(request()));
    expect(err.code).toBe("UNAVAILABLE");
    expect(fake.received).toHaveLength(2);
  });
});

describe("local renderer", () => {
  const local = new LocalProvider();

  it("draws a real PNG at the asked aspect ratio, the same bytes for the same request", async () => {
    for (const ratio of ASPECT_RATIOS) {
      const a = await local.generate(request({ model: "shapes", aspectRatio: ratio }));
      const b = await local.generate(request({ model: "shapes", aspectRatio: ratio }));
      expect(Buffer.compare(a.bytes, b.bytes)).toBe(0);
      expect(a.mediaType).toBe("image/png");
      const meta = await sharp(a.bytes).metadata();
      expect(meta.format).toBe("png");
      const [w, h] = ratio.split(":").map(Number);
      expect(meta.width! * h).toBe(meta.height! * w);
      expect({ width: meta.width, height: meta.height }).toEqual(localSize(ratio));
    }
  });

  it("draws different pictures for different prompts, styles and models", async () => {
    const base = (await local.generate(request({ model: "gradient" }))).bytes;
    const others = await Promise.all([
      local.generate(request({ model: "gradient", prompt: "a lighthouse at dawn" })),
      local.generate(request({ model: "gradient", style: "watercolour" })),
      local.generate(request({ model: "shapes" })),
    ]);
    for (const other of others) expect(Buffer.compare(other.bytes, base)).not.toBe(0);
  });
});
