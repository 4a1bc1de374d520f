import { createHash } from "node:crypto";
import { open, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { DomainError } from "../errors.js";
import type { Logger } from "../logging/logger.js";
import { Embedder, type BatchingOptions } from "./embedder.js";
import { isModelInstalled, modelDirectory, pullModel } from "./pull.js";
import { findModel, type ModelEntry } from "./registry.js";
import { EmbeddingRuntime, findModelFiles, type RuntimeOptions } from "./runtime.js";
import { ClipTokenizer } from "./tokenizer.js";

/** How the embedding model is found, fetched and run. */
export interface ModelManagerOptions {
  /** A registry id (e.g. clip-vit-b32) or a path to a model directory. */
  model: string;
  cacheDir: string;
  autoPull: boolean;
  baseUrl: string;
  runtime: Omit<RuntimeOptions, "logger">;
  batching: BatchingOptions;
  logger: Logger;
  /** The models known by id (default: the built-in registry). */
  registry?: readonly ModelEntry[];
}

/** Where the model stands; `reason` says why it is not ready and what to do. */
export type ModelState =
  | { state: "loading" }
  | { state: "pulling"; progress: string }
  | { state: "ready"; embedder: Embedder }
  | { state: "unavailable"; reason: string };

/** When a caller should try again while the model loads (opening it takes seconds). */
const LOADING_RETRY_MS = 1_000;
/** When a caller should try again while the model downloads (minutes, on a slow link). */
const PULLING_RETRY_MS = 15_000;

/**
 * UNAVAILABLE with a retry delay: search is starting and will be there without anyone's help,
 * so clients' ordinary retry policies retry it (FAILED_PRECONDITION is kept for states an
 * operator has to fix, such as no model installed).
 */
export function stillStarting(message: string, retryAfterMs = LOADING_RETRY_MS): DomainError {
  return new DomainError("UNAVAILABLE", message, { retryAfterMs });
}

/**
 * The configured model cannot be had (not installed and not downloadable, offline say, or a
 * GLIMPSE_MODEL that names nothing): an operator's to fix, logged as one warning saying how,
 * never with a stack trace.
 */
class ModelUnavailable extends Error {}

/**
 * Owns the embedding model's life: resolves the configured model (registry id or directory),
 * pulls it in the background when it is missing and auto-pull is on, opens it, and then hands
 * out the Embedder. Until then callers get UNAVAILABLE with a retry delay while it loads or
 * downloads, and FAILED_PRECONDITION saying why and how to fix it when it cannot be had;
 * the rest of the service runs regardless.
 */
export class ModelManager {
  private current: ModelState = { state: "loading" };
  private readonly abort = new AbortController();
  private readonly waiters: ((embedder: Embedder) => void)[] = [];
  private started?: Promise<void>;

  constructor(private readonly options: ModelManagerOptions) {}

  get state(): ModelState {
    return this.current;
  }

  /** Starts resolving the model in the background; never throws. */
  start(): void {
    this.started ??= this.load().catch((err: Error) => {
      if (this.abort.signal.aborted) {
        // Shutting down mid-pull: nothing went wrong.
      } else if (err instanceof ModelUnavailable) {
        this.options.logger.warn(`semantic search is off: ${err.message}; to turn it on, ${this.howToInstall()}`);
      } else {
        this.options.logger.error("embedding model unavailable", { error: err });
      }
      this.current = { state: "unavailable", reason: err.message };
    });
  }

  /** What an operator does to get the configured model, for messages about its absence. */
  private howToInstall(): string {
    const { model, cacheDir, registry } = this.options;
    const entry = findModel(model, registry);
    if (!entry) {
      return `set GLIMPSE_MODEL to a directory holding the model files (vocab.json, merges.txt, text_model.onnx, vision_model.onnx)`;
    }
    const pull = `\`glimpse model pull ${entry.id}\``;
    return (
      `run ${pull} with internet access, or copy ${entry.files.map((f) => f.name).join(", ")} ` +
      `into ${modelDirectory(cacheDir, entry.id)} and run ${pull} (it checks them and downloads nothing), ` +
      `or set GLIMPSE_MODEL to a model directory`
    );
  }

  /**
   * The embedder; UNAVAILABLE with a retry delay while it loads or downloads, FAILED_PRECONDITION
   * explaining why and how to fix it when there is none.
   */
  embedder(): Embedder {
    const s = this.current;
    if (s.state === "ready") return s.embedder;
    if (s.state === "loading") throw stillStarting("the embedding model is still loading; retry shortly", LOADING_RETRY_MS);
    if (s.state === "pulling") {
      throw stillStarting(`the embedding model is being downloaded (${s.progress}); retry later`, PULLING_RETRY_MS);
    }
    throw new DomainError("FAILED_PRECONDITION", `semantic search is unavailable: ${s.reason}; ${this.howToInstall()}`);
  }

  /** Resolves once the model is ready (never, if it cannot be loaded). */
  ready(): Promise<Embedder> {
    if (this.current.state === "ready") return Promise.resolve(this.current.embedder);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.started;
    if (this.current.state === "ready") await this.current.embedder.close();
    this.current = { state: "unavailable", reason: "the service is shutting down" };
  }

  private async load(): Promise<void> {
    const { model, logger } = this.options;
    const { dir, id } = await this.resolve(model);
    if (this.abort.signal.aborted) return;
    const runtime = await EmbeddingRuntime.open(dir, { ...this.options.runtime, logger });
    const tokenizer = await ClipTokenizer.fromDirectory(dir);
    const embedder = new Embedder(id, runtime, tokenizer, this.options.batching);
    if (this.abort.signal.aborted) {
      await embedder.close();
      return;
    }
    this.current = { state: "ready", embedder };
    logger.info("embedding model ready", { model: id, dimension: runtime.dimension, dir });
    for (const resolve of this.waiters.splice(0)) resolve(embedder);
  }

  /** The model's directory and id, pulling a registry model first when allowed. */
  private async resolve(model: string): Promise<{ dir: string; id: string }> {
    const entry = findModel(model, this.options.registry);
    if (!entry) {
      const dir = path.resolve(model);
      const info = await stat(dir).catch(() => undefined);
      if (!info?.isDirectory()) {
        throw new ModelUnavailable(`GLIMPSE_MODEL ${JSON.stringify(model)} is neither a known model id nor a directory`);
      }
      return { dir, id: await directoryModelId(dir) };
    }
    const { cacheDir, autoPull, baseUrl, logger } = this.options;
    if (await isModelInstalled(cacheDir, entry)) return { dir: modelDirectory(cacheDir, entry.id), id: entry.id };
    if (!autoPull) {
      throw new ModelUnavailable(`model ${entry.id} is not installed in ${cacheDir} and GLIMPSE_MODEL_AUTO_PULL is off`);
    }
    logger.info("pulling embedding model", { model: entry.id, from: baseUrl });
    this.current = { state: "pulling", progress: "starting" };
    let lastLogged = -1;
    const dir = await pullModel(entry, {
      cacheDir,
      baseUrl,
      logger,
      signal: this.abort.signal,
      onProgress: (p) => {
        const pct = p.totalBytes ? Math.floor((100 * p.receivedBytes) / p.totalBytes) : undefined;
        this.current = { state: "pulling", progress: `${p.file} ${pct ?? "?"}%` };
        if (pct !== undefined && Math.floor(pct / 10) !== lastLogged) {
          lastLogged = Math.floor(pct / 10);
          logger.info("model download", { model: entry.id, file: p.file, percent: pct });
        }
      },
    }).catch((err: Error) => {
      const message = `model ${entry.id} is not installed and could not be downloaded (${err.message})`;
      // Failures of the host or the network are the environment's; anything else is a bug.
      if (err instanceof DomainError && err.code !== "INTERNAL") throw new ModelUnavailable(message);
      throw new Error(message, { cause: err });
    });
    return { dir, id: entry.id };
  }
}

/**
 * A directory model's id: its manifest's (pulled models carry one, with their files'
 * sha256), else `dir:<folder name>:<fingerprint>`, the fingerprint hashing each tower file's
 * size and first MiB, so that replacing the files in place is seen as a model change.
 */
async function directoryModelId(dir: string): Promise<string> {
  try {
    const manifest = JSON.parse(await readFile(path.join(dir, "glimpse-model.json"), "utf8")) as { id?: unknown };
    if (typeof manifest.id === "string" && manifest.id !== "") return manifest.id;
  } catch {
    // no manifest: fingerprint the files
  }
  const { vision, text } = await findModelFiles(dir);
  const hash = createHash("sha256");
  for (const file of [vision, text]) {
    const handle = await open(file, "r");
    try {
      const { size } = await handle.stat();
      const head = Buffer.alloc(Math.min(size, 1024 * 1024));
      await handle.read(head, 0, head.length, 0);
      hash.update(`${path.basename(file)}:${size}:`).update(head);
    } finally {
      await handle.close();
    }
  }
  return `dir:${path.basename(dir)}:${hash.digest("hex").slice(0, 12)}`;
}
