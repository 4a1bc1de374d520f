/**
 * The exact scan on float32 rows against the scan on int8 rows plus the float32 re-rank of its
 * best candidates (what VectorIndex does with GLIMPSE_SCAN_QUANTISATION=int8), side by side in
 * one run, at 100,000 x 512:
 *
 * - the whole range, a 10% and a 1% subset of the rows (a fresh random subset each round, in
 *   ascending order as a bitmap of slots gives it to the planner), top 10;
 * - on two sets: clustered unit vectors (bench/vectors.ts `clusteredVectors`, as bench:search
 *   uses) and CLIP-like ones (`clipLikeVectors`: a shared direction and outlier dimensions);
 * - recall@10 of int8 + re-rank against the float32 scan's top 10, over every timed query;
 * - bytes of the scan matrix per image, per 100k and per 1M images;
 * - what fetching one stored vector back from hnswlib (`getPoint`) costs, the re-rank source
 *   the float32 matrix stands in for.
 *
 * Series alternate which runs first in each round. No database is involved.
 *
 *   npm run bench:quantised     (node --import tsx bench/quantised.ts; QUANT_ROWS=20000 for a quick run)
 */
import os from "node:os";
import hnswlib from "hnswlib-node";
import { VectorMatrix, type TopK } from "../src/vector/kernel.js";
import { int8Stride, QuantisedMatrix, rerank, rerankDepth } from "../src/vector/quantised-matrix.js";
import { markdownTable, percentile, round, runBenchmark, startTimer, writeResults } from "./lib.js";
import { clipLikeVectors, clusteredVectors, makeRandom } from "./vectors.js";

const ROWS = Number(process.env.QUANT_ROWS ?? 100_000);
const DIMENSION = 512;
const K = 10;
const QUERIES = 64;
const CLUSTERS = 150;
const SEED = 42;
const SERIES = [
  { share: 1, warmup: 5, rounds: 60 },
  { share: 0.1, warmup: 20, rounds: 300 },
  { share: 0.01, warmup: 50, rounds: 1000 },
];
const GETPOINT_ROWS = 2_000;

interface Summary {
  p50_ms: number;
  p99_ms: number;
  mean_ms: number;
  /** The fastest call: on a busy machine, the nearest to what a quiet one does. */
  min_ms: number;
}

function summarise(samples: number[]): Summary {
  return {
    p50_ms: round(percentile(samples, 50), 3),
    p99_ms: round(percentile(samples, 99), 3),
    mean_ms: round(samples.reduce((a, b) => a + b, 0) / Math.max(1, samples.length), 3),
    min_ms: round(Math.min(...samples), 3),
  };
}

/** A fresh ascending subset of rows 0..ROWS-1, each row kept with probability `share`. */
function subset(random: () => number, share: number): Int32Array {
  const out = new Int32Array(Math.ceil(ROWS * share * 1.2) + 64);
  let n = 0;
  for (let r = 0; r < ROWS && n < out.length; r++) if (random() < share) out[n++] = r;
  return out.slice(0, n);
}

function mib(bytes: number): number {
  return round(bytes / 2 ** 20, 1);
}

