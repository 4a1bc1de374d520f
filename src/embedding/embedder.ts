import { Batcher, type BatchObserver } from "./batcher.js";
import { decodeForModel, normaliseInto, type ModelImage } from "./preprocess.js";
import type { EmbeddingRuntime } from "./runtime.js";
import type { ClipTokenizer } from "./tokenizer.js";

/** Dynamic batching limits, shared by the image and the text tower. */
export interface BatchingOptions {
  /** Most inputs per model run. */
  maxBatchSize: number;
  /** How long the first queued input waits for others before its batch runs. */
  maxWaitMs: number;
  /** Inputs allowed to wait; beyond it callers get RESOURCE_EXHAUSTED. */
  maxQueue: number;
  /** Told of every model run (batch size and time), for the metrics. */
  observer?: BatchObserver;
}

/**
 * Turns text and image bytes into L2-normalised vectors with one CLIP-style model:
 * tokenisation and preprocessing on this thread (sharp decodes on libuv's pool), model runs
 * in the runtime's worker thread, concurrent requests grouped by one batcher per tower.
 */
export class Embedder {
  private readonly images: Batcher<ModelImage, Float32Array>;
  private readonly texts: Batcher<string, Float32Array>;

  constructor(
    readonly modelId: string,
    private readonly runtime: EmbeddingRuntime,
    tokenizer: ClipTokenizer,
    batching: BatchingOptions,
  ) {
    const size = runtime.imageSize;
    const pixelsPerImage = 3 * size * size;
    this.images = new Batcher({
      ...batching,
      run: async (items) => {
        // Images wait as 8-bit RGB and are normalised straight into the batch's tensor: one
        // float32 buffer per model run, not one per image plus a copy.
        const pixels = new Float32Array(items.length * pixelsPerImage);
        items.forEach((item, i) => normaliseInto(item, pixels, i * pixelsPerImage));
        return runtime.embedImages(pixels, items.length);
      },
    });
    this.texts = new Batcher({
      ...batching,
      run: async (items) => {
        const { inputIds, attentionMask } = tokenizer.encodeBatch(items);
        return runtime.embedTexts(inputIds, attentionMask, items.length);
      },
    });
  }

  /** Length of every vector this model produces. */
  get dimension(): number {
    return this.runtime.dimension;
  }

  /** Inputs waiting for a model run, both towers together. */
  get queued(): number {
    return this.images.queued + this.texts.queued;
  }

  embedText(text: string, signal?: AbortSignal): Promise<Float32Array> {
    return this.texts.submit(text, signal);
  }

  /** Decodes and preprocesses the image here, then queues it for the vision tower. */
  async embedImage(bytes: Uint8Array, signal?: AbortSignal): Promise<Float32Array> {
    const image = await decodeForModel(bytes, this.runtime.imageSize);
    signal?.throwIfAborted();
    return this.images.submit(image, signal);
  }

  async close(): Promise<void> {
    await Promise.all([this.images.close(), this.texts.close()]);
    await this.runtime.close();
  }
}
