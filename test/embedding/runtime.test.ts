import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Worker, WorkerOptions } from "node:worker_threads";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { EmbeddingRuntime, cudaProviderInstalled, findModelFiles } from "../../src/embedding/runtime.js";
import { normaliseRows } from "../../src/embedding/runtime-worker.js";
import { ClipTokenizer } from "../../src/embedding/tokenizer.js";
import { DomainError } from "../../src/errors.js";
import { createLogger } from "../../src/logging/logger.js";
import { TEST_COLOURS, solidPixels, writeClipTestModel } from "../fixtures/clip-test-model.js";
import { testLogger } from "../helpers/log.js";

/** A worker thread that a test can make drop the messages sent to it. */
type RecordedWorker = Worker & { dropMessages: boolean };

// Every worker thread the runtime starts, so a test can end one as a crash would. Ending a thread
// while it is inside onnxruntime aborts the process, so the crash test first makes the thread
// drop its requests: it dies idle, with a request pending on the main thread.
const spawned = vi.hoisted(() => [] as { tower: string; worker: RecordedWorker }[]);
vi.mock("node:worker_threads", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:worker_threads")>();
  class RecordingWorker extends actual.Worker {
    dropMessages = false;
    constructor(filename: string | URL, options?: WorkerOptions) {
      super(filename, options);
      spawned.push({ tower: (options?.workerData as { tower: string }).tower, worker: this });
    }
    override postMessage(...args: Parameters<Worker["postMessage"]>): void {
      if (!this.dropMessages) super.postMessage(...args);
    }
  }
  return { ...actual, Worker: RecordingWorker };
});

let root: string;
let dir: string;
let tokenizer: ClipTokenizer;

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "glimpse-runtime-"));
  dir = path.join(root, "clip");
  await writeClipTestModel(dir);
  tokenizer = await ClipTokenizer.fromDirectory(dir);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const dot = (a: Float32Array, b: Float32Array) => a.reduce((sum, v, i) => sum + v * b[i], 0);
const norm = (a: Float32Array) => Math.sqrt(dot(a, a));

/** Index of the vector in `candidates` most similar to `query`. */
const nearest = (query: Float32Array, candidates: Float32Array[]) =>
  candidates.reduce((best, c, i) => (dot(query, c) > dot(query, candidates[best]) ? i : best), 0);

function embedTexts(runtime: EmbeddingRuntime, texts: string[]) {
  const { inputIds, attentionMask } = tokenizer.encodeBatch(texts);
  return runtime.embedTexts(inputIds, attentionMask, texts.length);
}

