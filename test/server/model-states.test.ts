import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ClientError, Metadata, Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelManager } from "../../src/embedding/model-manager.js";
import type { ModelEntry } from "../../src/embedding/registry.js";
import { DomainError } from "../../src/errors.js";
import { IndexStatus } from "../../src/gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { createLogger } from "../../src/logging/logger.js";
import { decodeStatusDetails } from "../../src/server/status-details.js";
import { startTestApp, type TestApp } from "../helpers/app.js";
import { distinctPng } from "../helpers/images.js";

const VOCAB = Buffer.from("{}");

/** A registry entry for a model nobody has installed, fetched from `127.0.0.1`. */
function absentModel(): ModelEntry {
  return {
    id: "absent-test-clip",
    description: "test fixture",
    repository: "test/absent-test-clip",
    revision: "main",
    dimension: 8,
    files: [{ name: "vocab.json", source: "vocab.json", sha256: createHash("sha256").update(VOCAB).digest("hex") }],
  };
}

/** A port nothing listens on: a model host that cannot be reached, as on an offline machine. */
async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}`;
}

/** Log lines as parsed records, and a way to wait for one. */
function capturedLog() {
  const records: Record<string, unknown>[] = [];
  const waiting: { match: (r: Record<string, unknown>) => boolean; resolve: () => void }[] = [];
  const logger = createLogger("debug", (line) => {
    const record = JSON.parse(line) as Record<string, unknown>;
    records.push(record);
    for (const w of waiting.filter((w) => w.match(record))) w.resolve();
  });
  const until = (match: (r: Record<string, unknown>) => boolean) =>
    records.some(match) ? Promise.resolve() : new Promise<void>((resolve) => waiting.push({ match, resolve }));
  return { logger, records, until };
}

/** The retry delay a failed call's status details carry, in ms. */
async function failure(call: (trailer: (t: Metadata) => void) => Promise<unknown>): Promise<{ error: ClientError; retryAfterMs?: number }> {
  let trailer: Metadata | undefined;
  const error = await call((t) => (trailer = t)).then(
    () => expect.fail("the call succeeded"),
    (e: unknown) => e as ClientError,
  );
  expect(error).toBeInstanceOf(ClientError);
  const bin = trailer?.get("grpc-status-details-bin") as unknown as Uint8Array | undefined;
  return { error, retryAfterMs: bin ? decodeStatusDetails(bin).retryAfterMs : undefined };
}

describe("while the embedding model is still on its way", () => {
  let t: TestApp;
  let host: Server;
  beforeAll(async () => {
    // A model host that takes the request and never answers: the pull stays in progress.
    host = createServer(() => {});
    await new Promise<void>((resolve) => host.listen(0, "127.0.0.1", resolve));
    const baseUrl = `http://127.0.0.1:${(host.address() as AddressInfo).port}`;
    t = await startTestApp({ model: "absent-test-clip", modelBaseUrl: baseUrl }, { modelRegistry: [absentModel()] });
  });
  afterAll(async () => {
    host?.closeAllConnections();
    host?.close();
    await t?.close();
  });

  it("answers search UNAVAILABLE with a retry delay, which standard retry policies retry", async () => {
    const images = t.client(ImageServiceDefinition);
    const { error, retryAfterMs } = await failure((onTrailer) => images.searchImages({ query: { $case: "prompt", value: "a dog" } }, { onTrailer }));
    expect(error.code, error.details).toBe(Status.UNAVAILABLE);
    expect(error.details).toMatch(/embedding model is (still loading|being downloaded)/);
    expect(retryAfterMs).toBeGreaterThan(0);
  });

  it("refuses an upload that waits for indexing the same way, storing nothing", async () => {
    const images = t.client(ImageServiceDefinition);
    const content = await distinctPng(71);
    const { error, retryAfterMs } = await failure((onTrailer) =>
      images.uploadImage({ content, waitForIndex: true }, { onTrailer }),
    );
    expect(error.code, error.details).toBe(Status.UNAVAILABLE);
    expect(retryAfterMs).toBeGreaterThan(0);
    expect((await images.listImages({})).images).toHaveLength(0);
    // Without waiting, the upload is stored and indexed once the model is there.
    expect((await images.uploadImage({ content })).image?.indexStatus).toBeDefined();
  });

  it("still stores a Reka upload with index=true, without waiting, to be indexed once the model is there", async () => {
    const form = new FormData();
    form.append("images", new Blob([await distinctPng(72)], { type: "image/png" }), "car.png");
    form.append("index", "true");
    const res = await fetch(`http://127.0.0.1:${t.app.httpPort}/compat/reka/v1/images/upload`, {
      method: "POST",
      headers: { "x-api-key": t.adminKey },
      body: form,
    });
    const body = (await res.json()) as { results: { image_id: string; indexing_status: number }[] };
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.results).toHaveLength(1);
    const { image } = await t.client(ImageServiceDefinition).getImage({ id: body.results[0].image_id });
    expect(image!.indexStatus).toBe(IndexStatus.INDEX_STATUS_PENDING);
  });

  it("answers 503 with Retry-After over HTTP", async () => {
    const res = await fetch(`http://127.0.0.1:${t.app.httpPort}/v1/images:search`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.adminKey}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "a dog" }),
    });
    expect(res.status).toBe(503);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await res.json()).toMatchObject({ code: Status.UNAVAILABLE });
  });

  it("answers 503 with Retry-After on the seed search surfaces too", async () => {
    const base = `http://127.0.0.1:${t.app.httpPort}`;
    const json = { "content-type": "application/json" };
    const roboflow = await fetch(`${base}/compat/roboflow/ws/project/search?api_key=${encodeURIComponent(t.adminKey)}`, {
      method: "POST",
      headers: json,
      body: JSON.stringify({ prompt: "a dog" }),
    });
    const reka = await fetch(`${base}/compat/reka/v1/images/search`, {
      method: "POST",
      headers: { ...json, "x-api-key": t.adminKey },
      body: JSON.stringify({ query: "a dog" }),
    });
    for (const [name, res] of [["roboflow", roboflow], ["reka", reka]] as const) {
      const body = await res.text();
      expect(res.status, `${name}: ${body}`).toBe(503);
      expect(Number(res.headers.get("retry-after")), name).toBeGreaterThan(0);
    }
  });
});

