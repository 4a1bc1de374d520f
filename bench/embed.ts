/**
 * Embedding throughput and what it costs the rest of the service, with a CLIP model directory
 * (by default bench/models/clip-b32-random, ViT-B/32-sized with random weights: same cost as
 * the real one, meaningless vectors). On 2 intra-op threads, side by side in one run:
 *
 * 1. each tower alone through EmbeddingRuntime at batch 1, 4, 8 and 16 (images from
 *    preprocessed pixels, texts from token ids), for the float32 and the quantized files when
 *    the directory has both;
 * 2. the dynamic batcher: 16 concurrent callers embedding image bytes through Embedder with
 *    batches of up to 16 against batches of 1, and 16 one-image runs against one run of 16;
 * 3. the real app under an embedding load (16 concurrent SearchImages by image content):
 *    the main thread's event-loop delay and the latency of GetImage calls beside it, against
 *    the same with no load.
 *
 *   npm run bench:embed [-- MODEL_DIR] [-- --quick]     (node --import tsx bench/embed.ts)
 */
import { existsSync } from "node:fs";
import { readdir, readFile, stat, symlink } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { constants as perfConstants, PerformanceObserver } from "node:perf_hooks";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { Embedder, type BatchingOptions } from "../src/embedding/embedder.js";
import { preprocessImage } from "../src/embedding/preprocess.js";
import { EmbeddingRuntime, findModelFiles } from "../src/embedding/runtime.js";
import { ClipTokenizer } from "../src/embedding/tokenizer.js";
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
  type Cleanup,
  type LatencySummary,
  type ProcessStalls,
} from "./lib.js";

const { values: flags, positionals } = parseArgs({
  options: { quick: { type: "boolean", default: false } },
  allowPositionals: true,
});
const QUICK = flags.quick;
const MODEL_DIR = path.resolve(positionals[0] ?? path.join(REPO_ROOT, "bench", "models", "clip-b32-random"));

/** onnxruntime intra-op threads per session, as `GLIMPSE_EMBED_THREADS` defaults to. */
const THREADS = 2;
const BATCH_SIZES = [1, 4, 8, 16] as const;
/** Items per batch size per round: every batch size embeds as many items, interleaved. */
const ROUND_ITEMS = 16;
const ROUNDS = QUICK ? { image: 1, text: 2 } : { image: 4, text: 6 };
/** Concurrent callers, and the batching limits of the batched side (the service's defaults). */
const CALLERS = 16;
const BATCHED: BatchingOptions = { maxBatchSize: 16, maxWaitMs: 5, maxQueue: 256 };
const UNBATCHED: BatchingOptions = { ...BATCHED, maxBatchSize: 1 };
/** Images each batcher mode embeds (in two halves, the modes alternating). */
const CONCURRENT_IMAGES = QUICK ? 64 : 192;
/** Repetitions of "16 one-image runs" against "one run of 16". */
const SPLIT_REPS = QUICK ? 2 : 5;
/** SearchImages calls of the app load, and GetImage calls with the app idle. */
const LOAD_SEARCHES = QUICK ? 64 : 192;
const IDLE_GETS = QUICK ? 150 : 400;
/** The bound the main thread's event-loop delay must stay under while embedding runs. */
const EVENT_LOOP_LIMIT_MS = 10;
const MODEL_LOAD_TIMEOUT_MS = 180_000;
/** The shared COCO photos, read-only; synthetic JPEGs when they are absent. */
const COCO_DIR = path.resolve(REPO_ROOT, "..", "shared", "data", "coco-mini");
const PHOTOS_USED = QUICK ? 48 : 96;

/** Starts measuring this process's CPU time (all threads); the function gives cores busy since. */
function watchCores(): () => number {
  const wall = startTimer();
  const cpu = process.cpuUsage();
  return () => {
    const used = process.cpuUsage(cpu);
    return round((used.user + used.system) / 1000 / wall(), 2);
  };
}

/** GC pauses of one kind over a phase. */
interface GcKind {
  count: number;
  total_ms: number;
  max_ms: number;
}

