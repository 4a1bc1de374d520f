import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { crc32, deflateSync } from "node:zlib";
import { decode as decodeBlurhash } from "blurhash";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { analyseImage, DEFAULT_LIMITS, hammingDistance } from "../../src/catalogue/analyse.js";
import { fromSignedInt64, toSignedInt64 } from "../../src/store/int64.js";
import { DomainError } from "../../src/errors.js";

// The shared data sets sit beside the repository (../shared), as CI lays them out.
const COCO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../shared/data/coco-mini");
const cocoFiles = ["val2017", "train2017"].flatMap((dir) => {
  const full = path.join(COCO, dir);
  return existsSync(full) ? readdirSync(full).filter((f) => f.endsWith(".jpg")).map((f) => path.join(full, f)) : [];
}).sort();
const NO_COCO = `needs the coco-mini photos under ${COCO}`;

/** A deterministic pseudo-random byte stream, so corrupted files are the same on every run. */
function seededBytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    out[i] = seed >> 16;
  }
  return out;
}

/**
 * A noisy image, so encoders produce photo-like, barely compressible data. The noise is ours,
 * not sharp's (which reseeds each run), so a corruption test cannot pass by luck.
 */
function noisy(width = 256, height = 256) {
  return sharp(seededBytes(width * height * 3, 7), { raw: { width, height, channels: 3 } });
}

/** The DomainError `promise` rejects with; fails the test when it resolves. */
async function rejection(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DomainError);
  return error as DomainError;
}

async function expectRejected(bytes: Uint8Array, descriptionPart: string | RegExp, field = "content") {
  const error = await rejection(analyseImage(bytes, DEFAULT_LIMITS, field));
  expect(error.code).toBe("INVALID_ARGUMENT");
  expect(error.violations).toHaveLength(1);
  expect(error.violations[0].field).toBe(field);
  expect(error.violations[0].description).toMatch(descriptionPart);
  return error;
}

