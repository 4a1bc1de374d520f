/**
 * The planner on the filter index's bitmaps (rankSlots), in process, at 100,000 x 512 clustered
 * unit vectors, k = 10: p50/p99 and recall@10 per selectivity, for filters that keep a random
 * share of the images (0.1% to 90%) and for filters that keep the share farthest from the
 * query (the hard case for a graph walk), beside plain HNSW at the planner's ef (the
 * unfiltered figure a filtered search is held to) and, per share, each path the planner can
 * take forced on its own (exact scan, filtered walk, over-fetch), so the thresholds in
 * search-service.ts can be read off one run.
 *
 * The index is built once and kept as a snapshot under --cache (default
 * $TMPDIR/glimpse-bench-filtered-<count>), so later runs load it instead.
 *
 * With --restart (instead of the searches): time to load a snapshot and the loading process's
 * RSS (after load and at its peak), for the snapshot of the vectors alone against the same
 * snapshot carrying the filter index of those images (tags, owner, names: what the app saves),
 * each load in a fresh child process, alternating, --repeats times each.
 *
 *   node --import tsx bench/filtered.ts [--count 100000] [--queries 200] [--paths exact,exact32,walk,overfetch] [--cache DIR] [--write]
 *   node --import tsx bench/filtered.ts --restart [--repeats 3]
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import roaring from "roaring";
import {
  filteredEf,
  MAX_EF,
  overfetchDepth,
  rankSlots,
  type RankOptions,
} from "../src/search/search-service.js";
import { FilterIndex } from "../src/search/filter-index.js";
import { VectorIndex } from "../src/vector/vector-index.js";
import {
  environmentMarkdown,
  markdownTable,
  round,
  runBenchmark,
  runEnvironment,
  scoresOf,
  startTimer,
  summarise,
  writeResults,
} from "./lib.js";
import { clusteredVectors, makeRandom } from "./vectors.js";

const { values: flags } = parseArgs({
  options: {
    count: { type: "string", default: "100000" },
    queries: { type: "string", default: "200" },
    cache: { type: "string" },
    paths: { type: "string" },
    write: { type: "boolean", default: false },
    restart: { type: "boolean", default: false },
    repeats: { type: "string", default: "3" },
    "load-child": { type: "string" },
  },
});
const COUNT = Number(flags.count);
const QUERIES = Number(flags.queries);
const DIMENSION = 512;
const CLUSTERS = 150;
const K = 10;
const WARMUP = 20;
const MODEL_ID = "bench-512";
const OPTIONS: RankOptions = { ef: 64, exactMax: 20_000 };
const UNIFORM = [0.001, 0.01, 0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.9];
const FARTHEST = [0.01, 0.03, 0.1, 0.5, 0.9];
const ID_BASE = 1n << 40n;
const idOf = (i: number) => ID_BASE + BigInt(i);

/** Positions of the k best scores among those `keep` passes, best first. */
function topK(scores: Float32Array, keep: (p: number) => boolean): number[] {
  const best: number[] = [];
  for (let p = 0; p < scores.length; p++) {
    if (!keep(p)) continue;
    if (best.length === K && scores[p] <= scores[best[K - 1]]) continue;
    let at = best.length < K ? best.length : K - 1;
    best[at] = p;
    while (at > 0 && scores[best[at - 1]] < scores[p]) {
      best[at] = best[at - 1];
      best[--at] = p;
    }
  }
  return best;
}

const cacheDir = () => flags.cache ?? path.join(os.tmpdir(), `glimpse-bench-filtered-${COUNT}`);

async function openIndex(vectors: Float32Array[]): Promise<VectorIndex> {
  const dir = cacheDir();
  if (existsSync(path.join(dir, "snapshot.json"))) {
    const t = startTimer();
    const loaded = await VectorIndex.loadSnapshot(dir, { modelId: MODEL_ID, dimension: DIMENSION });
    if (loaded && loaded.size === COUNT) {
      console.log(`index loaded from ${dir} in ${round(t() / 1000, 1)} s`);
      return loaded;
    }
    loaded?.dispose();
  }
  const index = await VectorIndex.create({ modelId: MODEL_ID, dimension: DIMENSION, initialCapacity: COUNT });
  const t = startTimer();
  for (let i = 0; i < COUNT; i++) {
    index.upsert(idOf(i), vectors[i]);
    if ((i + 1) % 20_000 === 0) console.log(`  built ${i + 1} / ${COUNT} (${round(t() / 1000, 0)} s)`);
  }
  await index.writeSnapshot(dir);
  console.log(`index built in ${round(t() / 1000, 1)} s, kept in ${dir}`);
  return index;
}