describe("EmbeddingRuntime on the CLIP test model", () => {
  let runtime: EmbeddingRuntime;

  beforeAll(async () => {
    runtime = await EmbeddingRuntime.open(dir, { logger: testLogger(), intraOpThreads: 1 });
  });

  afterAll(async () => {
    await runtime?.close();
  });

  it("reads the embedding size, image size and context length from the models", () => {
    expect(runtime.dimension).toBe(8);
    expect(runtime.imageSize).toBe(224);
    expect(runtime.contextLength).toBe(77);
    expect(runtime.executionProvider).toBe("cpu");
  });

  it("embeds solid red, green and blue images nearest to their own colour word", async () => {
    const names = ["red", "green", "blue"];
    const images = await runtime.embedImages(solidPixels(names.map((n) => TEST_COLOURS[n])), 3);
    const texts = await embedTexts(runtime, names);
    expect(images).toHaveLength(3);
    expect(texts).toHaveLength(3);
    images.forEach((image, i) => expect(names[nearest(image, texts)]).toBe(names[i]));
    texts.forEach((text, i) => expect(names[nearest(text, images)]).toBe(names[i]));
  });

  it("returns unit-length vectors of the model's dimension", async () => {
    const images = await runtime.embedImages(solidPixels([TEST_COLOURS.orange, TEST_COLOURS.grey, TEST_COLOURS.white]), 3);
    const texts = await embedTexts(runtime, ["a photo of a purple square", "a photo", ""]);
    for (const v of [...images, ...texts]) {
      expect(v).toBeInstanceOf(Float32Array);
      expect(v).toHaveLength(8);
      expect(norm(v)).toBeCloseTo(1, 5);
    }
  });

  it("finds the right colour among many prompts", async () => {
    const names = ["yellow", "cyan", "magenta", "white", "black", "orange", "purple"];
    const images = await runtime.embedImages(solidPixels(names.map((n) => TEST_COLOURS[n])), names.length);
    const texts = await embedTexts(runtime, names.map((n) => `a photo of a ${n} square`));
    images.forEach((image, i) => expect(names[nearest(image, texts)]).toBe(names[i]));
  });

  it("gives each of many concurrent calls its own result", async () => {
    const names = ["red", "green", "blue", "yellow", "cyan", "magenta"];
    const [texts, ...images] = await Promise.all([
      embedTexts(runtime, names),
      ...names.map((n) => runtime.embedImages(solidPixels([TEST_COLOURS[n]]), 1)),
    ]);
    images.forEach(([image], i) => expect(names[nearest(image, texts)]).toBe(names[i]));
  });

  it("moves the pixel buffer to the worker instead of copying it", async () => {
    const pixels = solidPixels([TEST_COLOURS.red]);
    await runtime.embedImages(pixels, 1);
    expect(pixels.length).toBe(0); // detached: transferred, not cloned
  });

  it("copies a view into a larger buffer, leaving the rest of that buffer alone", async () => {
    const size = 3 * 224 * 224;
    const both = solidPixels([TEST_COLOURS.red, TEST_COLOURS.blue]);
    const [red] = await runtime.embedImages(both.subarray(0, size), 1);
    expect(both.length).toBe(2 * size);
    const [blue] = await runtime.embedImages(both.subarray(size), 1);
    expect(dot(red, blue)).toBeLessThan(0.5);
  });

  it("keeps the event loop free while a large batch runs", async () => {
    const colours = Array.from({ length: 64 }, (_, i) => Object.values(TEST_COLOURS)[i % 14]);
    const pixels = solidPixels(colours); // 38 MB
    let ticks = 0;
    const interval = setInterval(() => ticks++, 1);
    try {
      const vectors = await runtime.embedImages(pixels, colours.length);
      expect(vectors).toHaveLength(64);
      expect(ticks).toBeGreaterThan(0);
    } finally {
      clearInterval(interval);
    }
  });

  it("rejects inputs of the wrong length with INVALID_ARGUMENT naming the field", async () => {
    await expect(runtime.embedImages(new Float32Array(10), 1)).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      violations: [{ field: "pixels" }],
    });
    const ids = new BigInt64Array(77);
    await expect(runtime.embedTexts(ids, new BigInt64Array(76), 1)).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      violations: [{ field: "attentionMask" }],
    });
    await expect(runtime.embedImages(new Float32Array(0), 0)).resolves.toEqual([]);
  });
});

describe("EmbeddingRuntime on a single-input/single-output export", () => {
  it("finds the input and output whatever they are called, and the size by a probe run", async () => {
    const plain = path.join(root, "plain");
    await writeClipTestModel(plain, { plain: true, dimension: 12 });
    const runtime = await EmbeddingRuntime.open(plain, { logger: testLogger(), intraOpThreads: 1 });
    try {
      expect(runtime.dimension).toBe(12); // the output shape says ["batch", "embedding"]
      expect(runtime.imageSize).toBe(224); // the input shape says ["batch", 3, "height", "width"]
      expect(runtime.contextLength).toBe(77);
      const names = ["red", "green", "blue"];
      const images = await runtime.embedImages(solidPixels(names.map((n) => TEST_COLOURS[n])), 3);
      const texts = await embedTexts(runtime, names);
      images.forEach((image, i) => expect(names[nearest(image, texts)]).toBe(names[i]));
      expect(images[0]).toHaveLength(12);
    } finally {
      await runtime.close();
    }
  });
});

