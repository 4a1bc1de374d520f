/**
 * Ingest throughput: JPEG uploads through the real gRPC UploadImage (index: false, so no
 * embedding), end to end into a real PostgreSQL and the file blob store, at 512x512 and
 * 2048x2048; sequential and with 4 calls in flight. Beside them, on the same images, the
 * pieces of the cost: analyseImage alone (header read, one shrink-on-load decode, sha256,
 * blurhash, pHash), sha256 alone and a blob-store put alone (write + fsync).
 *
 *   npm run bench:ingest     (node --import tsx bench/ingest.ts)
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";
import { FileBlobStore } from "../src/blobs/blob-store.js";
import { analyseImage, DEFAULT_LIMITS } from "../src/catalogue/analyse.js";
import { Visibility } from "../src/gen/glimpse/image/v1/image.js";
import {
  createTempDir,
  environmentMarkdown,
  markdownTable,
  REPO_ROOT,
  round,
  runBenchmark,
  runEnvironment,
  runPool,
  startBenchApp,
  startTimer,
  summarise,
  watchProcessStalls,
  writeResults,
  type LatencySummary,
  type ProcessStalls,
} from "./lib.js";
import { makeRandom as prng } from "./vectors.js";

/** Image side, and how many images each measured series uploads at that side. */
const SIZES = [
  { side: 512, count: 300 },
  { side: 2048, count: 120 },
] as const;
/** Unmeasured uploads per size before the series (JIT, connection pool, libvips caches). */
const WARMUP = 5;
/** Calls in flight in the concurrent series. */
const CONCURRENCY = 4;
const JPEG_QUALITY = 90;
/** The shared COCO photos, read-only; resized to each target size when present. */
const COCO_DIR = path.resolve(REPO_ROOT, "..", "shared", "data", "coco-mini");

interface Throughput {
  images_per_s: number;
  wall_s: number;
  latency: LatencySummary;
}

interface SizeResult {
  side: number;
  count: number;
  mean_bytes: number;
  sequential: Throughput;
  concurrent: Throughput;
  analyse_sequential: Throughput;
  analyse_concurrent: Throughput;
  sha256_only: LatencySummary;
  blob_put_only: LatencySummary;
  /** GC and event-loop stalls of the process during the two UploadImage series. */
  process_stalls_while_uploading: ProcessStalls;
  ratios: {
    concurrent_vs_sequential_throughput: number;
    analyse_share_of_sequential_ingest_mean: number;
    sha256_share_of_sequential_ingest_mean: number;
    blob_put_share_of_sequential_ingest_mean: number;
  };
}

function throughput(latenciesMs: number[], wallMs: number): Throughput {
  return {
    images_per_s: round(latenciesMs.length / (wallMs / 1000)),
    wall_s: round(wallMs / 1000, 3),
    latency: summarise(latenciesMs),
  };
}

/** The COCO photo paths, sorted so runs use the same images in the same order. */
async function cocoPhotos(): Promise<string[]> {
  if (!existsSync(COCO_DIR)) return [];
  const files: string[] = [];
  for (const sub of ["train2017", "val2017"]) {
    const dir = path.join(COCO_DIR, sub);
    if (!existsSync(dir)) continue;
    for (const f of (await readdir(dir)).sort()) if (f.endsWith(".jpg")) files.push(path.join(dir, f));
  }
  return files;
}

/**
 * The j-th distinct photo at `side` x `side`: COCO photo j mod n, cover-cropped; later rounds
 * through the list mirror and/or flip it, so every image has bytes of its own (no dedup).
 */
async function cocoImage(photos: string[], j: number, side: number): Promise<Buffer> {
  const variant = Math.floor(j / photos.length) % 4;
  let img = sharp(photos[j % photos.length], { autoOrient: true });
  if (variant === 1 || variant === 3) img = img.flop();
  if (variant === 2 || variant === 3) img = img.flip();
  return img.resize(side, side, { fit: "cover" }).jpeg({ quality: JPEG_QUALITY }).toBuffer();
}

/**
 * A photo-like synthetic JPEG: a random colour gradient, a few soft blobs and per-pixel
 * noise, so JPEG cannot compress it trivially. Fallback when the COCO photos are absent.
 */