async function measureSet(name: string, data: { vectors: Float32Array[]; queries: Float32Array[] }) {
  const float = await VectorMatrix.create(DIMENSION, ROWS);
  const int8 = await QuantisedMatrix.create(DIMENSION, ROWS);
  data.vectors.forEach((v, r) => float.set(r, v));
  const quantising = startTimer();
  data.vectors.forEach((v, r) => int8.set(r, v));
  const quantiseMs = quantising();
  const random = makeRandom(SEED + 1);
  const every = Int32Array.from({ length: ROWS }, (_, i) => i);
  const results = [];
  for (const { share, warmup, rounds } of SERIES) {
    const floatMs: number[] = [];
    const int8Ms: number[] = [];
    const scanOnlyMs: number[] = [];
    const cpuMs: number[][] = [[], [], []];
    let hits = 0;
    let wanted = 0;
    let rows: Int32Array = every;
    for (let r = 0; r < warmup + rounds; r++) {
      const query = data.queries[r % data.queries.length];
      if (share < 1) rows = subset(random, share);
      let exact: TopK | undefined;
      let quantised: TopK | undefined;
      const runs = [
        () => (exact = share === 1 ? float.topKAll(query, K, ROWS) : float.topK(query, K, rows)),
        () => {
          const depth = rerankDepth(K, rows.length);
          const candidates = share === 1 ? int8.topKAll(query, depth, ROWS) : int8.topK(query, depth, rows);
          quantised = rerank(float, query, K, candidates);
        },
        () => {
          const depth = rerankDepth(K, rows.length);
          if (share === 1) int8.topKAll(query, depth, ROWS);
          else int8.topK(query, depth, rows);
        },
      ];
      const samples = [floatMs, int8Ms, scanOnlyMs];
      for (let s = 0; s < runs.length; s++) {
        const which = (s + r) % runs.length;
        const elapsed = startTimer();
        const cpu = process.cpuUsage();
        runs[which]();
        const ms = elapsed();
        const used = process.cpuUsage(cpu);
        if (r >= warmup) {
          samples[which].push(ms);
          cpuMs[which].push((used.user + used.system) / 1000);
        }
      }
      if (r >= warmup) {
        const got = new Set(quantised!.rows);
        for (const row of exact!.rows) if (got.has(row)) hits++;
        wanted += exact!.rows.length;
      }
    }
    const f = summarise(floatMs);
    const q = summarise(int8Ms);
    results.push({
      set: name,
      share,
      rows_scanned: share === 1 ? ROWS : Math.round(ROWS * share),
      rounds,
      float32: f,
      int8_rerank: q,
      int8_scan_only: summarise(scanOnlyMs),
      // CPU time of the call itself: on a shared machine, wall time also counts the waits for a core.
      cpu_p50_ms: {
        float32: round(percentile(cpuMs[0], 50), 3),
        int8_rerank: round(percentile(cpuMs[1], 50), 3),
        int8_scan_only: round(percentile(cpuMs[2], 50), 3),
      },
      speedup_p50: round(f.p50_ms / q.p50_ms, 2),
      recall_at_10: round(hits / wanted, 4),
    });
    console.log(
      `quantised: ${name} ${share * 100}%: float32 p50 ${f.p50_ms} ms, int8+rerank ${q.p50_ms} ms, ` +
        `recall@10 ${round(hits / wanted, 4)}`,
    );
  }
  float.dispose();
  int8.dispose();
  return { results, quantise_ms_per_100k: round((quantiseMs * 100_000) / ROWS, 0) };
}

/** Microseconds per hnswlib getPoint of a 512-d vector, against re-ranking 40 rows from the matrix. */
async function measureGetPoint(vectors: Float32Array[]) {
  const graph = new hnswlib.HierarchicalNSW("ip", DIMENSION);
  graph.initIndex({ maxElements: GETPOINT_ROWS, m: 16, efConstruction: 16 });
  for (let i = 0; i < GETPOINT_ROWS; i++) graph.addPoint(Array.from(vectors[i]), i);
  const matrix = await VectorMatrix.create(DIMENSION, GETPOINT_ROWS);
  for (let i = 0; i < GETPOINT_ROWS; i++) matrix.set(i, vectors[i]);
  const random = makeRandom(SEED + 2);
  const calls = 4_000;
  let sink = 0;
  const gp = startTimer();
  for (let i = 0; i < calls; i++) sink += graph.getPoint(Math.floor(random() * GETPOINT_ROWS))[0];
  const getPointUs = (gp() * 1000) / calls;
  const depth = rerankDepth(K, ROWS);
  const rows = Int32Array.from({ length: depth }, () => Math.floor(random() * GETPOINT_ROWS));
  const out = new Float32Array(depth);
  const rounds = 2_000;
  const dt = startTimer();
  for (let i = 0; i < rounds; i++) matrix.dot(vectors[i % GETPOINT_ROWS], rows, out);
  const dotUs = (dt() * 1000) / rounds;
  matrix.dispose();
  if (Number.isNaN(sink)) console.log("unreachable");
  return {
    getpoint_us_per_vector: round(getPointUs, 1),
    rerank_candidates: depth,
    rerank_via_getpoint_ms: round((getPointUs * depth) / 1000, 2),
    rerank_via_matrix_dot_ms: round(dotUs / 1000, 3),
  };
}

