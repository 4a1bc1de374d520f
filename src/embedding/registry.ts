/**
 * The embedding models glimpse knows by name: where each one's files come from, their
 * sha256, and the dimension of the vectors it produces. `glimpse model pull <id>` downloads
 * an entry's files from `${baseUrl}/${repository}/resolve/${revision}/${source}`.
 */

/** One file of a model. */
export interface ModelFile {
  /** File name inside the installed model directory. */
  name: string;
  /** Path of the file inside the source repository. */
  source: string;
  /** Lower-case hex sha256 of the whole file; a download that does not match is refused. */
  sha256: string;
  /** Size in bytes, when known; lets a resumed pull recognise a complete part without asking. */
  bytes?: number;
}

/** A named model: a CLIP-style dual encoder and its tokenizer files. */
export interface ModelEntry {
  /** Name used by GLIMPSE_MODEL and `glimpse model pull`; also the cache directory's name. */
  id: string;
  description: string;
  /** Repository on the model host (`owner/name`). */
  repository: string;
  /** Branch, tag or commit of the repository the files are read from. */
  revision: string;
  /** Length of the embedding vectors. */
  dimension: number;
  files: ModelFile[];
}

/** Every model `glimpse model pull` can fetch; the first one is the default. */
export const MODELS: readonly ModelEntry[] = Object.freeze([
  {
    id: "clip-vit-b32",
    description: "OpenAI CLIP ViT-B/32 (ONNX export by Xenova): int8 text tower, fp32 vision tower",
    repository: "Xenova/clip-vit-base-patch32",
    revision: "main",
    dimension: 512,
    files: [
      // The tokenizer files are the standard CLIP ViT-B/32 ones, byte-identical across the
      // CLIP repositories (openai/clip-vit-base-patch32 and its ONNX exports).
      {
        name: "vocab.json",
        source: "vocab.json",
        sha256: "5047b556ce86ccaf6aa22b3ffccfc52d391ea4accdab9c2f2407da5b742d4363",
        bytes: 862_328,
      },
      {
        name: "merges.txt",
        source: "merges.txt",
        sha256: "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a",
        bytes: 524_619,
      },
      // The quantised (int8) text tower: about 3x faster than fp32 on CPU for prompts.
      {
        name: "text_model.onnx",
        source: "onnx/text_model_quantized.onnx",
        sha256: "73baab855d406190da9faa498cfedf65f15cf309f4cc7385b7b032e6d08e5c3a",
      },
      {
        name: "vision_model.onnx",
        source: "onnx/vision_model.onnx",
        sha256: "fd6e1402a588279d1723c7534d4bcba5bc0b14b47dfab0e46f8c47b8270d7d40",
      },
    ],
  },
]);

/** The registry entry named `id`, or `undefined` when there is none. */
export function findModel(id: string, registry: readonly ModelEntry[] = MODELS): ModelEntry | undefined {
  return registry.find((entry) => entry.id === id);
}

/** Where `file` of `entry` is downloaded from on the host at `baseUrl`. */
export function modelFileUrl(baseUrl: string, entry: ModelEntry, file: ModelFile): string {
  const base = baseUrl.replace(/\/+$/, "");
  return `${base}/${entry.repository}/resolve/${encodeURIComponent(entry.revision)}/${file.source}`;
}