async function syntheticImage(seed: number, side: number): Promise<Buffer> {
  const rand = prng(seed * 7919 + side);
  const raw = Buffer.alloc(side * side * 3);
  const base = [0, 1, 2].map(() => [rand() * 255, (rand() - 0.5) * 200, (rand() - 0.5) * 200]);
  const blobs = Array.from({ length: 6 }, () => ({
    x: rand() * side,
    y: rand() * side,
    r2: (side * (0.05 + rand() * 0.25)) ** 2,
    c: [0, 1, 2].map(() => (rand() - 0.5) * 180),
  }));
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const o = (y * side + x) * 3;
      let weight = 0;
      const shade = [0, 0, 0];
      for (const b of blobs) {
        const d2 = (x - b.x) ** 2 + (y - b.y) ** 2;
        if (d2 < b.r2 * 4) {
          weight = Math.exp(-d2 / b.r2);
          for (let c = 0; c < 3; c++) shade[c] += b.c[c] * weight;
        }
      }
      for (let c = 0; c < 3; c++) {
        const [b0, gx, gy] = base[c];
        raw[o + c] = Math.max(0, Math.min(255, b0 + (gx * x) / side + (gy * y) / side + shade[c] + (rand() - 0.5) * 40));
      }
    }
  }
  return sharp(raw, { raw: { width: side, height: side, channels: 3 } }).jpeg({ quality: JPEG_QUALITY }).toBuffer();
}

/** `count` distinct JPEGs at `side`, starting at image number `first`; two encoded at a time. */
async function makeImages(photos: string[], first: number, count: number, side: number): Promise<Buffer[]> {
  const out = new Array<Buffer>(count);
  await runPool(count, 2, async (i) => {
    out[i] = photos.length > 0 ? await cocoImage(photos, first + i, side) : await syntheticImage(first + i, side);
  });
  return out;
}

