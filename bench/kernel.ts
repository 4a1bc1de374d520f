/**
 * The WASM SIMD exact-scan kernel (src/vector/kernel.ts over native/build/kernel.wasm) against
 * the plain JS loop with the same semantics (topKJs), side by side in one run, on 100,000
 * random unit vectors of 512 dimensions (205 MB of float32):
 *
 * - full scan, top 10: VectorMatrix.topKAll vs topKJs over every row;
 * - candidate lists of 100, 1,000 and 10,000 random rows (0.1%, 1%, 10%), top 10: topK vs
 *   topKJs, each series on a fresh list each round so the rows come from memory, not cache;
 * - the same lists through `dot`, which keeps list order, in random and in sorted row order:
 *   whether the order rows are gathered in matters (topK sorts its list inside the kernel).
 *
 * Series that are compared alternate which runs first in each round. No database is involved.
 *
 *   npm run bench:kernel     (node --import tsx bench/kernel.ts)
 */
import os from "node:os";
import { topKJs, VectorMatrix, type TopK } from "../src/vector/kernel.js";
import {
  markdownTable,
  percentile,
  round,
  runBenchmark,
  startTimer,
  writeResults,
  type LatencySummary,
} from "./lib.js";
import { makeRandom } from "./vectors.js";

const ROWS = 100_000;
const DIMENSION = 512;
const K = 10;
const QUERIES = 16;
const SEED = 20_240_601;
const FULL_SCAN = { warmup: 5, rounds: 80 };
const LISTS = [
  { size: 100, warmup: 50, rounds: 2000 },
  { size: 1_000, warmup: 20, rounds: 600 },
  { size: 10_000, warmup: 10, rounds: 150 },
];
/** Scores from the kernel (float32 sums) and topKJs (float64 sums) agree to this. */
const SCORE_EPS = 1e-5;

/** A unit vector with Gaussian components: uniform on the sphere. */
function unitVector(random: () => number, into: Float32Array): Float32Array {
  let norm = 0;
  for (let i = 0; i < into.length; i++) {
    const g = Math.sqrt(-2 * Math.log(Math.max(random(), 1e-12))) * Math.cos(2 * Math.PI * random());
    into[i] = g;
    norm += g * g;
  }
  norm = Math.sqrt(norm);
  for (let i = 0; i < into.length; i++) into[i] /= norm;
  return into;
}

/** `size` distinct rows below `limit` in random order (partial Fisher-Yates over `pool`). */
function randomRows(random: () => number, pool: Int32Array, size: number): Int32Array {
  for (let i = 0; i < size; i++) {
    const j = i + Math.floor(random() * (pool.length - i));
    const t = pool[i];
    pool[i] = pool[j];
    pool[j] = t;
  }
  return pool.slice(0, size);
}

/** Throws unless the two top-k lists agree: scores to SCORE_EPS, rows except among near-ties. */
function checkSame(label: string, kernel: TopK, js: TopK): void {
  const n = js.rows.length;
  if (kernel.rows.length !== n) throw new Error(`${label}: kernel returned ${kernel.rows.length} rows, JS ${n}`);
  for (let i = 0; i < n; i++) {
    if (Math.abs(kernel.scores[i] - js.scores[i]) >= SCORE_EPS) {
      throw new Error(`${label}: score at rank ${i}: kernel ${kernel.scores[i]}, JS ${js.scores[i]}`);
    }
    const nearTie =
      (i > 0 && js.scores[i - 1] - js.scores[i] < SCORE_EPS) ||
      (i + 1 < n && js.scores[i] - js.scores[i + 1] < SCORE_EPS);
    if (!nearTie && kernel.rows[i] !== js.rows[i]) {
      throw new Error(`${label}: row at rank ${i}: kernel ${kernel.rows[i]}, JS ${js.rows[i]}`);
    }
  }
}

/**
 * Runs each series once per round, the first to run rotating from round to round, with
 * untimed `before` and `after` steps around each round; returns each series' samples in ms.
 */
function alternate(
  rounds: number,
  warmup: number,
  series: ((round: number) => void)[],
  steps: { before?: (round: number) => void; after?: (round: number) => void } = {},
): number[][] {
  const samples = series.map(() => [] as number[]);
  for (let r = 0; r < warmup + rounds; r++) {
    steps.before?.(r);
    for (let s = 0; s < series.length; s++) {
      const which = (s + r) % series.length;
      const elapsed = startTimer();
      series[which](r);
      const ms = elapsed();
      if (r >= warmup) samples[which].push(ms);
    }
    steps.after?.(r);
  }
  return samples;
}