const GC_KINDS: Record<number, string> = {
  [perfConstants.NODE_PERFORMANCE_GC_MINOR]: "minor",
  [perfConstants.NODE_PERFORMANCE_GC_MAJOR]: "major",
  [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
  [perfConstants.NODE_PERFORMANCE_GC_WEAKCB]: "weakcb",
};

/** Starts recording GC pauses by kind (scavenge, mark-compact, ...), to tell which ones stall the loop. */
function watchGcKinds(): () => Record<string, GcKind> {
  const kinds: Record<string, GcKind> = {};
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = GC_KINDS[(entry as { detail?: { kind?: number } }).detail?.kind ?? -1] ?? "other";
      const k = (kinds[kind] ??= { count: 0, total_ms: 0, max_ms: 0 });
      k.count++;
      k.total_ms = round(k.total_ms + entry.duration);
      k.max_ms = round(Math.max(k.max_ms, entry.duration));
    }
  });
  observer.observe({ entryTypes: ["gc"] });
  return () => {
    observer.disconnect();
    return kinds;
  };
}

// ---------------------------------------------------------------------------------------------
// Inputs

/** Up to `limit` COCO photos' bytes, in name order; empty when the folder is absent. */
async function cocoPhotos(limit: number): Promise<Buffer[]> {
  const files: string[] = [];
  for (const sub of ["val2017", "train2017"]) {
    const dir = path.join(COCO_DIR, sub);
    if (!existsSync(dir)) continue;
    for (const f of (await readdir(dir)).sort()) if (f.endsWith(".jpg")) files.push(path.join(dir, f));
  }
  return Promise.all(files.slice(0, limit).map((f) => readFile(f)));
}

