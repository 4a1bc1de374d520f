// The ONNX half of the embedding layer: a CLIP vision model and text model, each in a worker
// thread of its own (see runtime-worker.ts for why), behind one object that takes preprocessed
// tensors and returns unit-length embeddings.
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import path from "node:path";
import { Worker } from "node:worker_threads";
import { DomainError, invalidArgument } from "../errors.js";
import { createLogger, type Logger } from "../logging/logger.js";
import type { RunRequest, Tower, TowerInfo, TowerWorkerData, WorkerReply, WorkerRequest } from "./runtime-worker.js";

/** The worker's entry: registers tsx in the new thread, then loads runtime-worker.ts. */
const WORKER_ENTRY = new URL("./runtime-worker-bootstrap.mjs", import.meta.url);

const DEFAULT_IMAGE_SIZE = 224;
const DEFAULT_CONTEXT_LENGTH = 77;

/** How the ONNX sessions run. */
export interface RuntimeOptions {
  /** Threads one session uses inside an operator; default os.availableParallelism(). */
  intraOpThreads?: number;
  /** Threads for running independent operators at once; default 1 (sessions run sequentially). */
  interOpThreads?: number;
  /**
   * Default "cpu". "cuda" is used when its provider library is installed next to
   * onnxruntime-node (it is not in the npm package; ONNXRUNTIME_NODE_INSTALL=cuda12 at install
   * fetches it) and starts; otherwise the runtime logs a warning and runs on CPU.
   */
  executionProvider?: "cpu" | "cuda";
  /** Where start-up facts and the CUDA fallback warning go; default warnings to stderr. */
  logger?: Logger;
}

const MODEL_NAMES: Record<Tower, string[]> = {
  vision: ["vision_model.onnx", "vision_model_quantized.onnx"],
  text: ["text_model.onnx", "text_model_quantized.onnx"],
};

/**
 * Finds the two model files in `modelDir` (or its `onnx/` folder, as Hugging Face lays them out),
 * full-precision files before quantized ones. Fails with FAILED_PRECONDITION naming the directory
 * and the files it looked for.
 */
export async function findModelFiles(modelDir: string): Promise<{ vision: string; text: string }> {
  const folders = [modelDir, path.join(modelDir, "onnx")];
  const listings = await Promise.all(folders.map((dir) => readdir(dir).catch(() => null)));
  if (listings[0] === null) {
    throw new DomainError("FAILED_PRECONDITION", `model directory ${modelDir} does not exist or cannot be read`);
  }
  const find = (tower: Tower): string | undefined => {
    for (const [i, folder] of folders.entries()) {
      const name = MODEL_NAMES[tower].find((n) => listings[i]?.includes(n));
      if (name) return path.join(folder, name);
    }
    return undefined;
  };
  const vision = find("vision");
  const text = find("text");
  if (vision === undefined || text === undefined) {
    const missing = (["vision", "text"] as const)
      .filter((t) => (t === "vision" ? vision : text) === undefined)
      .map((t) => MODEL_NAMES[t].join(" or "));
    throw new DomainError(
      "FAILED_PRECONDITION",
      `model directory ${modelDir} has no ${missing.join(", no ")} (looked in it and in its onnx/ folder)`,
    );
  }
  return { vision, text };
}

/**
 * Whether the CUDA execution provider can be tried. onnxruntime-node lists "cuda" among its
 * backends but does not bundle it (listSupportedBackends() says `bundled: false`): its install
 * script fetches the provider library separately (ONNXRUNTIME_NODE_INSTALL=cuda12). Without
 * that library next to the binding, asking for CUDA only makes the native side print an error.
 */
export function cudaProviderInstalled(): { installed: boolean; folder: string } {
  const packageMain = createRequire(import.meta.url).resolve("onnxruntime-node");
  const folder = path.join(path.dirname(packageMain), "..", "bin", "napi-v6", process.platform, process.arch);
  const file = process.platform === "win32" ? "onnxruntime_providers_cuda.dll" : "libonnxruntime_providers_cuda.so";
  return { installed: existsSync(path.join(folder, file)), folder };
}