describe("when the embedding model cannot be downloaded (offline)", () => {
  let t: TestApp;
  const log = capturedLog();
  beforeAll(async () => {
    const baseUrl = await closedPortUrl();
    t = await startTestApp(
      { model: "absent-test-clip", modelBaseUrl: baseUrl },
      { modelRegistry: [absentModel()], logger: log.logger },
    );
    await log.until((r) => r.level === "warn" || r.level === "error");
  });
  afterAll(async () => {
    await t?.close();
  });

  it("logs one warning that says what to do, with no retries and no stack trace", () => {
    const complaints = log.records.filter((r) => r.level === "warn" || r.level === "error");
    expect(complaints).toHaveLength(1);
    const [warning] = complaints;
    expect(warning.level).toBe("warn");
    expect(warning.msg).toContain("semantic search is off");
    expect(warning.msg).toContain("could not reach");
    expect(warning.msg).toContain("`glimpse model pull absent-test-clip`");
    expect(warning.msg).toContain("GLIMPSE_MODEL");
    expect(JSON.stringify(warning)).not.toContain("stack");
  });

  it("answers search FAILED_PRECONDITION, which needs an operator, saying how to get the model", async () => {
    const images = t.client(ImageServiceDefinition);
    const { error, retryAfterMs } = await failure((onTrailer) => images.searchImages({ query: { $case: "prompt", value: "a dog" } }, { onTrailer }));
    expect(error.code, error.details).toBe(Status.FAILED_PRECONDITION);
    expect(error.details).toContain("glimpse model pull absent-test-clip");
    expect(retryAfterMs).toBeUndefined();
  });
});

describe("ModelManager", () => {
  it("answers UNAVAILABLE with a one-second retry delay before the model is loaded", () => {
    const log = capturedLog();
    const models = new ModelManager({
      model: "absent-test-clip",
      cacheDir: "/nonexistent",
      autoPull: false,
      baseUrl: "http://127.0.0.1:9",
      runtime: { intraOpThreads: 1, executionProvider: "cpu" },
      batching: { maxBatchSize: 1, maxWaitMs: 0, maxQueue: 1 },
      logger: log.logger,
      registry: [absentModel()],
    });
    const error = (() => {
      try {
        models.embedder();
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(DomainError);
    expect((error as DomainError).code).toBe("UNAVAILABLE");
    expect((error as DomainError).retryAfterMs).toBe(1000);
  });
});
