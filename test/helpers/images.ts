import sharp from "sharp";

/** A solid-colour image encoded as `format`; `seed` varies one pixel so bytes differ. */
export async function solidImage(
  width: number,
  height: number,
  colour: { r: number; g: number; b: number },
  format: "jpeg" | "png" | "webp" = "png",
  seed = 0,
): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    raw[i * 3] = colour.r;
    raw[i * 3 + 1] = colour.g;
    raw[i * 3 + 2] = colour.b;
  }
  // A per-seed pixel pattern in the first row keeps images distinct (no deduplication): a set
  // bit is a red value half the range away from the colour's, so it shows whatever the colour
  // (with 255 for a set bit, a colour whose red is 255 hid the pattern, and images collided).
  for (let bit = 0; bit < 24 && bit < width; bit++) raw[bit * 3] = (seed >> bit) & 1 ? (colour.r + 128) % 256 : colour.r;
  return sharp(raw, { raw: { width, height, channels: 3 } })[format]().toBuffer();
}

/** Distinct small PNGs, one per index. */
export function distinctPng(i: number): Promise<Buffer> {
  return solidImage(32, 24, { r: (i * 37) % 256, g: (i * 91) % 256, b: (i * 53) % 256 }, "png", i + 1);
}
