/**
 * Expensive decodes beside cheap calls. 8 distinct 16-bit 100-megapixel PNGs (PNG has no
 * shrink-on-load, so every pixel is decoded) are uploaded at once through the real gRPC
 * UploadImage while ListImages and GetImageContent of a small image (its blob read needs a
 * libuv thread, as sharp's decodes do) are called one at a time beside them; the same cheap
 * calls run with nothing else going on; then the same 8 files are uploaded again
 * (deduplicated: answered from the hash, no decode). Two apps side by side: the default
 * decode pool, and one that lets all 8 decode at once (what happened without a pool).
 *
 *   node --import tsx bench/decode-pool.ts     (about 2 min on 2 cores)
 */
import { crc32 } from "node:zlib";
import { randomBytes } from "node:crypto";
import os from "node:os";
import { ClientError, Status } from "nice-grpc";
import sharp from "sharp";
import { analyseImage, DEFAULT_LIMITS } from "../src/catalogue/analyse.js";
import { loadOptions } from "../src/config/options.js";
import { Visibility } from "../src/gen/glimpse/image/v1/image.js";
import {
  environmentMarkdown,
  markdownTable,
  round,
  runBenchmark,
  runEnvironment,
  runPool,
  startBenchApp,
  startTimer,
  summarise,
  writeResults,
  type Cleanup,
  type LatencySummary,
} from "./lib.js";

/** Side of the large PNGs: 10000 x 10000 = 100 megapixels, the default pixel limit. */
const SIDE = 10_000;
/** Large uploads in flight at once. */
const UPLOADS = 8;
/** Small images in the catalogue, so ListImages pages have rows to read. */
const SMALL_IMAGES = 200;
const PAGE_SIZE = 50;
/** Cheap calls per series when nothing else runs. */
const IDLE_CALLS = 100;

interface Configuration {
  label: string;
  decode_concurrency: number;
  decode_queue_max: number;
}

interface ConfigurationResult extends Configuration {
  idle: { list_images: LatencySummary; get_image_content: LatencySummary };
  beside_uploads: { list_images: LatencySummary; get_image_content: LatencySummary };
  large_uploads: { ok: number; refused: number; wall_s: number; latency: LatencySummary };
  reupload_same_bytes: { deduplicated: number; sequential: LatencySummary; concurrent_wall_ms: number };
}

/**
 * A copy of `png` with a tEXt chunk after IHDR: different bytes (and sha256), the same
 * pixels, so every upload decodes in full without re-encoding 100 megapixels each time.
 */
function withTextChunk(png: Buffer, text: string): Buffer {
  const ihdrEnd = 8 + 4 + 4 + 13 + 4;
  const data = Buffer.from(`Comment\0${text}`, "latin1");
  const typeAndData = Buffer.concat([Buffer.from("tEXt", "latin1"), data]);
  const chunk = Buffer.alloc(4 + typeAndData.length + 4);
  chunk.writeUInt32BE(data.length, 0);
  typeAndData.copy(chunk, 4);
  chunk.writeUInt32BE(crc32(typeAndData), 4 + typeAndData.length);
  return Buffer.concat([png.subarray(0, ihdrEnd), chunk, png.subarray(ihdrEnd)]);
}

/** A 16-bit RGB PNG of 100x100 random tiles scaled up to SIDE x SIDE: compresses, decodes slowly. */
async function largePng(): Promise<Buffer> {
  const tile = 100;
  return sharp(randomBytes(tile * tile * 3), { raw: { width: tile, height: tile, channels: 3 } })
    .resize(SIDE, SIDE, { kernel: "nearest" })
    .toColourspace("rgb16")
    .png({ compressionLevel: 9 })
    .toBuffer();
}