/** A 640x480 JPEG of seeded colour gradients and noise: a stand-in when COCO is absent. */
async function syntheticPhoto(seed: number): Promise<Buffer> {
  const [width, height] = [640, 480];
  const raw = Buffer.alloc(width * height * 3);
  let state = seed * 2654435761;
  const random = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const slopes = [0, 1, 2].map(() => [random() * 255, (random() - 0.5) * 300, (random() - 0.5) * 300]);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        const [base, gx, gy] = slopes[c];
        raw[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, base + (gx * x) / width + (gy * y) / height + (random() - 0.5) * 60));
      }
    }
  }
  return sharp(raw, { raw: { width, height, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
}

/** Search-like prompts, all different, of 5 to 12 words. */
function prompts(count: number): string[] {
  const subjects = ["a dog", "two cats", "a red car", "an old man", "a child", "a bowl of fruit", "a train", "a surfer"];
  const actions = ["sitting", "running", "parked", "sleeping", "standing", "waiting", "playing", "resting"];
  const places = ["on a beach at sunset", "in a snowy forest", "next to a brick wall", "in a busy street", "on a wooden table", "under a bridge"];
  return Array.from({ length: count }, (_, i) => {
    const text = `${subjects[i % subjects.length]} ${actions[Math.floor(i / 8) % actions.length]} ${places[i % places.length]}`;
    return i % 3 === 0 ? `a photo of ${text}` : text;
  });
}

// ---------------------------------------------------------------------------------------------
// Model files

/** One set of tower files to time: the directory findModelFiles resolves to them. */
interface ModelVariant {
  name: "float32" | "quantized";
  dir: string;
  vision: string;
  text: string;
}

/**
 * The float32 towers (vision_model.onnx, text_model.onnx) and, when both *_quantized.onnx are
 * there too, the quantized ones, linked into a directory of their own: the runtime takes the
 * float32 files whenever a directory has them.
 */
async function modelVariants(dir: string, cleanup: Cleanup): Promise<ModelVariant[]> {
  const at = (name: string) => [path.join(dir, name), path.join(dir, "onnx", name)].find((f) => existsSync(f));
  const variants: ModelVariant[] = [];
  const [vision, text] = [at("vision_model.onnx"), at("text_model.onnx")];
  if (vision && text) variants.push({ name: "float32", dir, vision, text });
  const [visionQ, textQ] = [at("vision_model_quantized.onnx"), at("text_model_quantized.onnx")];
  if (visionQ && textQ) {
    const linked = await createTempDir(cleanup, "glimpse-bench-quantized-");
    await symlink(visionQ, path.join(linked, "vision_model_quantized.onnx"));
    await symlink(textQ, path.join(linked, "text_model_quantized.onnx"));
    variants.push({ name: "quantized", dir: linked, vision: visionQ, text: textQ });
  }
  if (variants.length === 0) {
    const files = await findModelFiles(dir); // throws the runtime's own explanation
    variants.push({ name: "float32", dir, ...files });
  }
  return variants;
}

// ---------------------------------------------------------------------------------------------
// 1. Tower throughput

/** One batch size of one tower: model runs timed from the call to the vectors. */
interface BatchThroughput {
  batch: number;
  runs: number;
  items: number;
  items_per_s: number;
  ms_per_item: number;
  run_latency: LatencySummary;
  /** This process's CPU time over the runs' wall time: near THREADS when it had the cores to itself. */
  cores_busy: number;
}

/**
 * Times `prepare(b)`'s run for every batch size: one unmeasured run each, then `rounds`
 * rounds, each running every batch size over ROUND_ITEMS items (so 16 runs of 1, ..., 1 of 16).
 * Preparing the inputs is not timed.
 */
async function towerThroughput(
  rounds: number,
  prepare: (batch: number) => () => Promise<Float32Array[]>,
): Promise<BatchThroughput[]> {
  const check = (vectors: Float32Array[], batch: number) => {
    if (vectors.length !== batch || vectors.some((v) => !(v.length > 0))) {
      throw new Error(`a run of ${batch} returned ${vectors.length} vectors`);
    }
  };
  for (const batch of BATCH_SIZES) check(await prepare(batch)(), batch);
  const samples = new Map<number, number[]>(BATCH_SIZES.map((b) => [b, []]));
  const cpuMs = new Map<number, number>(BATCH_SIZES.map((b) => [b, 0]));
  for (let r = 0; r < rounds; r++) {
    for (const batch of BATCH_SIZES) {
      for (let k = 0; k < ROUND_ITEMS / batch; k++) {
        const run = prepare(batch);
        const cpu = process.cpuUsage();
        const elapsed = startTimer();
        const vectors = await run();
        samples.get(batch)!.push(elapsed());
        const used = process.cpuUsage(cpu);
        cpuMs.set(batch, cpuMs.get(batch)! + (used.user + used.system) / 1000);
        check(vectors, batch);
      }
    }
  }
  return BATCH_SIZES.map((batch) => {
    const ms = samples.get(batch)!;
    const totalMs = ms.reduce((a, b) => a + b, 0);
    const items = ms.length * batch;
    return {
      batch,
      runs: ms.length,
      items,
      items_per_s: round(items / (totalMs / 1000)),
      ms_per_item: round(totalMs / items),
      run_latency: summarise(ms),
      cores_busy: round(cpuMs.get(batch)! / totalMs),
    };
  });
}

/** n images' pixels back to back, starting at image `from` (a fresh array: the runtime takes it). */
function pixelBatch(pixels: Float32Array[], from: number, n: number): Float32Array {
  const per = pixels[0].length;
  const out = new Float32Array(n * per);
  for (let i = 0; i < n; i++) out.set(pixels[(from + i) % pixels.length], i * per);
  return out;
}

interface VariantResult {
  variant: ModelVariant["name"];
  files: { vision: string; text: string; vision_mb: number; text_mb: number };
  open_s: number;
  image: BatchThroughput[];
  text: BatchThroughput[];
}

async function timeVariant(variant: ModelVariant, pixels: Float32Array[], texts: string[], tokenizer: ClipTokenizer): Promise<{
  result: VariantResult;
  runtime: EmbeddingRuntime;
}> {
  const opening = startTimer();
  const runtime = await EmbeddingRuntime.open(variant.dir, { intraOpThreads: THREADS });
  const openS = round(opening() / 1000, 1);
  let next = 0;
  const image = await towerThroughput(ROUNDS.image, (batch) => {
    const input = pixelBatch(pixels, next, batch);
    next += batch;
    return () => runtime.embedImages(input, batch);
  });
  const text = await towerThroughput(ROUNDS.text, (batch) => {
    const chosen = Array.from({ length: batch }, () => texts[next++ % texts.length]);
    const { inputIds, attentionMask } = tokenizer.encodeBatch(chosen);
    return () => runtime.embedTexts(inputIds, attentionMask, batch);
  });
  const mb = async (file: string) => round((await stat(file)).size / 1e6, 1);
  const result: VariantResult = {
    variant: variant.name,
    files: {
      vision: path.relative(REPO_ROOT, variant.vision),
      text: path.relative(REPO_ROOT, variant.text),
      vision_mb: await mb(variant.vision),
      text_mb: await mb(variant.text),
    },
    open_s: openS,
    image,
    text,
  };
  const line = (rows: BatchThroughput[]) => rows.map((r) => `b${r.batch} ${r.items_per_s}/s`).join(", ");
  console.log(`${variant.name}: opened in ${openS} s; image ${line(image)}; text ${line(text)}`);
  return { result, runtime };
}

// ---------------------------------------------------------------------------------------------
// 2. The dynamic batcher

/** A view of `runtime` that records the size of every image run, for the batcher series. */
function recordingImageRuns(runtime: EmbeddingRuntime, sizes: number[]): EmbeddingRuntime {
  const view = Object.create(runtime) as EmbeddingRuntime;
  view.embedImages = (pixels, count) => {
    sizes.push(count);
    return runtime.embedImages(pixels, count);
  };
  return view;
}

interface ConcurrentResult {
  max_batch_size: number;
  images: number;
  images_per_s: number;
  wall_s: number;
  /** Per call: decode and preprocessing, the wait for a batch, the model run. */
  call_latency: LatencySummary;
  model_runs: number;
  mean_run_size: number;
  cores_busy: number;
  process_stalls: ProcessStalls;
}

interface SplitResult {
  reps: number;
  separate_runs_ms: LatencySummary;
  one_batch_ms: LatencySummary;
  /** Median of 16 separate one-image runs over the median of one run of 16. */
  ratio: number;
}

async function batcherSeries(
  runtime: EmbeddingRuntime,
  tokenizer: ClipTokenizer,
  photos: Buffer[],
  pixels: Float32Array[],
): Promise<{ batched: ConcurrentResult; unbatched: ConcurrentResult; split: SplitResult }> {
  const modes = [BATCHED, UNBATCHED].map((batching) => {
    const sizes: number[] = [];
    const embedder = new Embedder("bench", recordingImageRuns(runtime, sizes), tokenizer, batching);
    return { batching, sizes, embedder, latencies: [] as number[], wallMs: 0, cpuMs: 0, stalls: [] as ProcessStalls[] };
  });
  let photo = 0;
  const load = async (mode: (typeof modes)[number], count: number) => {
    const watching = watchProcessStalls();
    const { latenciesMs, wallMs } = await runPool(count, CALLERS, async () => {
      const vector = await mode.embedder.embedImage(photos[photo++ % photos.length]);
      if (vector.length !== runtime.dimension) throw new Error(`embedImage gave ${vector.length} values`);
    });
    mode.stalls.push(watching());
    return { latenciesMs, wallMs };
  };
  for (const mode of modes) await load(mode, CALLERS); // warm-up: sharp, the batcher, the worker
  for (const mode of modes) mode.sizes.length = 0;
  for (let half = 0; half < 2; half++) {
    for (const mode of half === 0 ? modes : [...modes].reverse()) {
      const cores = watchCores();
      const { latenciesMs, wallMs } = await load(mode, CONCURRENT_IMAGES / 2);
      mode.latencies.push(...latenciesMs);
      mode.wallMs += wallMs;
      mode.cpuMs += cores() * wallMs;
    }
  }
  const [batched, unbatched] = modes.map((mode): ConcurrentResult => {
    const stalls = mode.stalls.slice(1); // not the warm-up's
    return {
      max_batch_size: mode.batching.maxBatchSize,
      images: mode.latencies.length,
      images_per_s: round(mode.latencies.length / (mode.wallMs / 1000)),
      wall_s: round(mode.wallMs / 1000, 3),
      call_latency: summarise(mode.latencies),
      model_runs: mode.sizes.length,
      mean_run_size: round(mode.sizes.reduce((a, b) => a + b, 0) / Math.max(1, mode.sizes.length)),
      cores_busy: round(mode.cpuMs / mode.wallMs),
      process_stalls: worstStalls(stalls),
    };
  });
  console.log(
    `batcher, ${CALLERS} callers: batches of up to ${BATCHED.maxBatchSize} ${batched.images_per_s}/s ` +
      `(mean run ${batched.mean_run_size}), batches of 1 ${unbatched.images_per_s}/s`,
  );

  // 16 one-image runs against one run of the same 16 images, alternating.
  const separate: number[] = [];
  const together: number[] = [];
  for (let rep = 0; rep < SPLIT_REPS; rep++) {
    const first = rep * 16;
    const inputs = Array.from({ length: 16 }, (_, i) => pixelBatch(pixels, first + i, 1));
    let elapsed = startTimer();
    for (const input of inputs) await runtime.embedImages(input, 1);
    separate.push(elapsed());
    const batch = pixelBatch(pixels, first, 16);
    elapsed = startTimer();
    await runtime.embedImages(batch, 16);
    together.push(elapsed());
  }
  const split: SplitResult = {
    reps: SPLIT_REPS,
    separate_runs_ms: summarise(separate),
    one_batch_ms: summarise(together),
    ratio: 0,
  };
  split.ratio = round(split.separate_runs_ms.p50_ms / split.one_batch_ms.p50_ms, 3);
  console.log(`16 one-image runs ${split.separate_runs_ms.p50_ms} ms, one run of 16 ${split.one_batch_ms.p50_ms} ms (${split.ratio}x)`);
  return { batched, unbatched, split };
}

/** Stalls of several phases as one: counts and totals added, the worst delays kept. */
function worstStalls(phases: ProcessStalls[]): ProcessStalls {
  const max = (key: keyof ProcessStalls) => Math.max(...phases.map((p) => p[key]));
  return {
    gc_count: phases.reduce((a, p) => a + p.gc_count, 0),
    gc_total_ms: round(phases.reduce((a, p) => a + p.gc_total_ms, 0)),
    gc_max_ms: max("gc_max_ms"),
    event_loop_delay_p50_ms: max("event_loop_delay_p50_ms"),
    event_loop_delay_p99_ms: max("event_loop_delay_p99_ms"),
    event_loop_delay_max_ms: max("event_loop_delay_max_ms"),
  };
}

// ---------------------------------------------------------------------------------------------
// 3. The app under an embedding load

interface AppLoadResult {
  model_ready_s: number;
  idle: { get_image: LatencySummary; process_stalls: ProcessStalls };
  loaded: {
    searches: number;
    searches_per_s: number;
    search_latency: LatencySummary;
    get_image: LatencySummary;
    cores_busy: number;
    process_stalls: ProcessStalls;
    gc_by_kind: Record<string, GcKind>;
  };
  /** Whether the main thread's event-loop delay under load stayed under EVENT_LOOP_LIMIT_MS. */
  event_loop_under_limit: { p99: boolean; max: boolean };
}

async function appUnderLoad(cleanup: Cleanup, photos: Buffer[]): Promise<AppLoadResult> {
  const { app, images } = await startBenchApp(cleanup, {
    model: MODEL_DIR,
    embedThreads: THREADS,
    embedBatchSize: BATCHED.maxBatchSize,
    embedBatchWaitMs: BATCHED.maxWaitMs,
    embedQueueMax: BATCHED.maxQueue,
  });
  const loading = startTimer();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    app.searchReady,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the model was not ready after ${MODEL_LOAD_TIMEOUT_MS / 1000} s`)), MODEL_LOAD_TIMEOUT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
  const modelReadyS = round(loading() / 1000, 1);
  console.log(`app on 127.0.0.1:${app.grpcPort}, model ready in ${modelReadyS} s`);

  const upload = { content: photos[0], fileName: "bench.jpg", visibility: Visibility.VISIBILITY_PUBLIC, waitForIndex: true };
  const { image } = await images.uploadImage(upload);
  if (!image) throw new Error("UploadImage answered no image");
  const id = image.id;
  const getImage = async () => {
    const { image: got } = await images.getImage({ id });
    if (got?.id !== id) throw new Error(`GetImage answered ${got?.id}`);
  };
  const search = async (content: Buffer) => {
    const { results } = await images.searchImages({ query: { $case: "likeImageContent", value: content }, limit: 1 });
    if (results.length !== 1 || results[0].id !== id) throw new Error(`SearchImages answered ${results.length} results`);
  };
  for (let i = 0; i < 20; i++) await getImage();

  let watching = watchProcessStalls();
  const idle = await runPool(IDLE_GETS, 1, getImage);
  const idleStalls = watching();

  // Warm the search path (analysis, preprocessing, the batcher) before measuring.
  await runPool(CALLERS, CALLERS, (i) => search(photos[i % photos.length]));

  watching = watchProcessStalls();
  const gcKinds = watchGcKinds();
  const cores = watchCores();
  let underLoad = true;
  const gets: number[] = [];
  const getter = (async () => {
    while (underLoad) {
      const elapsed = startTimer();
      await getImage();
      gets.push(elapsed());
    }
  })();
  const searches = await runPool(LOAD_SEARCHES, CALLERS, (i) => search(photos[(i + 1) % photos.length])).finally(() => {
    underLoad = false;
  });
  await getter;
  const coresBusy = cores();
  const loadStalls = watching();
  const gcByKind = gcKinds();

  const result: AppLoadResult = {
    model_ready_s: modelReadyS,
    idle: { get_image: summarise(idle.latenciesMs), process_stalls: idleStalls },
    loaded: {
      searches: LOAD_SEARCHES,
      searches_per_s: round(LOAD_SEARCHES / (searches.wallMs / 1000)),
      search_latency: summarise(searches.latenciesMs),
      get_image: summarise(gets),
      cores_busy: coresBusy,
      process_stalls: loadStalls,
      gc_by_kind: gcByKind,
    },
    event_loop_under_limit: {
      p99: loadStalls.event_loop_delay_p99_ms < EVENT_LOOP_LIMIT_MS,
      max: loadStalls.event_loop_delay_max_ms < EVENT_LOOP_LIMIT_MS,
    },
  };
  console.log(
    `app: ${result.loaded.searches_per_s} searches/s; GetImage p99 idle ${result.idle.get_image.p99_ms} ms, ` +
      `under load ${result.loaded.get_image.p99_ms} ms; event-loop delay under load p99 ` +
      `${loadStalls.event_loop_delay_p99_ms} ms, max ${loadStalls.event_loop_delay_max_ms} ms`,
  );
  return result;
}

// ---------------------------------------------------------------------------------------------

await runBenchmark("bench:embed", async (cleanup) => {
  const environment = await runEnvironment();
  const loadBefore = os.loadavg().map((x) => round(x));
  console.log(`model: ${MODEL_DIR}${QUICK ? " (quick)" : ""}; load average ${loadBefore.join(" ")}`);
  const variants = await modelVariants(MODEL_DIR, cleanup);

  let photos = await cocoPhotos(PHOTOS_USED);
  let source = `coco-mini: the first ${photos.length} COCO photos by name (val2017, then train2017), about 640x480 JPEG`;
  if (photos.length === 0) {
    console.log(`${COCO_DIR} not found: using synthetic 640x480 JPEGs`);
    photos = await Promise.all(Array.from({ length: PHOTOS_USED }, (_, i) => syntheticPhoto(i + 1)));
    source = "synthetic: seeded 640x480 gradient + noise JPEGs (../shared/data/coco-mini not found)";
  }
  const tokenizer = await ClipTokenizer.fromDirectory(MODEL_DIR);
  const preparing = startTimer();
  const pixels = await Promise.all(photos.map((bytes) => preprocessImage(bytes)));
  const preprocessMs = preparing();
  const texts = prompts(64);

  const towers: VariantResult[] = [];
  let batcher: Awaited<ReturnType<typeof batcherSeries>> | undefined;
  for (const variant of variants) {
    const { result, runtime } = await timeVariant(variant, pixels, texts, tokenizer);
    try {
      towers.push(result);
      if (variant.name === "float32" || variants.length === 1) batcher = await batcherSeries(runtime, tokenizer, photos, pixels);
    } finally {
      await runtime.close();
    }
  }
  if (!batcher) throw new Error("no model variant ran the batcher series");
  const appLoad = await appUnderLoad(cleanup, photos);
  const loadAfter = os.loadavg().map((x) => round(x));

  const config = {
    model_dir: path.relative(REPO_ROOT, MODEL_DIR) || ".",
    quick: QUICK,
    intra_op_threads: THREADS,
    batch_sizes: BATCH_SIZES,
    rounds: ROUNDS,
    round_items: ROUND_ITEMS,
    callers: CALLERS,
    batched: BATCHED,
    unbatched: UNBATCHED,
    concurrent_images: CONCURRENT_IMAGES,
    split_reps: SPLIT_REPS,
    load_searches: LOAD_SEARCHES,
    idle_gets: IDLE_GETS,
    event_loop_limit_ms: EVENT_LOOP_LIMIT_MS,
    preprocess_ms_per_image: round(preprocessMs / photos.length),
    load_average_before: loadBefore,
    load_average_after: loadAfter,
  };
  const json = { benchmark: "embed", environment, source, config, towers, batcher, app: appLoad };
  await writeResults("embed", json, markdown(environment, source, config, towers, batcher, appLoad));
  console.log("wrote bench/results/embed.json, bench/results/embed.md");
});

function markdown(
  environment: Awaited<ReturnType<typeof runEnvironment>>,
  source: string,
  config: { model_dir: string; quick: boolean; load_average_before: number[]; load_average_after: number[] },
  towers: VariantResult[],
  batcher: Awaited<ReturnType<typeof batcherSeries>>,
  app: AppLoadResult,
): string {
  const towerRows = towers.flatMap((v) =>
    (["image", "text"] as const).flatMap((tower) =>
      v[tower].map((r) => [
        v.variant,
        tower,
        r.batch,
        r.runs,
        r.items_per_s,
        r.ms_per_item,
        r.run_latency.p50_ms,
        r.run_latency.p99_ms,
        r.cores_busy,
      ]),
    ),
  );
  const { batched, unbatched, split } = batcher;
  const concurrentRow = (label: string, r: ConcurrentResult) => [
    label,
    r.images,
    r.images_per_s,
    r.model_runs,
    r.mean_run_size,
    r.call_latency.p50_ms,
    r.call_latency.p99_ms,
    r.cores_busy,
  ];
  const stallRow = (label: string, s: ProcessStalls) => [
    label,
    s.event_loop_delay_p50_ms,
    s.event_loop_delay_p99_ms,
    s.event_loop_delay_max_ms,
    `${s.gc_total_ms} ms / ${s.gc_count}`,
    s.gc_max_ms,
  ];
  const latencyRow = (label: string, l: LatencySummary) => [label, l.n, l.p50_ms, l.p99_ms, l.max_ms];
  const loaded = app.loaded.process_stalls;
  const against = (ms: number, under: boolean) => `${ms} ms (${under ? "under" : "over"} ${EVENT_LOOP_LIMIT_MS} ms)`;
  return [
    "# Embedding benchmark",
    "",
    environmentMarkdown(environment),
    `- model: ${config.model_dir}${config.quick ? " (--quick)" : ""}; ${THREADS} intra-op threads per tower session`,
    `- images: ${source}`,
    `- load average (1, 5, 15 min) before ${config.load_average_before.join(" ")}, after ${config.load_average_after.join(" ")}`,
    "",
    "## Towers alone (EmbeddingRuntime, preprocessed inputs)",
    "",
    markdownTable(["files", "tower", "batch", "runs", "items/s", "ms/item", "run p50 ms", "run p99 ms", "cores busy"], towerRows),
    "",
    `Each round runs every batch size over ${ROUND_ITEMS} items, the batch sizes interleaved; one unmeasured run each first. ` +
      `"cores busy" is this process's CPU time (all threads) over the wall time: near ${THREADS} when the ` +
      "benchmark had the machine to itself, lower when something else took cores.",
    "",
    `## Dynamic batcher (Embedder.embedImage from JPEG bytes, ${CALLERS} concurrent callers)`,
    "",
    markdownTable(
      ["batching", "images", "images/s", "model runs", "mean run size", "call p50 ms", "call p99 ms", "cores busy"],
      [
        concurrentRow(`up to ${BATCHED.maxBatchSize}, wait ${BATCHED.maxWaitMs} ms`, batched),
        concurrentRow("1 (unbatched)", unbatched),
      ],
    ),
    "",
    `Batched over unbatched throughput: ${round(batched.images_per_s / unbatched.images_per_s, 3)}x. ` +
      `16 one-image runs took ${split.separate_runs_ms.p50_ms} ms against ${split.one_batch_ms.p50_ms} ms for one ` +
      `run of the same 16 (median of ${split.reps}): ${split.ratio}x.`,
    "",
    "## The app under an embedding load",
    "",
    `${app.loaded.searches} SearchImages by image content (like_image_content, limit 1), ${CALLERS} in flight, ` +
      `over gRPC: ${app.loaded.searches_per_s} searches/s, p50 ${app.loaded.search_latency.p50_ms} ms, ` +
      `p99 ${app.loaded.search_latency.p99_ms} ms, ${app.loaded.cores_busy} cores busy. Beside them, one GetImage at a time in a loop; ` +
      `idle: the same loop alone. Model ready ${app.model_ready_s} s after start.`,
    "",
    markdownTable(["GetImage", "n", "p50 ms", "p99 ms", "max ms"], [
      latencyRow("idle", app.idle.get_image),
      latencyRow("under embedding load", app.loaded.get_image),
    ]),
    "",
    markdownTable(["main thread", "event-loop delay p50 ms", "p99 ms", "max ms", "GC total / pauses", "longest GC ms"], [
      stallRow("app idle (GetImage loop)", app.idle.process_stalls),
      stallRow("app under load (searches + GetImage)", app.loaded.process_stalls),
      stallRow(`Embedder, ${CALLERS} callers, batched`, batched.process_stalls),
      stallRow(`Embedder, ${CALLERS} callers, unbatched`, unbatched.process_stalls),
    ]),
    "",
    `Under the app load the main thread's event-loop delay was p99 ${against(loaded.event_loop_delay_p99_ms, app.event_loop_under_limit.p99)}, ` +
      `max ${against(loaded.event_loop_delay_max_ms, app.event_loop_under_limit.max)}. GC pauses under load by kind: ` +
      Object.entries(app.loaded.gc_by_kind)
        .map(([kind, k]) => `${kind} ${k.count} (${k.total_ms} ms, longest ${k.max_ms} ms)`)
        .join(", ") +
      ". Model runs happen in the towers' " +
      "worker threads; the main thread serves gRPC, crops and normalises the decoded pixels (sharp decodes on libuv's " +
      `pool) and collects garbage. On ${environment.cores} cores it shares the CPU with the ${THREADS} onnxruntime threads ` +
      "and sharp's, so the delay also holds time spent waiting for a core.",
  ].join("\n");
}
