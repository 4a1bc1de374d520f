import sharp, { type OutputInfo } from "sharp";
import { DomainError } from "../errors.js";

/** Per-channel (R, G, B) mean of CLIP's training images, on the 0..1 scale. */
export const CLIP_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];

/** Per-channel (R, G, B) standard deviation of CLIP's training images, on the 0..1 scale. */
export const CLIP_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** Side of the square CLIP ViT-B/32 and its relatives take. */
const DEFAULT_SIZE = 224;

/**
 * `(v / 255 - mean) / std` for every 8-bit value, one table per channel, so that normalising
 * a pixel is a lookup rather than arithmetic.
 */
const NORMALISED: readonly Float32Array[] = CLIP_MEAN.map((mean, c) =>
  Float32Array.from({ length: 256 }, (_, v) => (v / 255 - mean) / CLIP_STD[c]),
);

/**
 * Turns encoded image bytes into the CLIP vision model's `pixel_values` for one image: NCHW
 * float32 of length `3 * size * size` (R plane, then G, then B; rows top to bottom), the
 * reference pipeline of OpenAI CLIP and Hugging Face's CLIPImageProcessor:
 *
 * 1. Decode (any format sharp reads; the first frame of an animation) and apply the EXIF
 *    orientation, so the model sees the picture upright as a viewer shows it. (The reference
 *    pipeline skips this step and would embed a sideways phone photo sideways.)
 * 2. Convert to 8-bit RGB. Alpha is dropped, not flattened: transparent pixels keep the colour
 *    stored under them, as PIL's `convert("RGB")` in the reference pipeline does. Grey images
 *    become three equal channels, 16-bit ones are scaled to 8. Embedded ICC profiles are
 *    ignored, as PIL ignores them: the model was trained on the stored values, and converting
 *    the Adobe RGB and camera profiles found in COCO photos to sRGB moved pixels by up to 96
 *    levels. CMYK goes through libvips' built-in CMYK profile, not PIL's naive inversion.
 * 3. Resize so the shortest side is `size` and the longest `floor(size * long / short)`, with
 *    libvips' cubic kernel (Catmull-Rom, a = -0.5, the kernel of PIL's BICUBIC, widened when
 *    shrinking as PIL does); Mitchell, Lanczos and linear all land further from PIL. Against
 *    PIL on 640-pixel COCO photos it is off by 0.2 levels on average. Big JPEGs and WebPs
 *    shrink on load, conservatively (`fastShrinkOnLoad: false`): on 12-megapixel photos that
 *    is off by 0.9 levels on average against 1.8 with sharp's default, at the same speed; a
 *    full-size decode would reach 0.6 at twice the time.
 * 4. Crop the centre `size x size`, offset `floor((side - size) / 2)` as CLIPImageProcessor
 *    does (torchvision's CenterCrop rounds half to even and so sits one pixel further for some
 *    odd differences).
 * 5. Scale to 0..1 and normalise with CLIP_MEAN and CLIP_STD.
 *
 * One decode and one resize in libvips; the crop and normalisation are a single pass here.
 * Bytes that do not decode are INVALID_ARGUMENT.
 */
export async function preprocessImage(bytes: Uint8Array, size = DEFAULT_SIZE): Promise<Float32Array> {
  const image = await decodeForModel(bytes, size);
  const out = new Float32Array(3 * size * size);
  normaliseInto(image, out, 0);
  return out;
}

/**
 * Steps 1-4 of {@link preprocessImage}: the centre `size x size` crop as packed 8-bit RGB, a
 * quarter of the size of the float32 tensor. Callers that assemble batches keep images in
 * this form and normalise each straight into the batch's tensor with {@link normaliseInto}.
 */
export interface ModelImage {
  size: number;
  /** size * size * 3 bytes, RGB interleaved, rows top to bottom. */
  rgb: Uint8Array;
}

export async function decodeForModel(bytes: Uint8Array, size = DEFAULT_SIZE): Promise<ModelImage> {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`size must be a positive integer, got ${size}`);
  let decoded: { data: Buffer; info: OutputInfo };
  try {
    const input = sharp(bytes, { autoOrient: true, ignoreIcc: true });
    // The header alone gives the upright dimensions; the pixels are decoded once, below.
    const { autoOrient } = await input.metadata();
    const [width, height] = resizedDimensions(autoOrient.width, autoOrient.height, size);
    decoded = await input
      .resize(width, height, { fit: "fill", kernel: "cubic", fastShrinkOnLoad: false })
      .removeAlpha()
      .toColourspace("srgb")
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
  } catch (cause) {
    throw new DomainError("INVALID_ARGUMENT", "image cannot be decoded", { cause });
  }
  return { size, rgb: centreCrop(decoded.data, decoded.info, size) };
}

/** Width and height with the shortest side `size` and the other scaled down, truncated as PIL-based CLIP does. */
function resizedDimensions(width: number, height: number, size: number): [number, number] {
  return width <= height
    ? [size, Math.floor((size * height) / width)]
    : [Math.floor((size * width) / height), size];
}

/** The centre `size x size` of packed 8-bit RGB (the input itself when it is that size). */
function centreCrop(rgb: Buffer, info: OutputInfo, size: number): Uint8Array {
  if (info.channels !== 3 || info.width < size || info.height < size) {
    throw new Error(`resize gave ${info.width}x${info.height}x${info.channels}, expected at least ${size}x${size}x3`);
  }
  if (info.width === size && info.height === size) return rgb;
  const left = Math.floor((info.width - size) / 2);
  const top = Math.floor((info.height - size) / 2);
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const src = ((top + y) * info.width + left) * 3;
    out.set(rgb.subarray(src, src + size * 3), y * size * 3);
  }
  return out;
}

/**
 * Step 5: writes the image as normalised NCHW float32 into `out` at `offset` (in values), so
 * a batch's tensor is filled in place, one image after another.
 */
export function normaliseInto(image: ModelImage, out: Float32Array, offset: number): void {
  const { size, rgb } = image;
  const plane = size * size;
  const [red, green, blue] = NORMALISED;
  for (let i = 0, src = 0; i < plane; i++, src += 3) {
    out[offset + i] = red[rgb[src]];
    out[offset + plane + i] = green[rgb[src + 1]];
    out[offset + 2 * plane + i] = blue[rgb[src + 2]];
  }
}
