import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { DomainError } from "../../src/errors.js";
import { CLIP_MEAN, CLIP_STD, preprocessImage } from "../../src/embedding/preprocess.js";
import { solidImage } from "../helpers/images.js";

/** Images and pixel values computed with PIL and numpy by test/fixtures/preprocess-golden.py. */
interface Golden {
  size: number;
  mean: number[];
  std: number[];
  cases: {
    name: string;
    description: string;
    /** Base64 of the encoded image. */
    image: string;
    /** True when no resampling happens, so every output pixel is known. */
    exact: boolean;
    /** [channel, y, x, value] of the NCHW output. */
    samples: [number, number, number, number][];
    /** Sum of each channel's 224 x 224 values, for exact cases. */
    channelSums: [number, number, number] | null;
  }[];
}

const golden = JSON.parse(
  readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/preprocess-golden.json"), "utf8"),
) as Golden;

const SIZE = 224;
const PLANE = SIZE * SIZE;
/** Float32 storage alone is off by ~3e-7; a one-level error in any pixel is ~0.015. */
const TOLERANCE = 1e-5;

const imageOf = (name: string) => Buffer.from(golden.cases.find((c) => c.name === name)!.image, "base64");
const at = (pixels: Float32Array, c: number, y: number, x: number) => pixels[c * PLANE + y * SIZE + x];
/** The value a pure 8-bit colour component normalises to. */
const normalised = (c: number, v: number) => (v / 255 - CLIP_MEAN[c]) / CLIP_STD[c];

describe("preprocessImage against the reference pipeline", () => {
  it("uses the fixture's mean, std and size", () => {
    expect(golden.size).toBe(SIZE);
    expect([...CLIP_MEAN]).toEqual(golden.mean);
    expect([...CLIP_STD]).toEqual(golden.std);
  });

  for (const c of golden.cases) {
    it(`${c.name}: ${c.description}`, async () => {
      const pixels = await preprocessImage(Buffer.from(c.image, "base64"));
      expect(pixels).toBeInstanceOf(Float32Array);
      expect(pixels).toHaveLength(3 * PLANE);
      for (const [ch, y, x, expected] of c.samples) {
        const actual = at(pixels, ch, y, x);
        if (Math.abs(actual - expected) > TOLERANCE) {
          expect.fail(`channel ${ch} at (${x}, ${y}) is ${actual}, expected ${expected}`);
        }
      }
      if (c.channelSums) {
        for (let ch = 0; ch < 3; ch++) {
          let sum = 0;
          for (let i = ch * PLANE; i < (ch + 1) * PLANE; i++) sum += pixels[i];
          expect(sum, `sum of channel ${ch}`).toBeCloseTo(c.channelSums[ch], 1);
        }
      }
    });
  }
});

describe("preprocessImage", () => {
  it("lays out planes R, G, B (NCHW), each row-major", async () => {
    // Left half orange (255, 128, 0), right half teal (0, 128, 255).
    const raw = Buffer.alloc(SIZE * SIZE * 3);
    for (let i = 0; i < SIZE * SIZE; i++) raw.set(i % SIZE < SIZE / 2 ? [255, 128, 0] : [0, 128, 255], i * 3);
    const png = await sharp(raw, { raw: { width: SIZE, height: SIZE, channels: 3 } }).png().toBuffer();
    const pixels = await preprocessImage(png);

    for (const [x, rgb] of [[10, [255, 128, 0]], [200, [0, 128, 255]]] as const) {
      for (let ch = 0; ch < 3; ch++) expect(at(pixels, ch, 50, x)).toBeCloseTo(normalised(ch, rgb[ch]), 5);
    }
  });

  it("turns an EXIF orientation 6 photo upright before cropping", async () => {
    // Stored red | green over blue | white, to be turned 90 degrees clockwise for display.
    const pixels = await preprocessImage(imageOf("exif-orientation-6"));
    const colourAt = (y: number, x: number) => [0, 1, 2].map((ch) => Math.round((at(pixels, ch, y, x) * CLIP_STD[ch] + CLIP_MEAN[ch]) * 255) + 0);
    expect(colourAt(20, 20)).toEqual([0, 0, 255]);
    expect(colourAt(20, 200)).toEqual([255, 0, 0]);
    expect(colourAt(200, 20)).toEqual([255, 255, 255]);
    expect(colourAt(200, 200)).toEqual([0, 255, 0]);
  });

  it("keeps a flat colour exact through any resize", async () => {
    const colour = [30, 140, 220];
    const { r, g, b } = { r: colour[0], g: colour[1], b: colour[2] };
    for (const bytes of [
      await solidImage(1000, 700, { r, g, b }, "png"),
      await solidImage(3000, 4000, { r, g, b }, "png"),
      await sharp(await solidImage(100, 333, { r, g, b })).webp({ lossless: true }).toBuffer(),
    ]) {
      const pixels = await preprocessImage(bytes);
      for (let ch = 0; ch < 3; ch++) {
        for (const [y, x] of [[0, 0], [100, 7], [223, 223]]) {
          expect(at(pixels, ch, y, x)).toBeCloseTo(normalised(ch, colour[ch]), 5);
        }
      }
    }
  });

  it("shrinks a 12-megapixel JPEG to its colour, within JPEG's rounding", async () => {
    const colour = [30, 140, 220];
    const jpeg = await solidImage(4000, 3000, { r: colour[0], g: colour[1], b: colour[2] }, "jpeg");
    const pixels = await preprocessImage(jpeg);
    const levels = (ch: number, v: number) => (v * CLIP_STD[ch] + CLIP_MEAN[ch]) * 255;
    for (let ch = 0; ch < 3; ch++) {
      for (let i = ch * PLANE; i < (ch + 1) * PLANE; i += 997) {
        expect(Math.abs(levels(ch, pixels[i]) - colour[ch])).toBeLessThanOrEqual(2);
      }
    }
  });

  it("returns size x size planes for another model size", async () => {
    const pixels = await preprocessImage(await solidImage(64, 48, { r: 255, g: 255, b: 255 }), 32);
    expect(pixels).toHaveLength(3 * 32 * 32);
    expect(pixels[3 * 32 * 32 - 1]).toBeCloseTo(normalised(2, 255), 5);
  });

  it("rejects bytes that are not an image as INVALID_ARGUMENT", async () => {
    const error = await preprocessImage(Buffer.from("definitely not an image")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DomainError);
    expect((error as DomainError).code).toBe("INVALID_ARGUMENT");
  });
});
