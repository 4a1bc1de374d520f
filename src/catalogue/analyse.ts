import { createHash } from "node:crypto";
import { uploadTooLarge } from "./limits.js";
import sharp, { type Metadata } from "sharp";
import { encode as encodeBlurhash } from "blurhash";
import { DomainError } from "../errors.js";
import type { DecodePool } from "./decode-pool.js";

/** Upper bounds on what `analyseImage` accepts, checked before any pixel is decoded. */
export interface AnalyseLimits {
  /** Largest accepted upload, in bytes. Default 25 MiB. */
  maxBytes: number;
  /** Largest accepted width x height, summed over every frame/page. Default 100 megapixels. */
  maxPixels: number;
}

/** 25 MiB and 100 megapixels: room for any camera photo, too little for a decompression bomb. */
export const DEFAULT_LIMITS: AnalyseLimits = { maxBytes: 25 * 1024 * 1024, maxPixels: 100_000_000 };

/** What the catalogue records about an accepted image. */
export interface ImageFacts {
  /** "image/jpeg", "image/png", "image/webp", "image/gif", "image/avif" or "image/tiff". */
  mediaType: string;
  /** Width in pixels as displayed, i.e. after applying the EXIF orientation. */
  width: number;
  /** Height in pixels as displayed, i.e. after applying the EXIF orientation. */
  height: number;
  /** Size of the uploaded bytes. */
  byteSize: number;
  /** Lower-case hex SHA-256 of the uploaded bytes; the blob store's key. */
  sha256: string;
  /** BlurHash with 4x3 components, for placeholders while the real image loads. */
  blurhash: string;
  /** 64-bit DCT perceptual hash, unsigned (0 .. 2^64-1); near-duplicates differ in few bits. */
  phash: bigint;
}

/** How `analyseImage` runs, beyond what it checks. */
export interface AnalyseOptions {
  /** Bounds how many full decodes run at once; without one the decode starts at once. */
  pool?: DecodePool;
  /** Gives up waiting for a decode slot (the call was cancelled or its deadline passed). */
  signal?: AbortSignal;
  /** The bytes' SHA-256 (lower-case hex) when the caller has computed it already. */
  sha256?: string;
  /** Wait for a decode slot even when the pool's queue is full (work already paid for). */
  queueAlways?: boolean;
}

/** The analysis the catalogue and search use: `analyseImage`, possibly through a decode pool. */
export type Analyse = (
  bytes: Uint8Array,
  limits: AnalyseLimits,
  field: string,
  options?: Pick<AnalyseOptions, "signal" | "sha256" | "queueAlways">,
) => Promise<ImageFacts>;

/** `analyseImage` with every full decode run through `pool`. */
export function pooledAnalyse(pool: DecodePool): Analyse {
  return (bytes, limits, field, options) => analyseImage(bytes, limits, field, { ...options, pool });
}

/** Lower-case hex SHA-256 of `bytes`: the blob store's key and the deduplication key. */
export function contentSha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

type Sniffed = { mediaType: string; label: string; sharpFormat: string };

const SUPPORTED = "not a supported image (JPEG, PNG, WebP, GIF, AVIF or TIFF)";

/**
 * libjpeg reports corrupt entropy data ("bad Huffman code", "premature end of data segment")
 * as warnings, not errors, so only 'warning' rejects a JPEG with garbage in the middle;
 * 'error' and 'truncated' catch nothing but a cut-off file. Every COCO camera photo in the
 * test data decodes without a warning.
 */
const FAIL_ON = "warning" as const;

/** Side of the square both hashes are computed from; 32 is what DCT pHash prescribes. */
const HASH_SIDE = 32;

/**
 * Checks that `bytes` are one supported, intact image within `limits` and computes its facts.
 * Rejections are INVALID_ARGUMENT against `field`. Costs one decode, shrunk on load to 32x32,
 * so a 24-megapixel JPEG is cheap; bombs are refused from the header before any decode.
 * Formats without shrink-on-load (PNG, GIF, TIFF) decode every pixel: a 100-megapixel
 * 16-bit PNG takes seconds of CPU, which is what `options.pool` bounds (RESOURCE_EXHAUSTED
 * when its queue is full).
 */