/** Like lib's summarise, to the microsecond (0.001 ms): small lists take tens of microseconds. */
function summarise(samplesMs: readonly number[]): LatencySummary {
  const r = (x: number) => round(x, 3);
  return {
    n: samplesMs.length,
    p50_ms: r(percentile(samplesMs, 50)),
    p99_ms: r(percentile(samplesMs, 99)),
    mean_ms: r(samplesMs.reduce((a, b) => a + b, 0) / Math.max(1, samplesMs.length)),
    min_ms: r(Math.min(...samplesMs)),
    max_ms: r(Math.max(...samplesMs)),
  };
}

/** GB/s for reading `rows` rows of the matrix in `ms`. */
function gbPerS(rows: number, ms: number): number {
  return round((rows * DIMENSION * 4) / (ms / 1000) / 1e9, 1);
}

await runBenchmark("kernel", async () => {
  const environment = {
    date: new Date().toISOString(),
    node: process.version,
    v8: process.versions.v8,
    cpu: os.cpus()[0]?.model ?? "unknown",
    cores: os.cpus().length,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    memory_gib: round(os.totalmem() / 2 ** 30, 1),
    load_average_at_start: os.loadavg().map((x) => round(x)),
  };

  const random = makeRandom(SEED);
  const setup = startTimer();
  const matrix = await VectorMatrix.create(DIMENSION, ROWS);
  const flat = new Float32Array(ROWS * DIMENSION);
  const vector = new Float32Array(DIMENSION);
  for (let r = 0; r < ROWS; r++) {
    unitVector(random, vector);
    flat.set(vector, r * DIMENSION);
    matrix.set(r, vector);
  }
  const queries = Array.from({ length: QUERIES }, () => unitVector(random, new Float32Array(DIMENSION)));
  const every = Int32Array.from({ length: ROWS }, (_, i) => i);
  const setupMs = setup();
  console.log(`kernel: ${ROWS} x ${DIMENSION} unit vectors ready in ${(setupMs / 1000).toFixed(1)} s`);

  // Full scan, top 10.
  let kernelTop: TopK | undefined;
  let jsTop: TopK | undefined;
  const [fullKernel, fullJs] = alternate(
    FULL_SCAN.rounds,
    FULL_SCAN.warmup,
    [
      (r) => (kernelTop = matrix.topKAll(queries[r % QUERIES], K, ROWS)),
      (r) => (jsTop = topKJs(flat, DIMENSION, queries[r % QUERIES], K, every)),
    ],
    { after: (r) => checkSame(`full scan, round ${r}`, kernelTop!, jsTop!) },
  );
  const full = { kernel: summarise(fullKernel), js: summarise(fullJs) };
  const fullSpeedup = round(full.js.p50_ms / full.kernel.p50_ms, 1);
  console.log(`kernel: full scan p50 ${full.kernel.p50_ms} ms (WASM) vs ${full.js.p50_ms} ms (JS): ${fullSpeedup}x`);

  // Candidate lists: every series gets a fresh random list each round, so no series finds
  // rows another one has just pulled into cache; the JS check of the kernel's list is untimed.
  const pool = Int32Array.from(every);
  const lists = [];
  for (const { size, warmup, rounds } of LISTS) {
    const drawn: Int32Array[] = [];
    const out = new Float32Array(size);
    const [topKKernel, topKJsMs, dotRandom, dotSorted] = alternate(
      rounds,
      warmup,
      [
        (r) => (kernelTop = matrix.topK(queries[r % QUERIES], K, drawn[0])),
        (r) => topKJs(flat, DIMENSION, queries[r % QUERIES], K, drawn[1]),
        (r) => matrix.dot(queries[r % QUERIES], drawn[2], out),
        (r) => matrix.dot(queries[r % QUERIES], drawn[3], out),
      ],
      {
        before: () => {
          for (let i = 0; i < 4; i++) drawn[i] = randomRows(random, pool, size);
          drawn[3].sort();
        },
        after: (r) => {
          const expected = topKJs(flat, DIMENSION, queries[r % QUERIES], K, drawn[0]);
          checkSame(`list of ${size}, round ${r}`, kernelTop!, expected);
        },
      },
    );
    lists.push({ size, rounds, topKKernel, topKJsMs, dotRandom, dotSorted });
  }

  const listResults = lists.map((l) => {
    const s = {
      kernel_topk: summarise(l.topKKernel),
      js_topk: summarise(l.topKJsMs),
      kernel_dot_random_order: summarise(l.dotRandom),
      kernel_dot_sorted_order: summarise(l.dotSorted),
    };
    return {
      rows: l.size,
      share_of_matrix: `${round((100 * l.size) / ROWS, 1)}%`,
      rounds: l.rounds,
      ...s,
      speedup_p50: round(s.js_topk.p50_ms / s.kernel_topk.p50_ms, 1),
      sorted_vs_random_dot_p50: round(s.kernel_dot_sorted_order.p50_ms / s.kernel_dot_random_order.p50_ms, 2),
    };
  });

  const json = {
    benchmark: "kernel",
    environment,
    config: {
      rows: ROWS,
      dimension: DIMENSION,
      matrix_mb: round((ROWS * DIMENSION * 4) / 1e6, 1),
      k: K,
      queries: QUERIES,
      seed: SEED,
      full_scan: FULL_SCAN,
      lists: LISTS,
      order: "each round runs every series of a block once; the series that runs first rotates",
      lists_drawn: "each list series scans its own fresh list of distinct random rows each round",
      check:
        `every kernel top-k is compared with topKJs (scores within ${SCORE_EPS}, ` +
        "rows equal except among near-ties)",
    },
    setup_s: round(setupMs / 1000, 1),
    full_scan: {
      kernel: full.kernel,
      js: full.js,
      speedup_p50: fullSpeedup,
      speedup_p99: round(full.js.p99_ms / full.kernel.p99_ms, 1),
      kernel_gb_per_s_p50: gbPerS(ROWS, full.kernel.p50_ms),
      meets_5x: fullSpeedup >= 5,
    },
    candidate_lists: listResults,
  };

  const cell = (l: LatencySummary) => `${l.p50_ms} / ${l.p99_ms}`;
  const markdown = [
    "# Exact-scan kernel benchmark",
    "",
    `- date: ${environment.date}`,
    `- node ${environment.node} (V8 ${environment.v8}); CPU: ${environment.cpu} x ${environment.cores} cores, ` +
      `${environment.memory_gib} GiB RAM, ${environment.platform}; ` +
      `load average at start ${environment.load_average_at_start.join(", ")}`,
    `- ${ROWS} random unit vectors x ${DIMENSION} float32 (${json.config.matrix_mb} MB), top ${K}, ` +
      `${QUERIES} queries in turn; ` +
      "WASM = VectorMatrix (native/build/kernel.wasm), JS = topKJs (plain loop, float64 sums, same heap and rules)",
    `- every WASM result checked against JS; series alternate which runs first in each round`,
    "",
    `Full scan, ${FULL_SCAN.rounds} rounds after ${FULL_SCAN.warmup} warm-up:`,
    "",
    markdownTable(
      ["", "p50 ms", "p99 ms", "mean ms", "GB/s at p50"],
      [
        ["WASM topKAll", full.kernel.p50_ms, full.kernel.p99_ms, full.kernel.mean_ms, gbPerS(ROWS, full.kernel.p50_ms)],
        ["JS topKJs", full.js.p50_ms, full.js.p99_ms, full.js.mean_ms, gbPerS(ROWS, full.js.p50_ms)],
      ],
    ),
    "",
    `Speed-up at p50: **${fullSpeedup}x** (p99: ${json.full_scan.speedup_p99}x); ` +
      `target >= 5x: ${fullSpeedup >= 5 ? "met" : "NOT met"}.`,
    "",
    "Candidate lists of distinct random rows (each series a fresh list each round), p50 / p99 ms:",
    "",
    markdownTable(
      [
        "rows",
        "rounds",
        "WASM topK",
        "JS topKJs",
        "speed-up p50",
        "WASM dot, random order",
        "WASM dot, sorted order",
        "sorted / random",
      ],
      listResults.map((l) => [
        `${l.rows} (${l.share_of_matrix})`,
        l.rounds,
        cell(l.kernel_topk),
        cell(l.js_topk),
        `${l.speedup_p50}x`,
        cell(l.kernel_dot_random_order),
        cell(l.kernel_dot_sorted_order),
        l.sorted_vs_random_dot_p50,
      ]),
    ),
    "",
    "`topK` sorts and deduplicates its list inside the kernel (radix sort) before scanning, so its figure",
    "includes the sort; `dot` scans in the order given, which is what the last columns compare.",
  ].join("\n");

  matrix.dispose();
  const written = await writeResults("kernel", json, markdown);
  console.log(markdown);
  console.log(`wrote ${written.join(", ")}`);
});