await runBenchmark("quantised", async () => {
  const environment = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: os.cpus()[0]?.model ?? "unknown",
    cores: os.cpus().length,
    load_average_at_start: os.loadavg().map((x) => round(x)),
  };
  const sets = [];
  const setup = { count: ROWS, dimension: DIMENSION, clusters: CLUSTERS, queries: QUERIES, seed: SEED };
  const clustered = clusteredVectors(setup);
  const getPoint = await measureGetPoint(clustered.vectors);
  console.log(`quantised: hnswlib getPoint ${getPoint.getpoint_us_per_vector} us per vector`);
  sets.push(await measureSet("clustered", clustered));
  sets.push(await measureSet("clip-like", clipLikeVectors(setup)));

  const int8Bytes = int8Stride(DIMENSION) + 4;
  const memory = [
    { scan: "float32", bytes_per_image: DIMENSION * 4 },
    { scan: "int8 (codes + scale)", bytes_per_image: int8Bytes },
  ].map((m) => ({ ...m, mib_per_100k: mib(m.bytes_per_image * 1e5), mib_per_1m: mib(m.bytes_per_image * 1e6) }));
  const rows = sets.flatMap((s) => s.results);
  const json = {
    benchmark: "quantised",
    environment,
    config: { rows: ROWS, dimension: DIMENSION, k: K, queries: QUERIES, clusters: CLUSTERS, series: SERIES },
    quantise_ms_per_100k: Object.fromEntries(sets.map((s, i) => [i === 0 ? "clustered" : "clip-like", s.quantise_ms_per_100k])),
    results: rows,
    memory,
    rerank_source: getPoint,
  };
  const cell = (s: Summary) => `${s.p50_ms} / ${s.p99_ms}`;
  const markdown = [
    "# Exact scan: float32 rows vs int8 rows + float32 re-rank",
    "",
    `- date: ${environment.date}; node ${environment.node}; ${environment.cpu} x ${environment.cores} cores; ` +
      `load average at start ${environment.load_average_at_start.join(", ")}`,
    `- ${ROWS} x ${DIMENSION}, top ${K}, ${QUERIES} queries in turn; subsets drawn fresh each round, ascending; ` +
      `int8 re-ranks the best ${rerankDepth(K, ROWS)} candidates by float32 inner product`,
    "- recall@10: share of the float32 scan's top 10 that int8 + re-rank returns, over every timed query",
    "- CPU ms: process CPU time during the call (process.cpuUsage, 1 us steps); wall time on a shared machine also counts waiting for a core",
    "",
    markdownTable(
      [
        "set",
        "rows scanned",
        "float32 p50 / p99 ms",
        "int8 + re-rank p50 / p99 ms",
        "int8 scan alone",
        "speed-up p50",
        "fastest ms: float32 / int8 + re-rank",
        "CPU ms p50: float32 / int8 + re-rank",
        "recall@10",
      ],
      rows.map((r) => [
        r.set,
        `${r.rows_scanned} (${r.share * 100}%)`,
        cell(r.float32),
        cell(r.int8_rerank),
        cell(r.int8_scan_only),
        `${r.speedup_p50}x`,
        `${r.float32.min_ms} / ${r.int8_rerank.min_ms}`,
        `${r.cpu_p50_ms.float32} / ${r.cpu_p50_ms.int8_rerank}`,
        r.recall_at_10,
      ]),
    ),
    "",
    "Memory of the scan matrix:",
    "",
    markdownTable(
      ["scan", "bytes per image", "MiB per 100k", "MiB per 1M"],
      memory.map((m) => [m.scan, m.bytes_per_image, m.mib_per_100k, m.mib_per_1m]),
    ),
    "",
    `Re-rank source: hnswlib's getPoint takes ${getPoint.getpoint_us_per_vector} us per vector ` +
      `(${getPoint.rerank_via_getpoint_ms} ms for ${getPoint.rerank_candidates} candidates) against ` +
      `${getPoint.rerank_via_matrix_dot_ms} ms from the float32 matrix, so the float32 rows stay.`,
    `Quantising: ${sets.map((s, i) => `${i === 0 ? "clustered" : "clip-like"} ${s.quantise_ms_per_100k} ms`).join(", ")} per 100k rows.`,
  ].join("\n");
  const written = await writeResults("quantised", json, markdown);
  console.log(markdown);
  console.log(`wrote ${written.join(", ")}`);
});