export async function analyseImage(
  bytes: Uint8Array,
  limits: AnalyseLimits = DEFAULT_LIMITS,
  field = "content",
  options: AnalyseOptions = {},
): Promise<ImageFacts> {
  if (bytes.length === 0) throw rejected(field, "is empty; expected the bytes of an image");
  if (bytes.length > limits.maxBytes) throw uploadTooLarge(field, limits.maxBytes);
  const sniffed = sniffImageType(bytes);
  if (!sniffed) throw rejected(field, SUPPORTED);

  // The header read decodes no pixels. It runs without limitInputPixels because sharp would
  // then fail with a bare "exceeds pixel limit", and the caller deserves the dimensions.
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (cause) {
    throw rejected(field, `is not a valid ${sniffed.label} image: its header cannot be read`, cause);
  }
  const reported = meta.format === "heif" && meta.compression === "av1" ? "avif" : meta.format;
  if (reported !== sniffed.sharpFormat || !meta.width || !meta.height) {
    throw rejected(field, `starts like a ${sniffed.label} file but is not a valid one`);
  }
  checkPixels(meta, limits.maxPixels, field);

  const decode = () => decodeSmall(bytes, limits.maxPixels, sniffed, field);
  const { data, info } = options.pool ? await options.pool.run(decode, options.signal, { queueAlways: options.queueAlways }) : await decode();
  const rgba = new Uint8ClampedArray(data.buffer, data.byteOffset, data.length);
  return {
    mediaType: sniffed.mediaType,
    width: meta.autoOrient.width,
    height: meta.autoOrient.height,
    byteSize: bytes.length,
    sha256: options.sha256 ?? contentSha256(bytes),
    // BlurHash components live in coordinates normalised to the image, so hashing the
    // square squash gives the placeholder the full-aspect image would; no second resize.
    blurhash: encodeBlurhash(rgba, info.width, info.height, 4, 3),
    phash: dctHash(data),
  };
}

/** Refuses images whose frames add up to more than `maxPixels`, from header dimensions. */
function checkPixels(meta: Metadata, maxPixels: number, field: string): void {
  // Every frame counts: animated renditions decode all of them, and a multi-page TIFF
  // would otherwise smuggle gigapixels in as a stack of "small" pages.
  const pages = meta.pages ?? 1;
  const total = meta.width * meta.height * pages;
  if (total <= maxPixels) return;
  const frames = pages > 1 ? `${pages} frames of ` : "";
  const [size, limit] = formatPair(total, maxPixels, formatPixels, "pixels");
  throw rejected(field, `image is ${frames}${meta.width}x${meta.height} = ${size}; the limit is ${limit}`);
}

/**
 * The one full decode: auto-oriented, shrunk on load to 32x32 (aspect ignored, as pHash
 * prescribes), flattened onto white and returned as 8-bit RGBA for BlurHash.
 */
async function decodeSmall(bytes: Uint8Array, maxPixels: number, sniffed: Sniffed, field: string) {
  try {
    return await sharp(bytes, { failOn: FAIL_ON, limitInputPixels: maxPixels, autoOrient: true })
      .resize(HASH_SIDE, HASH_SIDE, { fit: "fill" })
      .flatten({ background: "#ffffff" })
      .toColourspace("srgb")
      .ensureAlpha()
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
  } catch (cause) {
    throw rejected(field, `the ${sniffed.label} data is corrupt or truncated`, cause);
  }
}

/**
 * Identifies the container from its magic bytes. Done by hand, before sharp, so that
 * formats sharp also reads (SVG, PDF, HEIC, raw) never reach a decoder at all.
 */
function sniffImageType(b: Uint8Array): Sniffed | undefined {
  const ascii = (start: number, end: number) => Buffer.from(b.subarray(start, end)).toString("latin1");
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) {
    return { mediaType: "image/jpeg", label: "JPEG", sharpFormat: "jpeg" };
  }
  if (b.length >= 8 && ascii(0, 8) === "\x89PNG\r\n\x1a\n") {
    return { mediaType: "image/png", label: "PNG", sharpFormat: "png" };
  }
  if (ascii(0, 6) === "GIF87a" || ascii(0, 6) === "GIF89a") {
    return { mediaType: "image/gif", label: "GIF", sharpFormat: "gif" };
  }
  if (b.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") {
    return { mediaType: "image/webp", label: "WebP", sharpFormat: "webp" };
  }
  if (ascii(0, 4) === "II*\0" || ascii(0, 4) === "MM\0*") {
    return { mediaType: "image/tiff", label: "TIFF", sharpFormat: "tiff" };
  }
  if (isAvif(b, ascii)) return { mediaType: "image/avif", label: "AVIF", sharpFormat: "avif" };
  return undefined;
}