interface Case {
  label: string;
  share: number;
  farthest: boolean;
  /** Per query: the bitmap of kept slots and the true top k (positions). */
  bitmaps: roaring.RoaringBitmap32[];
  truth: number[][];
}

type Method = "planner" | "exact" | "exact32" | "walk" | "overfetch";

/** The child's side of --restart: load the snapshot in `dir` as the IndexKeeper does, report. */
async function loadChild(dir: string): Promise<void> {
  const t = startTimer();
  const index = await VectorIndex.loadSnapshot(dir, { modelId: MODEL_ID, dimension: DIMENSION });
  const vectorsMs = t();
  const bytes = index!.attachments.get("filters");
  index!.attachments.clear();
  const filters = bytes ? await FilterIndex.deserialize(bytes, index!.slots) : undefined;
  const ms = t();
  globalThis.gc?.();
  const report = {
    ms: round(ms),
    vectors_ms: round(vectorsMs),
    vectors: index!.size,
    filtered: filters?.size ?? 0,
    rss_mib: round(process.memoryUsage().rss / 2 ** 20, 0),
    max_rss_mib: round(process.resourceUsage().maxRSS / 1024, 0),
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

/** Attributes shaped like the app's for image i: a few tags, one owner, a file name. */
function attributesOf(i: number, random: () => number) {
  const tags = ["pct01", "pct1", "pct10", "pct50"].filter((_, bit) => random() < [0.001, 0.01, 0.1, 0.5][bit]);
  return {
    ownerId: "00000000-0000-0000-0000-000000000001",
    isPublic: true,
    indexed: true,
    tagTerms: tags,
    nsfwLevel: 0,
    postId: null,
    modelId: null,
    modelVersionId: null,
    username: "",
    classNames: [],
    createdMs: 1_760_000_000_000 + i * 1000,
    fileName: `bench-${idOf(i)}.jpg`,
    tags,
  };
}

/** --restart: snapshot load time and RSS, vectors alone against vectors and filter index. */
async function restart(): Promise<void> {
  const environment = await runEnvironment();
  const { vectors } = clusteredVectors({ count: COUNT, dimension: DIMENSION, clusters: CLUSTERS, queries: 1, seed: 42 });
  const index = await openIndex(vectors);
  vectors.length = 0;
  const withFilters = `${cacheDir()}-with-filters`;
  const filters = new FilterIndex();
  const random = makeRandom(3);
  for (let i = 0; i < COUNT; i++) filters.set(index.slot(idOf(i))!, attributesOf(i, random));
  await rm(withFilters, { recursive: true, force: true });
  await index.writeSnapshot(withFilters, { filters: filters.serialize(index.slots) });
  index.dispose();
  const runs: { snapshot: string; ms: number; vectors_ms: number; rss_mib: number; max_rss_mib: number }[] = [];
  for (let r = 0; r < Number(flags.repeats); r++) {
    for (const [label, dir] of [["vectors alone", cacheDir()], ["vectors + filter index", withFilters]] as const) {
      const out = execFileSync(process.execPath, ["--expose-gc", "--import", "tsx", "bench/filtered.ts", "--load-child", dir], {
        encoding: "utf8",
        maxBuffer: 1 << 20,
      });
      const report = JSON.parse(out.trim().split("\n").at(-1)!);
      console.log(label, report);
      runs.push({ snapshot: label, ...report });
    }
  }
  await rm(withFilters, { recursive: true, force: true });
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const rows = ["vectors alone", "vectors + filter index"].map((label) => {
    const mine = runs.filter((x) => x.snapshot === label);
    return [label, median(mine.map((x) => x.ms)), mine.map((x) => x.ms).join(", "), median(mine.map((x) => x.rss_mib)), median(mine.map((x) => x.max_rss_mib))];
  });
  const markdown = [
    "# Restart from a snapshot: vectors alone against vectors and filter index",
    "",
    environmentMarkdown(environment),
    `- ${COUNT} x ${DIMENSION} vectors; the filter index holds each image's owner, visibility, tags (0.1/1/10/50% shares), created time, file name`,
    `- each load in a fresh process (VectorIndex.loadSnapshot, then FilterIndex.deserialize as IndexKeeper.open does), ${flags.repeats} times each, alternating`,
    "",
    markdownTable(["snapshot", "load ms (median)", "runs ms", "RSS after load MiB", "peak RSS MiB"], rows),
  ].join("\n");
  console.log(markdown);
  if (flags.write) console.log(`wrote ${(await writeResults("search-restart", { benchmark: "search-restart", environment, runs }, markdown)).join(", ")}`);
}

if (flags["load-child"]) {
  await loadChild(flags["load-child"]);
} else if (flags.restart) {
  await runBenchmark("bench:filtered --restart", restart);
} else await runBenchmark("bench:filtered", async () => {
  const environment = await runEnvironment();
  console.log(`generating ${COUNT} x ${DIMENSION} vectors in ${CLUSTERS} clusters, ${QUERIES} queries`);
  const { vectors, queries } = clusteredVectors({ count: COUNT, dimension: DIMENSION, clusters: CLUSTERS, queries: QUERIES, seed: 42 });
  const index = await openIndex(vectors);
  const slotOf = Int32Array.from({ length: COUNT }, (_, i) => index.slot(idOf(i))!);
  const positionOfId = (id: bigint) => Number(id - ID_BASE);

  console.log("exact truth: plain-JS scan per query");
  const random = makeRandom(11);
  // Random filters: one kept set per share, as a tag would be.
  const uniformSets = UNIFORM.map((share) => {
    const keep = new Uint8Array(COUNT);
    for (let i = 0; i < COUNT; i++) if (random() < share) keep[i] = 1;
    const members: number[] = [];
    for (let i = 0; i < COUNT; i++) if (keep[i]) members.push(slotOf[i]);
    return { keep, bitmap: new roaring.RoaringBitmap32(members) };
  });
  const cases: Case[] = [
    ...UNIFORM.map((share, si) => ({ label: `random ${share * 100}%`, share, farthest: false, bitmaps: [] as roaring.RoaringBitmap32[], truth: [] as number[][], si })),
    ...FARTHEST.map((share) => ({ label: `farthest ${share * 100}%`, share, farthest: true, bitmaps: [] as roaring.RoaringBitmap32[], truth: [] as number[][], si: -1 })),
  ];
  const unfilteredTruth: number[][] = [];
  for (const q of queries) {
    const scores = scoresOf(q, vectors);
    unfilteredTruth.push(topK(scores, () => true));
    const order = Int32Array.from({ length: COUNT }, (_, i) => i).sort((a, b) => scores[a] - scores[b]);
    for (const c of cases as (Case & { si: number })[]) {
      if (!c.farthest) {
        const { keep, bitmap } = uniformSets[c.si];
        c.bitmaps.push(bitmap);
        c.truth.push(topK(scores, (p) => keep[p] === 1));
      } else {
        const kept = order.subarray(0, Math.round(COUNT * c.share));
        const keep = new Uint8Array(COUNT);
        for (const p of kept) keep[p] = 1;
        c.bitmaps.push(new roaring.RoaringBitmap32(Array.from(kept, (p) => slotOf[p])));
        c.truth.push(topK(scores, (p) => keep[p] === 1));
      }
    }
  }

  const methods = ["planner", ...(flags.paths ? flags.paths.split(",") : [])] as Method[];
  const run = (method: Method, bitmap: roaring.RoaringBitmap32, q: Float32Array) => {
    if (method === "planner") return rankSlots(index, q, K, bitmap, OPTIONS);
    if (method === "exact") return rankSlots(index, q, K, bitmap, { ...OPTIONS, exactMax: COUNT, exactShare: 1 });
    if (method === "exact32") return { plan: "exact32", neighbours: index.searchExactSlots(q, K, new Int32Array(bitmap.toUint32Array().buffer), true) };
    if (method === "walk") return rankSlots(index, q, K, bitmap, { ...OPTIONS, exactMax: 0, overfetchMax: 0 });
    return rankSlots(index, q, K, bitmap, { ...OPTIONS, exactMax: 0, overfetchMax: MAX_EF });
  };
  const series = [
    { label: "no filter", method: "hnsw" as const, c: null as Case | null },
    ...cases.flatMap((c) => methods.map((method) => ({ label: c.label, method, c }))),
  ].map((s) => ({ ...s, ms: [] as number[], cpu: [] as number[], recall: 0, plans: new Map<string, number>() }));
  console.log(`${series.length} series x ${QUERIES} queries, round-robin`);
  for (let r = -WARMUP; r < QUERIES; r++) {
    for (const [si, s] of series.entries()) {
      const qi = (((r + si * 7) % QUERIES) + QUERIES) % QUERIES;
      const q = queries[qi];
      const cpu = process.cpuUsage();
      const t = startTimer();
      const found =
        s.c === null ? await index.searchHnsw(q, K, OPTIONS.ef) : await run(s.method as Method, s.c.bitmaps[qi], q);
      const ms = t();
      const used = process.cpuUsage(cpu);
      if (r < 0) continue;
      s.cpu.push((used.user + used.system) / 1000);
      const neighbours = Array.isArray(found) ? found : found.neighbours;
      const truth = s.c === null ? unfilteredTruth[qi] : s.c.truth[qi];
      const want = new Set(truth);
      s.recall += neighbours.filter((n) => want.has(positionOfId(n.id))).length / Math.max(1, truth.length);
      s.ms.push(ms);
      const plan = Array.isArray(found) ? "hnsw" : found.plan;
      s.plans.set(plan, (s.plans.get(plan) ?? 0) + 1);
    }
  }
  const base = summarise(series[0].ms).p50_ms;
  const cpuBase = summarise(series[0].cpu).p50_ms;
  const rows = series.map((s) => {
    const latency = summarise(s.ms);
    const share = s.c?.share ?? 1;
    return {
      filter: s.label,
      method: s.method,
      plans: [...s.plans].map(([p, n]) => (s.plans.size > 1 ? `${p} ${n}` : p)).join(", "),
      ef: s.c ? filteredEf(OPTIONS.ef, K, share) : OPTIONS.ef,
      overfetch: s.c ? overfetchDepth(K, share) : null,
      recall_at_10: round(s.recall / s.ms.length, 3),
      latency,
      cpu: summarise(s.cpu),
      over_unfiltered: round(latency.p50_ms / base, 2),
      cpu_over_unfiltered: round(summarise(s.cpu).p50_ms / cpuBase, 2),
    };
  });
  const markdown = [
    "# Filtered search in process (rankSlots on slot bitmaps)",
    "",
    environmentMarkdown(environment),
    `- ${COUNT} x ${DIMENSION} unit vectors around ${CLUSTERS} centres, ${QUERIES} queries drawn alike, k = ${K}; ` +
      `planner ef ${OPTIONS.ef}, exactMax ${OPTIONS.exactMax}; ${WARMUP} warm-up then ${QUERIES} measured rounds, round-robin`,
    "- random: one fixed random set per share (as a tag); farthest: per query, the share of images least similar to it",
    "- CPU: the process's user + system time during the call (less moved by other load on the machine than wall time)",
    "",
    markdownTable(
      ["filter", "method", "plan", "recall@10", "p50 ms", "p99 ms", "p50 / unfiltered", "CPU p50 ms", "CPU p50 / unfiltered"],
      rows.map((r) => [r.filter, r.method, r.plans, r.recall_at_10, r.latency.p50_ms, r.latency.p99_ms, `${r.over_unfiltered}x`, r.cpu.p50_ms, `${r.cpu_over_unfiltered}x`]),
    ),
  ].join("\n");
  console.log(markdown);
  if (flags.write) {
    const written = await writeResults("search-filtered", { benchmark: "search-filtered", environment, config: { count: COUNT, queries: QUERIES, k: K, options: OPTIONS }, rows }, markdown);
    console.log(`wrote ${written.join(", ")}`);
  }
  index.dispose();
});