async function smallPng(i: number): Promise<Buffer> {
  const raw = Buffer.alloc(64 * 64 * 3, i % 256);
  raw.writeUInt32BE(i, 0);
  return sharp(raw, { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
}

async function measure(
  cleanup: Cleanup,
  config: Configuration,
  small: Buffer[],
  large: Buffer[],
): Promise<ConfigurationResult> {
  const { images } = await startBenchApp(cleanup, {
    decodeConcurrency: config.decode_concurrency,
    decodeQueueMax: config.decode_queue_max,
  });
  let smallId = "";
  for (const [i, content] of small.entries()) {
    const { image } = await images.uploadImage({ content, fileName: `small-${i}.png`, index: false, visibility: Visibility.VISIBILITY_PUBLIC });
    smallId = image!.id;
  }
  const listOnce = () => images.listImages({ pageSize: PAGE_SIZE });
  const contentOnce = () => images.getImageContent({ id: smallId });
  for (let i = 0; i < 10; i++) {
    await listOnce();
    await contentOnce();
  }

  // Nothing else running.
  const idleList = await runPool(IDLE_CALLS, 1, async () => void (await listOnce()));
  const idleContent = await runPool(IDLE_CALLS, 1, async () => void (await contentOnce()));

  // The same calls, one at a time each, while the large uploads run.
  let ok = 0;
  let refused = 0;
  const uploadMs: number[] = [];
  const wall = startTimer();
  const uploads = Promise.all(
    large.map(async (content, i) => {
      const elapsed = startTimer();
      try {
        await images.uploadImage({ content, fileName: `large-${i}.png`, index: false });
        ok++;
        uploadMs.push(elapsed());
      } catch (error) {
        if (!(error instanceof ClientError && error.code === Status.RESOURCE_EXHAUSTED)) throw error;
        refused++;
      }
    }),
  );
  let settled = false;
  void uploads.finally(() => (settled = true));
  const besideList: number[] = [];
  const besideContent: number[] = [];
  const beside = async (call: () => Promise<unknown>, into: number[]) => {
    while (!settled) {
      const elapsed = startTimer();
      await call();
      into.push(elapsed());
    }
  };
  await Promise.all([uploads, beside(listOnce, besideList), beside(contentOnce, besideContent)]);
  const uploadWallMs = wall();

  // The same bytes again: the hash finds them; no decode slot is needed.
  let deduplicated = 0;
  const again = async (content: Buffer) => {
    const result = await images.uploadImage({ content, index: false });
    if (result.image?.deduplicated) deduplicated++;
  };
  const sequential = await runPool(large.length, 1, (i) => again(large[i]));
  const concurrent = await runPool(large.length, large.length, (i) => again(large[i]));

  return {
    ...config,
    idle: { list_images: summarise(idleList.latenciesMs), get_image_content: summarise(idleContent.latenciesMs) },
    beside_uploads: { list_images: summarise(besideList), get_image_content: summarise(besideContent) },
    large_uploads: { ok, refused, wall_s: round(uploadWallMs / 1000, 3), latency: summarise(uploadMs) },
    reupload_same_bytes: {
      deduplicated,
      sequential: summarise(sequential.latenciesMs),
      concurrent_wall_ms: round(concurrent.wallMs),
    },
  };
}

await runBenchmark("bench:decode-pool", async (cleanup) => {
  const environment = await runEnvironment();
  // Other work on the machine moves every figure; the result records how busy it was.
  const loadBefore = os.loadavg()[0];
  const prepare = startTimer();
  const base = await largePng();
  const large = Array.from({ length: UPLOADS }, (_, i) => withTextChunk(base, `upload ${i}`));
  const small = await Promise.all(Array.from({ length: SMALL_IMAGES }, (_, i) => smallPng(i)));
  console.log(`prepared ${UPLOADS} PNGs of ${SIDE}x${SIDE}, 16-bit, ${Math.round(base.length / 1024)} KiB each, in ${(prepare() / 1000).toFixed(1)} s`);

  // What one analysis costs, in process: what every re-upload paid before the hash came first.
  const analyseMs: number[] = [];
  for (const content of large.slice(0, 3)) {
    const elapsed = startTimer();
    await analyseImage(content, DEFAULT_LIMITS, "content");
    analyseMs.push(elapsed());
  }
  const analyse = summarise(analyseMs);
  console.log(`analyseImage alone: p50 ${analyse.p50_ms} ms`);

  const defaults = loadOptions({}, []);
  const configurations: Configuration[] = [
    {
      label: "default pool",
      decode_concurrency: defaults.decodeConcurrency,
      decode_queue_max: defaults.decodeQueueMax,
    },
    { label: `all ${UPLOADS} at once (no pool)`, decode_concurrency: UPLOADS, decode_queue_max: defaults.decodeQueueMax },
  ];
  const results: ConfigurationResult[] = [];
  for (const config of configurations) {
    const result = await measure(cleanup, config, small, large);
    results.push(result);
    console.log(
      `${config.label} (${config.decode_concurrency} at once): ListImages p50 ${result.idle.list_images.p50_ms} ms idle, ` +
        `${result.beside_uploads.list_images.p50_ms} ms (p99 ${result.beside_uploads.list_images.p99_ms}) beside uploads; ` +
        `GetImageContent p50 ${result.idle.get_image_content.p50_ms} -> ${result.beside_uploads.get_image_content.p50_ms} ms ` +
        `(p99 ${result.beside_uploads.get_image_content.p99_ms}); uploads ${result.large_uploads.ok} ok / ${result.large_uploads.refused} refused ` +
        `in ${result.large_uploads.wall_s} s; re-upload p50 ${result.reupload_same_bytes.sequential.p50_ms} ms`,
    );
  }

  const config = {
    large_png: `${SIDE}x${SIDE} RGB 16-bit, 100x100 random tiles scaled up (nearest), compression 9; distinct bytes by a tEXt chunk`,
    large_png_bytes: base.length,
    uploads_in_flight: UPLOADS,
    small_images: SMALL_IMAGES,
    list_page_size: PAGE_SIZE,
    idle_calls: IDLE_CALLS,
    sharp_concurrency: sharp.concurrency(),
    uv_threadpool_size: Number(process.env.UV_THREADPOOL_SIZE ?? 4),
    calls: "gRPC on 127.0.0.1, client and server in one Node process; index=false",
    load_average_1m: { before: round(loadBefore), after: round(os.loadavg()[0]) },
  };
  const json = { benchmark: "decode-pool", environment, config, analyse_image_alone: analyse, results };

  const row = (r: ConfigurationResult, what: string, s: LatencySummary) => [r.label, r.decode_concurrency, what, s.n, s.p50_ms, s.p99_ms, s.max_ms];
  const rows = results.flatMap((r) => [
    row(r, "ListImages, idle", r.idle.list_images),
    row(r, "ListImages, beside 8 large uploads", r.beside_uploads.list_images),
    row(r, "GetImageContent (small), idle", r.idle.get_image_content),
    row(r, "GetImageContent (small), beside 8 large uploads", r.beside_uploads.get_image_content),
    row(r, `large UploadImage (${r.large_uploads.ok} ok, ${r.large_uploads.refused} refused, ${r.large_uploads.wall_s} s wall)`, r.large_uploads.latency),
    row(r, `same bytes again, 1 in flight (${r.reupload_same_bytes.deduplicated} of ${2 * UPLOADS} re-uploads deduplicated)`, r.reupload_same_bytes.sequential),
  ]);
  const markdown = [
    "# Decode pool benchmark",
    "",
    environmentMarkdown(environment),
    `- ${config.large_png}, ${Math.round(base.length / 1024)} KiB; ${config.calls}`,
    `- 1-minute load average ${config.load_average_1m.before} before, ${config.load_average_1m.after} after (other work on the machine shows in every figure)`,
    `- analyseImage alone on one of them: p50 ${analyse.p50_ms} ms (what a re-upload of stored bytes cost before the hash came first)`,
    "",
    markdownTable(["app", "decodes at once", "what", "n", "p50 ms", "p99 ms", "max ms"], rows),
    "",
    `The same 8 files uploaded again all at once took ${results.map((r) => `${r.reupload_same_bytes.concurrent_wall_ms} ms (${r.label})`).join(", ")} in all.`,
  ].join("\n");
  const written = await writeResults("decode-pool", json, markdown);
  console.log(`wrote ${written.join(", ")}`);
});