await runBenchmark("bench:ingest", async (cleanup) => {
  const environment = await runEnvironment();
  const photos = await cocoPhotos();
  const source =
    photos.length > 0
      ? `coco-mini: ${photos.length} COCO photos (about 640x480), cover-cropped and resized (2048: upscaled) to each side, mirrored/flipped on later rounds, JPEG q${JPEG_QUALITY}`
      : `synthetic: seeded gradients + soft blobs + noise, JPEG q${JPEG_QUALITY} (../shared/data/coco-mini not found)`;
  console.log(`images: ${source}`);

  const { app, images, dataDir } = await startBenchApp(cleanup);
  const scratch = new FileBlobStore(await createTempDir(cleanup, "glimpse-bench-blobs-"));
  console.log(`app on 127.0.0.1:${app.grpcPort}, data dir ${dataDir}`);

  let uploaded = 0;
  const upload = async (content: Buffer, side: number, label: string) => {
    const { image } = await images.uploadImage({
      content,
      fileName: `${label}.jpg`,
      tags: ["bench", `side:${side}`],
      index: false,
      visibility: Visibility.VISIBILITY_PUBLIC,
    });
    if (!image || image.width !== side || image.height !== side || image.deduplicated) {
      throw new Error(`upload ${label} answered an unexpected image: ${JSON.stringify(image)}`);
    }
    uploaded++;
  };

  const results: SizeResult[] = [];
  let imageNumber = 0;
  for (const { side, count } of SIZES) {
    const prepare = startTimer();
    const warm = await makeImages(photos, imageNumber, WARMUP, side);
    const seqSet = await makeImages(photos, imageNumber + WARMUP, count, side);
    const concSet = await makeImages(photos, imageNumber + WARMUP + count, count, side);
    imageNumber += WARMUP + 2 * count;
    const all = [...seqSet, ...concSet];
    const meanBytes = Math.round(all.reduce((a, b) => a + b.length, 0) / all.length);
    console.log(`${side}: prepared ${warm.length + all.length} images (mean ${meanBytes} bytes) in ${(prepare() / 1000).toFixed(1)} s`);

    for (const [i, content] of warm.entries()) await upload(content, side, `warm-${side}-${i}`);

    const stopWatching = watchProcessStalls();
    // (a) one call in flight
    const seq = await runPool(count, 1, (i) => upload(seqSet[i], side, `seq-${side}-${i}`));
    // (b) CONCURRENCY calls in flight, on other images of the same kind
    const conc = await runPool(count, CONCURRENCY, (i) => upload(concSet[i], side, `conc-${side}-${i}`));
    const stalls = stopWatching();
    // (c) analyseImage alone on the sequential series' images, in process
    const analyseSeq = await runPool(count, 1, async (i) => {
      await analyseImage(seqSet[i], DEFAULT_LIMITS, "content");
    });
    const analyseConc = await runPool(count, CONCURRENCY, async (i) => {
      await analyseImage(seqSet[i], DEFAULT_LIMITS, "content");
    });
    // ... and two of its parts' neighbours: hashing alone, and the blob write (with fsync) alone
    const hashMs = seqSet.map((bytes) => {
      const elapsed = startTimer();
      createHash("sha256").update(bytes).digest("hex");
      return elapsed();
    });
    const put = await runPool(count, 1, async (i) => {
      await scratch.put(seqSet[i]);
    });

    const sequential = throughput(seq.latenciesMs, seq.wallMs);
    const concurrent = throughput(conc.latenciesMs, conc.wallMs);
    const analyseSequential = throughput(analyseSeq.latenciesMs, analyseSeq.wallMs);
    const analyseConcurrent = throughput(analyseConc.latenciesMs, analyseConc.wallMs);
    const shareOf = (ms: number[]) => round(ms.reduce((a, b) => a + b, 0) / seq.latenciesMs.reduce((a, b) => a + b, 0), 3);
    const result: SizeResult = {
      side,
      count,
      mean_bytes: meanBytes,
      sequential,
      concurrent,
      analyse_sequential: analyseSequential,
      analyse_concurrent: analyseConcurrent,
      sha256_only: summarise(hashMs),
      blob_put_only: summarise(put.latenciesMs),
      process_stalls_while_uploading: stalls,
      ratios: {
        concurrent_vs_sequential_throughput: round(concurrent.images_per_s / sequential.images_per_s, 3),
        analyse_share_of_sequential_ingest_mean: shareOf(analyseSeq.latenciesMs),
        sha256_share_of_sequential_ingest_mean: shareOf(hashMs),
        blob_put_share_of_sequential_ingest_mean: shareOf(put.latenciesMs),
      },
    };
    results.push(result);
    console.log(
      `${side}: sequential ${sequential.images_per_s}/s (p50 ${sequential.latency.p50_ms} ms, p99 ${sequential.latency.p99_ms} ms); ` +
        `${CONCURRENCY} in flight ${concurrent.images_per_s}/s (p50 ${concurrent.latency.p50_ms} ms, p99 ${concurrent.latency.p99_ms} ms); ` +
        `analyse alone p50 ${analyseSequential.latency.p50_ms} ms`,
    );
  }

  const [{ n }] = await app.sql<{ n: bigint }[]>`select count(*) as n from images`;
  if (Number(n) !== uploaded) throw new Error(`expected ${uploaded} rows, found ${n}`);

  const config = {
    sizes: SIZES,
    warmup_per_size: WARMUP,
    concurrency: CONCURRENCY,
    jpeg_quality: JPEG_QUALITY,
    upload: "UploadImage over gRPC on 127.0.0.1, index=false, visibility public, 2 tags; client and server in one Node process",
    database_pool_max: app.options.databasePoolMax,
    sharp_concurrency: sharp.concurrency(),
    uv_threadpool_size: Number(process.env.UV_THREADPOOL_SIZE ?? 4),
  };
  const json = { benchmark: "ingest", environment, source, config, results };

  const rows = results.flatMap((r) => {
    const row = (what: string, t: Throughput) => [
      `${r.side}x${r.side}`,
      what,
      t.latency.n,
      t.images_per_s,
      t.latency.p50_ms,
      t.latency.p99_ms,
    ];
    return [
      row("UploadImage, 1 in flight", r.sequential),
      row(`UploadImage, ${CONCURRENCY} in flight`, r.concurrent),
      row("analyseImage alone, 1 in flight", r.analyse_sequential),
      row(`analyseImage alone, ${CONCURRENCY} in flight`, r.analyse_concurrent),
      [`${r.side}x${r.side}`, "sha256 alone", r.sha256_only.n, "", r.sha256_only.p50_ms, r.sha256_only.p99_ms],
      [`${r.side}x${r.side}`, "blob put alone (write + fsync)", r.blob_put_only.n, "", r.blob_put_only.p50_ms, r.blob_put_only.p99_ms],
    ];
  });
  const shares = results.map((r) => {
    const pct = (x: number) => `${Math.round(x * 100)}%`;
    const { analyse_share_of_sequential_ingest_mean: analyse, blob_put_share_of_sequential_ingest_mean: put } = r.ratios;
    const stalls = r.process_stalls_while_uploading;
    return (
      `- ${r.side}x${r.side} (mean ${Math.round(r.mean_bytes / 1024)} KiB): ${CONCURRENCY} in flight gives ` +
      `${r.ratios.concurrent_vs_sequential_throughput}x the sequential throughput. Of a sequential upload's time ` +
      `(summed over the series), analyseImage is ${pct(analyse)} (sha256 alone ${pct(r.ratios.sha256_share_of_sequential_ingest_mean)}), ` +
      `a blob put ${pct(put)}, the rest (gRPC transfer, validation, the database transaction) ${pct(1 - analyse - put)}. ` +
      `GC while uploading: ${stalls.gc_total_ms} ms in ${stalls.gc_count} pauses; event-loop delay p99 ${stalls.event_loop_delay_p99_ms} ms.`
    );
  });
  const markdown = [
    "# Ingest benchmark",
    "",
    environmentMarkdown(environment),
    `- images: ${source}`,
    `- ${config.upload}; sharp concurrency ${config.sharp_concurrency}`,
    "",
    markdownTable(["size", "what", "n", "images/s", "p50 ms", "p99 ms"], rows),
    "",
    ...shares,
    "",
    "All series of one size ran side by side in one run on the same kind of images; analyseImage",
    "and the parts ran on the sequential series' images.",
  ].join("\n");
  const written = await writeResults("ingest", json, markdown);
  console.log(`wrote ${written.join(", ")}`);
});