describe("finding the model files", () => {
  it("fails clearly, naming the directory, when it does not exist", async () => {
    const missing = path.join(root, "no-such-model");
    const error = await EmbeddingRuntime.open(missing).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DomainError);
    expect(error).toMatchObject({ code: "FAILED_PRECONDITION" });
    expect((error as Error).message).toContain(missing);
  });

  it("names the files it looked for when the directory has no model", async () => {
    const empty = path.join(root, "empty");
    await mkdir(empty);
    await expect(findModelFiles(empty)).rejects.toThrow(/vision_model\.onnx.*text_model\.onnx/);
    await expect(findModelFiles(empty)).rejects.toThrow(empty);
  });

  it("finds Hugging Face's onnx/ folder and quantized files, preferring full precision", async () => {
    const hf = path.join(root, "hf");
    await writeClipTestModel(path.join(hf, "onnx"));
    await rename(path.join(hf, "onnx", "text_model.onnx"), path.join(hf, "onnx", "text_model_quantized.onnx"));
    await writeFile(path.join(hf, "onnx", "vision_model_quantized.onnx"), "");
    expect(await findModelFiles(hf)).toEqual({
      vision: path.join(hf, "onnx", "vision_model.onnx"),
      text: path.join(hf, "onnx", "text_model_quantized.onnx"),
    });
  });

  it("fails to open a corrupt model file with an error naming it", async () => {
    const corrupt = path.join(root, "corrupt");
    await writeClipTestModel(corrupt);
    await writeFile(path.join(corrupt, "vision_model.onnx"), "not a model");
    const error = await EmbeddingRuntime.open(corrupt, { logger: testLogger() }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "FAILED_PRECONDITION" });
    expect((error as Error).message).toContain(path.join(corrupt, "vision_model.onnx"));
  });
});

describe("EmbeddingRuntime failures", () => {
  it("fails pending calls with UNAVAILABLE when a worker thread dies, then starts a new one", async () => {
    const runtime = await EmbeddingRuntime.open(dir, { logger: testLogger(), intraOpThreads: 1 });
    try {
      const vision = spawned.filter((s) => s.tower === "vision").at(-1)!.worker;
      vision.dropMessages = true;
      const pending = runtime.embedImages(solidPixels(Array(8).fill(TEST_COLOURS.red)), 8);
      void vision.terminate();
      await expect(pending).rejects.toMatchObject({ code: "UNAVAILABLE" });
      // The text tower is untouched, and the next image call gets a fresh thread.
      await expect(embedTexts(runtime, ["red"])).resolves.toHaveLength(1);
      const [red] = await runtime.embedImages(solidPixels([TEST_COLOURS.red]), 1);
      const [redText] = await embedTexts(runtime, ["red"]);
      expect(dot(red, redText)).toBeCloseTo(1, 5);
    } finally {
      await runtime.close();
    }
  });

  it("close() fails pending and later calls with UNAVAILABLE", async () => {
    const runtime = await EmbeddingRuntime.open(dir, { logger: testLogger(), intraOpThreads: 1 });
    // Caught now: they fail while close() is awaited, before an expect could attach.
    const images = runtime.embedImages(solidPixels(Array(8).fill(TEST_COLOURS.blue)), 8).catch((e: unknown) => e);
    const texts = embedTexts(runtime, ["blue"]).catch((e: unknown) => e);
    await runtime.close();
    expect(await images).toMatchObject({ code: "UNAVAILABLE" });
    expect(await texts).toMatchObject({ code: "UNAVAILABLE" });
    await expect(runtime.embedImages(solidPixels([TEST_COLOURS.red]), 1)).rejects.toMatchObject({ code: "UNAVAILABLE" });
  });

  // onnxruntime-node lists "cuda" but does not bundle it; a machine that installed the provider
  // library would really start on CUDA, so this check applies only where it is absent.
  it.skipIf(cudaProviderInstalled().installed)(
    "falls back to CPU with a logged warning when CUDA is asked for but not installed (skipped where it is installed)",
    async () => {
      const lines: string[] = [];
      const logger = createLogger("warn", (line) => lines.push(line));
      const runtime = await EmbeddingRuntime.open(dir, { executionProvider: "cuda", logger, intraOpThreads: 1 });
      try {
        expect(runtime.executionProvider).toBe("cpu");
        const warnings = lines.map((l) => JSON.parse(l) as { level: string; msg: string });
        expect(warnings).toContainEqual(expect.objectContaining({ level: "warn", msg: expect.stringMatching(/CUDA.*CPU/) }));
        await expect(runtime.embedImages(solidPixels([TEST_COLOURS.red]), 1)).resolves.toHaveLength(1);
      } finally {
        await runtime.close();
      }
    },
  );
});

describe("normaliseRows", () => {
  it("scales each row to unit length and leaves a zero row zero, never NaN", () => {
    const rows = Float32Array.of(3, 4, 0, 0, 0, 0);
    normaliseRows(rows, 3);
    expect(Array.from(rows.subarray(0, 3))).toEqual([expect.closeTo(0.6, 6), expect.closeTo(0.8, 6), 0]);
    expect(Array.from(rows.subarray(3))).toEqual([0, 0, 0]);
  });
});