/**
 * Gives the buffer behind `view` to the worker without copying when the view spans all of it;
 * a view into a larger buffer is copied first, so that nothing else is detached.
 */
function transferable(view: Float32Array | BigInt64Array): ArrayBuffer {
  const whole = view.buffer instanceof ArrayBuffer && view.byteOffset === 0 && view.byteLength === view.buffer.byteLength;
  return whole ? (view.buffer as ArrayBuffer) : (view.slice().buffer as ArrayBuffer);
}

interface Pending {
  count: number;
  resolve(vectors: Float32Array[]): void;
  reject(error: unknown): void;
}

/**
 * One tower's worker thread. Requests are numbered and matched to replies by id. When the
 * thread dies, every request it held fails with UNAVAILABLE and the next request starts a new
 * thread. The thread does not keep the process alive while it has nothing to do.
 */
class TowerWorker {
  private worker: Worker | undefined;
  /** Settles when `worker` has ended. */
  private exited: Promise<void> = Promise.resolve();
  private restarting: Promise<Worker> | undefined;
  private closing: Promise<void> | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  constructor(
    private readonly data: TowerWorkerData,
    private readonly logger: Logger,
  ) {}

  /** Starts the thread and waits until its model is open. */
  start(): Promise<TowerInfo> {
    return this.spawn();
  }

  /** Sends one request; `transfer` lists the buffers that move to the worker. */
  async run(request: Omit<RunRequest, "id">, transfer: ArrayBuffer[]): Promise<Float32Array[]> {
    if (this.closed) throw this.closedError();
    const worker = this.worker ?? (await this.restart());
    if (this.closed) throw this.closedError();
    const id = this.nextId++;
    return new Promise<Float32Array[]>((resolve, reject) => {
      this.pending.set(id, { count: request.count, resolve, reject });
      if (this.pending.size === 1) worker.ref();
      worker.postMessage({ kind: "run", ...request, id } satisfies WorkerRequest, transfer);
    });
  }

  /**
   * Fails whatever is pending at once, then asks the thread to end and waits until it has: after
   * the run in progress, if any, since a thread stopped inside onnxruntime aborts the process.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      this.failPending(this.closedError());
      await this.restarting?.catch(() => undefined);
      const worker = this.worker;
      if (worker === undefined) return;
      worker.ref(); // the process must not exit while the thread is still inside a run
      worker.postMessage({ kind: "close" } satisfies WorkerRequest);
      await this.exited;
    })();
    return this.closing;
  }

  private closedError(): DomainError {
    return new DomainError("UNAVAILABLE", "the embedding runtime is closed");
  }

  private restart(): Promise<Worker> {
    this.restarting ??= this.spawn().then(
      () => {
        this.restarting = undefined;
        if (this.worker === undefined) throw new Error("the new worker thread stopped at once");
        return this.worker;
      },
      (error: unknown) => {
        this.restarting = undefined;
        throw new DomainError("UNAVAILABLE", `the ${this.data.tower} model could not be restarted`, { cause: error });
      },
    );
    return this.restarting;
  }

  /** Starts a thread; once its model is open it becomes this tower's worker. */
  private spawn(): Promise<TowerInfo> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(WORKER_ENTRY, { workerData: this.data, name: `embedding-${this.data.tower}` });
      worker.unref();
      const exited = new Promise<void>((done) => worker.once("exit", () => done()));
      let ready = false;
      worker.on("message", (reply: WorkerReply) => {
        switch (reply.kind) {
          case "ready":
            ready = true;
            this.worker = worker;
            this.exited = exited;
            resolve(reply.info);
            break;
          case "log":
            this.logger[reply.level](reply.msg, reply.fields);
            break;
          case "result":
            this.settle(reply.id, (p) => {
              const data = new Float32Array(reply.embeddings);
              const d = reply.dimension;
              p.resolve(Array.from({ length: p.count }, (_, i) => data.slice(i * d, (i + 1) * d)));
            });
            break;
          case "error":
            this.settle(reply.id, (p) =>
              p.reject(
                new DomainError("INTERNAL", `the ${this.data.tower} model failed to run`, { cause: new Error(reply.message) }),
              ),
            );
            break;
        }
      });
      const died = (cause: unknown) => {
        if (!ready) {
          ready = true; // a thread that never opened its model has nothing pending
          reject(cause);
          return;
        }
        if (this.worker !== worker) return; // closed, or already handled (an error is followed by exit)
        this.worker = undefined;
        if (this.closed) return;
        this.logger.error("embedding worker thread died", { tower: this.data.tower, error: cause });
        this.failPending(new DomainError("UNAVAILABLE", `the ${this.data.tower} model's worker thread stopped`, { cause }));
      };
      worker.on("error", died);
      worker.on("exit", (code) => died(new Error(`worker thread exited with code ${code}`)));
    });
  }

  private settle(id: number, finish: (pending: Pending) => void): void {
    const pending = this.pending.get(id);
    if (pending === undefined) return;
    this.pending.delete(id);
    if (this.pending.size === 0) this.worker?.unref();
    finish(pending);
  }

  private failPending(error: DomainError): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    this.worker?.unref();
    for (const p of all) p.reject(error);
  }
}