/** ISO-BMFF with an "avif"/"avis" brand; HEIC shares the container but not the brands. */
function isAvif(b: Uint8Array, ascii: (start: number, end: number) => string): boolean {
  if (b.length < 16 || ascii(4, 8) !== "ftyp") return false;
  const boxSize = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
  if (boxSize < 16 || boxSize > b.length) return false;
  // Brands: major at 8, minor version at 12, compatible brands from 16 to the box end.
  for (let at = 8; at + 4 <= boxSize; at += at === 8 ? 8 : 4) {
    const brand = ascii(at, at + 4);
    if (brand === "avif" || brand === "avis") return true;
  }
  return false;
}

/** Cosine table for the low 8 frequencies of a 32-point DCT-II (unnormalised, as in imagehash). */
const COS: Float64Array[] = Array.from({ length: 8 }, (_, u) =>
  Float64Array.from({ length: HASH_SIDE }, (_, x) => Math.cos(((2 * x + 1) * u * Math.PI) / (2 * HASH_SIDE))),
);

/**
 * DCT pHash of a 32x32 RGBA buffer: luma (ITU-R 601), 2-D DCT, the 8x8 lowest frequencies
 * (DC included, as the widely used imagehash does), each bit set when the coefficient is above
 * their median. Bit 63 is frequency (0,0), then row-major.
 */
function dctHash(rgba: Buffer): bigint {
  const n = HASH_SIDE;
  const luma = new Float64Array(n * n);
  for (let i = 0; i < n * n; i++) {
    luma[i] = 0.299 * rgba[i * 4] + 0.587 * rgba[i * 4 + 1] + 0.114 * rgba[i * 4 + 2];
  }
  // Separable DCT, only the rows and columns we keep: rows first (8 x 32), then columns (8 x 8).
  const rows = new Float64Array(8 * n);
  for (let u = 0; u < 8; u++) {
    for (let x = 0; x < n; x++) {
      let sum = 0;
      for (let y = 0; y < n; y++) sum += COS[u][y] * luma[y * n + x];
      rows[u * n + x] = sum;
    }
  }
  const coeffs = new Float64Array(64);
  for (let u = 0; u < 8; u++) {
    for (let v = 0; v < 8; v++) {
      let sum = 0;
      for (let x = 0; x < n; x++) sum += COS[v][x] * rows[u * n + x];
      coeffs[u * 8 + v] = sum;
    }
  }
  const sorted = Float64Array.from(coeffs).sort();
  const median = (sorted[31] + sorted[32]) / 2;
  let hash = 0n;
  for (const c of coeffs) hash = (hash << 1n) | (c > median ? 1n : 0n);
  return hash;
}

/** Number of differing bits between two 64-bit hashes, signed or unsigned form alike. */
export function hammingDistance(a: bigint, b: bigint): number {
  let x = BigInt.asUintN(64, a ^ b);
  let count = 0;
  while (x !== 0n) {
    x &= x - 1n;
    count++;
  }
  return count;
}

/** INVALID_ARGUMENT on `field`, keeping the decoder's own error as a cause for the log only. */
function rejected(field: string, description: string, cause?: unknown): DomainError {
  return new DomainError("INVALID_ARGUMENT", `${field}: ${description}`, {
    violations: [{ field, description }],
    cause,
  });
}

/** Rounded forms of a value and its limit, or exact ones where rounding would make them equal. */
function formatPair(value: number, limit: number, format: (n: number) => string, unit: string): [string, string] {
  const [a, b] = [format(value), format(limit)];
  return a === b ? [`${value} ${unit}`, `${limit} ${unit}`] : [a, b];
}

function formatPixels(n: number): string {
  return n >= 1_000_000 ? `${trimmed(n / 1_000_000)} megapixels` : `${n} pixels`;
}

/** One decimal, dropped when it is zero: "25 MiB", "30.5 MiB". */
function trimmed(x: number): string {
  const s = x.toFixed(1);
  return s.endsWith(".0") ? s.slice(0, -2) : s;
}