/** A PNG whose header claims width x height but whose pixel data is a few rows: a bomb's shape. */
function pngHeaderOnly(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // truecolour
  return Buffer.concat([
    Buffer.from("89504e470d0a1a0a", "hex"),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(Buffer.alloc((1 + width * 3) * 2))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** One frame per colour; the encoder merges identical frames, so colours must differ. */
async function animatedGif(width: number, height: number, colours: string[]): Promise<Buffer> {
  const frames = await Promise.all(
    colours.map((background) => sharp({ create: { width, height, channels: 3, background } }).png().toBuffer()),
  );
  return sharp(frames, { join: { animated: true } }).gif().toBuffer();
}

describe("analyseImage accepts", () => {
  const formats = [
    ["jpeg", "image/jpeg"],
    ["png", "image/png"],
    ["webp", "image/webp"],
    ["gif", "image/gif"],
    ["avif", "image/avif"],
    ["tiff", "image/tiff"],
  ] as const;

  it.each(formats)("%s with its media type, size and hash", async (format, mediaType) => {
    const bytes = await noisy(120, 80).toFormat(format).toBuffer();
    const facts = await analyseImage(bytes);
    expect(facts).toMatchObject({ mediaType, width: 120, height: 80, byteSize: bytes.length });
    expect(facts.sha256).toBe(createHash("sha256").update(bytes).digest("hex"));
    expect(facts.blurhash).toHaveLength(4 + 2 * 4 * 3); // 4x3 components
    expect(facts.phash >= 0n && facts.phash < 1n << 64n).toBe(true);
  });

  it("reports EXIF-rotated dimensions as displayed", async () => {
    const bytes = await noisy(40, 20).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const facts = await analyseImage(bytes);
    expect([facts.width, facts.height]).toEqual([20, 40]);
  });

  it("an animated GIF with the size of one frame", async () => {
    const bytes = await animatedGif(30, 10, ["#f00", "#0f0", "#00f"]);
    expect(await analyseImage(bytes)).toMatchObject({ mediaType: "image/gif", width: 30, height: 10 });
  });

  it.skipIf(cocoFiles.length === 0)(`every coco-mini camera photo (${NO_COCO})`, async () => {
    for (const file of cocoFiles) {
      const facts = await analyseImage(readFileSync(file)).catch((e: unknown) => {
        throw new Error(`${file} was rejected: ${String(e)}`);
      });
      expect(facts.mediaType).toBe("image/jpeg");
    }
  });
});

describe("analyseImage rejects", () => {
  it("empty content", async () => {
    await expectRejected(new Uint8Array(0), /empty/);
  });

  it("content over the byte limit, naming the limit, before looking at it", async () => {
    // Random bytes are not an image either; the size message proves size is checked first.
    const bytes = new Uint8Array(5000).fill(7);
    const error = await rejection(analyseImage(bytes, { maxBytes: 1000, maxPixels: 1e8 }, "upload"));
    expect(error.code).toBe("INVALID_ARGUMENT");
    expect(error.violations[0]).toEqual({ field: "upload", description: "image is larger than the limit of 1000 bytes" });
  });

  it("truncated JPEG", async () => {
    const bytes = await noisy().jpeg().toBuffer();
    await expectRejected(bytes.subarray(0, bytes.length >> 1), /JPEG data is corrupt or truncated/);
  });

  it("JPEG with garbage in the middle", async () => {
    const bytes = Buffer.from(await noisy().jpeg().toBuffer());
    seededBytes(1024, 42).copy(bytes, bytes.length >> 1);
    await expectRejected(bytes, /JPEG data is corrupt or truncated/);
  });

  it.each([
    ["random bytes", seededBytes(512, 3)],
    ["text", Buffer.from("hello, this is not an image\n")],
    ["an SVG", Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>')],
    ["a PDF", Buffer.from("%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")],
    ["a HEIC header", Buffer.concat([Buffer.from("\0\0\0\x18ftypheic\0\0\0\0mif1heic", "latin1"), Buffer.alloc(64)])],
  ])("%s as unsupported", async (_name, bytes) => {
    await expectRejected(bytes, "not a supported image (JPEG, PNG, WebP, GIF, AVIF or TIFF)", "image.content");
  });

  it("a PNG signature followed by junk", async () => {
    const bytes = Buffer.concat([Buffer.from("89504e470d0a1a0a", "hex"), Buffer.alloc(100, 1)]);
    await expectRejected(bytes, /PNG/);
  });

  it("a decompression bomb, from its header, naming the pixel limit", async () => {
    const bomb = pngHeaderOnly(20000, 20000);
    expect(bomb.length).toBeLessThan(1000);
    await expectRejected(bomb, "image is 20000x20000 = 400 megapixels; the limit is 100 megapixels");
  });

  it("an animation whose frames together exceed the pixel limit", async () => {
    const bytes = await animatedGif(30, 10, ["#f00", "#0f0", "#00f"]);
    const error = await rejection(analyseImage(bytes, { maxBytes: 1e6, maxPixels: 800 }));
    expect(error.violations[0].description).toBe("image is 3 frames of 30x10 = 900 pixels; the limit is 800 pixels");
  });
});

describe("hashes", () => {
  it("blurhash of a solid red image decodes to red", async () => {
    const bytes = await sharp({ create: { width: 64, height: 48, channels: 3, background: "#ff0000" } }).png().toBuffer();
    const pixels = decodeBlurhash((await analyseImage(bytes)).blurhash, 8, 6);
    for (let i = 0; i < pixels.length; i += 4) {
      expect(pixels[i]).toBeGreaterThan(200);
      expect(pixels[i + 1]).toBeLessThan(60);
      expect(pixels[i + 2]).toBeLessThan(60);
    }
  });

  it.skipIf(cocoFiles.length < 2)(`phash finds re-encoded copies and tells photos apart (${NO_COCO})`, async () => {
    const [a, b] = cocoFiles.map((f) => readFileSync(f));
    const original = await analyseImage(a);
    const smaller = await sharp(a).resize(320).jpeg({ quality: 40 }).toBuffer();
    expect(hammingDistance(original.phash, (await analyseImage(smaller)).phash)).toBeLessThanOrEqual(8);
    expect(hammingDistance(original.phash, (await analyseImage(b)).phash)).toBeGreaterThanOrEqual(16);
  });

  it("hammingDistance counts differing bits in either signed or unsigned form", () => {
    expect(hammingDistance(0n, 0n)).toBe(0);
    expect(hammingDistance(0n, (1n << 64n) - 1n)).toBe(64);
    expect(hammingDistance(0b1011n, 0b0110n)).toBe(3);
    expect(hammingDistance(-1n, 0n)).toBe(64);
    expect(hammingDistance(toSignedInt64(1n << 63n), 0n)).toBe(1);
  });

  it("signed 64-bit storage round-trips every unsigned hash", () => {
    for (const u of [0n, 1n, (1n << 63n) - 1n, 1n << 63n, (1n << 64n) - 1n, 0xdeadbeefcafebaben]) {
      const s = toSignedInt64(u);
      expect(s >= -(1n << 63n) && s < 1n << 63n).toBe(true);
      expect(fromSignedInt64(s)).toBe(u);
    }
    expect(toSignedInt64((1n << 64n) - 1n)).toBe(-1n);
    expect(() => toSignedInt64(1n << 64n)).toThrow(RangeError);
    expect(() => toSignedInt64(-1n)).toThrow(RangeError);
  });
});