/**
 * A CLIP dual encoder in ONNX: image pixels and token ids in, L2-normalised embeddings out.
 * Each model runs in its own worker thread, one request at a time, so an image batch and a text
 * query can run side by side and neither blocks the event loop.
 */
export class EmbeddingRuntime {
  private constructor(
    private readonly vision: TowerWorker,
    private readonly text: TowerWorker,
    /** Embedding size, from the models' output shape (or a probe run when it is symbolic). */
    readonly dimension: number,
    /** Side of the square input images, from the vision input shape (…x3xHxW); 224 when symbolic. */
    readonly imageSize: number,
    /** Tokens per text, from the text input shape; 77 when symbolic. */
    readonly contextLength: number,
    /** Where the sessions run: "cuda" only when it was asked for and started. */
    readonly executionProvider: "cpu" | "cuda",
  ) {}

  /** Starts a worker thread per model found in modelDir (see {@link findModelFiles}) and opens them. */
  static async open(modelDir: string, options: RuntimeOptions = {}): Promise<EmbeddingRuntime> {
    const files = await findModelFiles(modelDir);
    const logger = (options.logger ?? createLogger("warn", (line) => process.stderr.write(line))).child({
      component: "embedding",
    });
    const intraOpThreads = options.intraOpThreads ?? availableParallelism();
    const interOpThreads = options.interOpThreads ?? 1;
    for (const [name, value] of Object.entries({ intraOpThreads, interOpThreads })) {
      if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got ${value}`);
    }
    let executionProvider = options.executionProvider ?? "cpu";
    if (executionProvider === "cuda") {
      const cuda = cudaProviderInstalled();
      if (!cuda.installed) {
        logger.warn("CUDA execution provider is not installed with onnxruntime-node; running on CPU", {
          looked_in: cuda.folder,
        });
        executionProvider = "cpu";
      }
    }
    const towers = (["vision", "text"] as const).map(
      (tower) =>
        new TowerWorker(
          {
            tower,
            modelPath: files[tower],
            intraOpThreads,
            interOpThreads,
            executionProvider,
          },
          logger,
        ),
    );
    const [vision, text] = towers;
    const started = await Promise.allSettled(towers.map((t) => t.start()));
    const failed = started.findIndex((s) => s.status === "rejected");
    if (failed >= 0) {
      await Promise.all(towers.map((t) => t.close()));
      const cause = (started[failed] as PromiseRejectedResult).reason;
      const file = failed === 0 ? files.vision : files.text;
      throw new DomainError("FAILED_PRECONDITION", `cannot open model ${file}: ${errorMessage(cause)}`, { cause });
    }
    const [visionInfo, textInfo] = started.map((s) => (s as PromiseFulfilledResult<TowerInfo>).value);
    if (visionInfo.dimension !== textInfo.dimension) {
      await Promise.all(towers.map((t) => t.close()));
      throw new DomainError(
        "FAILED_PRECONDITION",
        `models in ${modelDir} disagree on the embedding size: vision ${visionInfo.dimension}, text ${textInfo.dimension}`,
      );
    }
    const runtime = new EmbeddingRuntime(
      vision,
      text,
      visionInfo.dimension,
      visionInfo.inputLength ?? DEFAULT_IMAGE_SIZE,
      textInfo.inputLength ?? DEFAULT_CONTEXT_LENGTH,
      visionInfo.executionProvider === "cuda" && textInfo.executionProvider === "cuda" ? "cuda" : "cpu",
    );
    logger.info("embedding models opened", {
      vision: files.vision,
      text: files.text,
      dimension: runtime.dimension,
      image_size: runtime.imageSize,
      context_length: runtime.contextLength,
      execution_provider: runtime.executionProvider,
      intra_op_threads: intraOpThreads,
    });
    return runtime;
  }

  /**
   * Embeds `count` images given as pixels: count*3*imageSize*imageSize float32 values, NCHW,
   * CLIP-normalised. Returns `count` unit-length vectors (a zero output stays zero). The pixels'
   * buffer moves to the worker thread: `pixels` is empty (detached) afterwards, unless it was a
   * view into a larger buffer, which is copied instead.
   */
  async embedImages(pixels: Float32Array, count: number): Promise<Float32Array[]> {
    checkCount(count);
    const side = this.imageSize;
    const expected = count * 3 * side * side;
    if (pixels.length !== expected) {
      throw invalidArgument({
        field: "pixels",
        description: `expected ${count} x 3 x ${side} x ${side} = ${expected} values, got ${pixels.length}`,
      });
    }
    if (count === 0) return [];
    const input = transferable(pixels);
    return this.vision.run({ count, itemShape: [3, side, side], input }, [input]);
  }

  /**
   * Embeds `count` tokenised texts: inputIds and attentionMask hold count*contextLength int64
   * values each (the mask is passed on only to models that take one). Returns `count` unit-length
   * vectors. Both buffers move to the worker thread, as in {@link embedImages}.
   */
  async embedTexts(inputIds: BigInt64Array, attentionMask: BigInt64Array, count: number): Promise<Float32Array[]> {
    checkCount(count);
    const expected = count * this.contextLength;
    const violations = [
      { field: "inputIds", length: inputIds.length },
      { field: "attentionMask", length: attentionMask.length },
    ]
      .filter((v) => v.length !== expected)
      .map((v) => ({
        field: v.field,
        description: `expected ${count} x ${this.contextLength} = ${expected} values, got ${v.length}`,
      }));
    if (violations.length > 0) throw invalidArgument(violations);
    if (count === 0) return [];
    const input = transferable(inputIds);
    let mask = transferable(attentionMask);
    if (mask === input) mask = attentionMask.slice().buffer as ArrayBuffer; // one array passed twice
    return this.text.run({ count, itemShape: [this.contextLength], input, mask }, [input, mask]);
  }

  /**
   * Ends both worker threads. Calls still pending fail with UNAVAILABLE at once; the returned
   * promise waits for a model run already in progress to end, since a thread cannot be stopped
   * inside onnxruntime without aborting the process.
   */
  async close(): Promise<void> {
    await Promise.all([this.vision.close(), this.text.close()]);
  }
}

function checkCount(count: number): void {
  if (!Number.isInteger(count) || count < 0) {
    throw invalidArgument({ field: "count", description: `must be a non-negative integer, got ${count}` });
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
