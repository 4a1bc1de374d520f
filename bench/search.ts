/**
 * Vector search at 100,000 x 512 clustered unit vectors (k = 10), side by side in one run:
 *
 * 1. the index itself: build rate into VectorIndex (which is also the rebuild-from-vectors
 *    time), process RSS growth, snapshot write and load times and file sizes;
 * 2. plain HNSW per ef in {16, 32, 64, 128, 256}: recall@10 against an exact scan, p50/p99,
 *    beside the exact WASM scan of all vectors;
 * 3. filtered search over random allow-lists of 0.1% to 50% of the images: the query planner
 *    (rankCandidates, the path of filters PostgreSQL answers: exact scan of short lists — up to
 *    2,000 or EXACT_SHARE of the index —, else HNSW with an allow-list and a raised ef) against
 *    HNSW with the allow-list at ef 64 alone; the filter index's path (rankSlots) is measured by
 *    bench/filtered.ts;
 * 4. the real app over gRPC: 100,000 images and embeddings written straight into Postgres,
 *    start-up time (rebuild from the table, then from the snapshot the first run wrote at
 *    shutdown), and SearchImages by like_image_id (a stored vector: no model run), unfiltered
 *    and with tags matching about 1%, 10% and 50% of the images.
 *
 * Recall truth is a plain-JS scan of every vector, independent of the WASM kernel.
 *
 * 5. with --callers (alone, instead of 1-4): the app in-process over gRPC for an admin key and an
 *    ordinary account's key, unfiltered and with tags on 0.1%, 1%, 10% and 50% of the images,
 *    with --base <worktree> the same against that tree's code in the same run (each tree on a
 *    database of its own, seeded alike), and the filter index's bytes per image.
 *
 *   npm run bench:search [-- --quick]     (node --import tsx bench/search.ts; --quick: 10k, nothing written)
 *   git worktree add /tmp/glimpse-base <commit> && npm run bench:search -- --callers --base /tmp/glimpse-base
 */
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import v8 from "node:v8";
import vm from "node:vm";
import { createChannel, createClient, Metadata } from "nice-grpc";
import postgres from "postgres";
import { DEFAULT_ACCOUNT_ID } from "../src/accounts/account-service.js";
import { startApp, type App } from "../src/app.js";
import { loadOptions, type Options } from "../src/config/options.js";
import { AccountServiceDefinition } from "../src/gen/glimpse/account/v1/account_service.js";
import { ImageServiceDefinition, type ImageServiceClient } from "../src/gen/glimpse/image/v1/image_service.js";
import { createLogger, type LogFields } from "../src/logging/logger.js";
import { filteredEf, rankCandidates, scanExactly, type SearchPlan } from "../src/search/search-service.js";
import { VectorIndex } from "../src/vector/vector-index.js";
import { writeClipTestModel } from "../test/fixtures/clip-test-model.js";
import {
  createTempDatabase,
  createTempDir,
  environmentMarkdown,
  markdownTable,
  round,
  runBenchmark,
  runEnvironment,
  scoresOf,
  startTimer,
  type Cleanup,
  type RunEnvironment,
  summarise,
  watchProcessStalls,
  writeResults,
  type LatencySummary,
} from "./lib.js";
import { clusteredVectors, makeRandom } from "./vectors.js";

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    callers: { type: "boolean", default: false },
    base: { type: "string" },
  },
});
const QUICK = flags.quick;
const COUNT = QUICK ? 10_000 : 100_000;
const DIMENSION = 512;
const CLUSTERS = 150;
const QUERIES = QUICK ? 50 : 200;
const WARMUP_ROUNDS = QUICK ? 5 : 20;
const K = 10;
const EFS = [16, 32, 64, 128, 256] as const;
/** The planner's settings under test: the service defaults (GLIMPSE_SEARCH_EF, GLIMPSE_SEARCH_EXACT_MAX). */
const PLANNER = { ef: 64, exactMax: 20_000 };
/** Allow-list shares; 12% is the largest the planner scans exactly at 100k, 20% the narrowest here it walks. */
const SELECTIVITIES = [0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5] as const;
/** Snapshot writes and loads timed (the median is reported): single runs of seconds are at the machine's mercy. */
const SNAPSHOT_REPEATS = 3;
/** Distinct random allow-lists per share; query q uses list q mod this. */
const LISTS_PER_SHARE = 20;
/** Tags of the gRPC part and the share of images carrying each (drawn independently). */
const TAGS = [
  { tag: "pct1", share: 0.01 },
  { tag: "pct10", share: 0.1 },
  { tag: "pct50", share: 0.5 },
  { tag: "pct01", share: 0.001 },
] as const;
const MODEL_ID = "bench-512";
/** Image ids: position i in the data set is image ID_BASE + i. */
const ID_BASE = 1n << 40n;
const SEED_BATCH = 5_000;

const idOf = (i: number) => ID_BASE + BigInt(i);
const positionOf = (id: bigint | string) => Number(BigInt(id) - ID_BASE);
const mib = (bytes: number) => round(bytes / 2 ** 20, 1);

// A forced collection before each memory reading, so RSS growth is the index, not garbage.
v8.setFlagsFromString("--expose-gc");
const collectGarbage = vm.runInNewContext("gc") as () => void;
function rssAfterGc(): number {
  collectGarbage();
  collectGarbage();
  return process.memoryUsage().rss;
}

// ---------------------------------------------------------------------------------------------
// Exact truth (plain JS) and recall

/** Positions of the k best scores among `positions` (all when null), best first, skipping `exclude`. */
function topPositions(scores: Float32Array, k: number, positions: ArrayLike<number> | null, exclude = -1): number[] {
  const best: number[] = [];
  const n = positions ? positions.length : scores.length;
  for (let j = 0; j < n; j++) {
    const p = positions ? positions[j] : j;
    if (p === exclude) continue;
    if (best.length === k && scores[p] <= scores[best[k - 1]]) continue;
    let at = best.length < k ? best.length : k - 1;
    best[at] = p;
    while (at > 0 && scores[best[at - 1]] < scores[p]) {
      best[at] = best[at - 1];
      best[--at] = p;
    }
  }
  return best;
}

/** Share of the true top k found. */
function recall(found: ArrayLike<number>, truth: number[]): number {
  const want = new Set(truth);
  let hit = 0;
  for (let i = 0; i < found.length; i++) if (want.has(found[i])) hit++;
  return truth.length === 0 ? 1 : hit / truth.length;
}

function sameNeighbours(a: { id: bigint; cosine: number }[], b: { id: bigint; cosine: number }[]): boolean {
  return a.length === b.length && a.every((n, i) => n.id === b[i].id && n.cosine === b[i].cosine);
}

/** `count` distinct positions below `n`, ascending (seeded partial Fisher-Yates). */
function sample(n: number, count: number, random: () => number): Int32Array {
  const perm = new Int32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(random() * (n - i));
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  return perm.slice(0, count).sort();
}

/**
 * Runs `warmup` unmeasured then `queries` measured rounds; each round visits every series once.
 * In round r series s takes query (r + s * stride) mod Q, so consecutive calls never repeat a
 * query (no cache left warm by the series before) and each series sees every query once.
 */
async function interleave(
  seriesCount: number,
  queries: number,
  warmup: number,
  visit: (s: number, q: number, measured: boolean) => void | Promise<void>,
): Promise<void> {
  const stride = Math.max(1, Math.floor(queries / seriesCount));
  for (let r = -warmup; r < queries; r++) {
    for (let s = 0; s < seriesCount; s++) {
      const q = (((r + s * stride) % queries) + queries) % queries;
      await visit(s, q, r >= 0);
    }
  }
}

/** Latency samples, recall and result counts of one measured series. */
class Series {
  readonly ms: number[] = [];
  private recallSum = 0;
  private returnedSum = 0;
  plans = new Set<string>();

  add(ms: number, found: number[], truth: number[], plan?: string): void {
    this.ms.push(ms);
    this.recallSum += recall(found, truth);
    this.returnedSum += found.length;
    if (plan) this.plans.add(plan);
  }

  summary(): { recall_at_10: number; mean_results: number; latency: LatencySummary } {
    return {
      recall_at_10: round(this.recallSum / this.ms.length, 3),
      mean_results: round(this.returnedSum / this.ms.length, 2),
      latency: summarise(this.ms),
    };
  }
}

// ---------------------------------------------------------------------------------------------
// The app: captured start-up logs, seeding

/** Info lines of the app whose timings the benchmark reports (the rest stays silent). */
interface AppLog {
  lines: LogFields[];
  find(msg: string): LogFields | undefined;
}

function captureLog(): { log: AppLog; logger: ReturnType<typeof createLogger> } {
  const lines: LogFields[] = [];
  const logger = createLogger("info", (line) => {
    const record = JSON.parse(line) as LogFields;
    lines.push(record);
    if (record.level === "error" || record.level === "warn") process.stderr.write(line);
  });
  return { log: { lines, find: (msg) => [...lines].reverse().find((l) => l.msg === msg) }, logger };
}

/** Tag bit masks per image: bit t set when the image carries TAGS[t]. */
function tagMasks(count: number, random: () => number): Uint8Array {
  const masks = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    TAGS.forEach((t, bit) => {
      if (random() < t.share) masks[i] |= 1 << bit;
    });
  }
  return masks;
}

/**
 * Writes `vectors` as indexed public images of the default account, with their embeddings
 * (the trigger logs each to index_log), in batches of one `insert ... select` each; then
 * VACUUM ANALYZE and a CHECKPOINT. Returns the milliseconds it took.
 */
async function seedCatalogue(url: string, vectors: Float32Array[], masks: Uint8Array): Promise<number> {
  if (os.endianness() !== "LE") throw new Error("embeddings are stored little-endian; this writer assumes a little-endian host");
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const elapsed = startTimer();
  try {
    const tagCase = (bit: number) => sql`case when mask & ${1 << bit}::int <> 0 then ${TAGS[bit].tag} end`;
    for (let start = 0; start < vectors.length; start += SEED_BATCH) {
      const end = Math.min(vectors.length, start + SEED_BATCH);
      const ids: string[] = [];
      const batchMasks: number[] = [];
      const blob = new Float32Array((end - start) * DIMENSION);
      for (let i = start; i < end; i++) {
        ids.push(idOf(i).toString());
        batchMasks.push(masks[i]);
        blob.set(vectors[i], (i - start) * DIMENSION);
      }
      await sql.begin(async (tx) => {
        await tx`
          insert into images (id, owner_id, sha256, file_name, media_type, width, height, byte_size,
                              tags, tag_terms, visibility, index_status)
          select u.id, ${DEFAULT_ACCOUNT_ID}::uuid, md5(u.id::text) || md5('glimpse-' || u.id::text),
                 'bench-' || u.id || '.jpg', 'image/jpeg', 512, 512, 100000, t.tags, t.tags, 1, 2
          from unnest(${ids}::bigint[], ${batchMasks}::int[]) as u(id, mask)
          cross join lateral (
            select array_remove(array[${tagCase(0)}, ${tagCase(1)}, ${tagCase(2)}, ${tagCase(3)}]::text[], null) as tags
          ) t`;
        await tx`
          insert into embeddings (image_id, model_id, dimension, vector)
          select u.id, ${MODEL_ID}, ${DIMENSION},
                 substring(${Buffer.from(blob.buffer)}::bytea from ((u.n - 1) * ${DIMENSION * 4} + 1)::int for ${DIMENSION * 4})
          from unnest(${ids}::bigint[]) with ordinality as u(id, n)`;
      });
    }
    await sql`vacuum (analyze) images`;
    await sql`vacuum (analyze) embeddings`;
    await sql`checkpoint`;
    return elapsed();
  } finally {
    await sql.end();
  }
}

async function snapshotFiles(dir: string): Promise<{ graph: number; vectors: number; ids: number; total: number }> {
  const manifest = JSON.parse(await readFile(path.join(dir, "snapshot.json"), "utf8")) as {
    files: Record<"graph" | "vectors" | "ids", { bytes: number }>;
  };
  const { graph, vectors, ids } = manifest.files;
  return { graph: graph.bytes, vectors: vectors.bytes, ids: ids.bytes, total: graph.bytes + vectors.bytes + ids.bytes };
}

type Summary = ReturnType<Series["summary"]>;

/**
 * Plain-language comparisons drawn from this run's figures (p50s), so the summary cannot drift
 * from the tables: where the exact path stops beating HNSW + allow-list, what the planner's
 * raised ef buys, and how much of a gRPC search is not the vector work.
 */
function readFigures(
  ef: ({ method: string; ef: number | null } & Summary)[],
  filtered: ({ selectivity_pct: number; candidates: number; method: string } & Summary)[],
  grpc: ({ series: string; candidates: number; plan: string } & Summary)[],
): string[] {
  const lines: string[] = [];
  const pairs = new Map<number, { planner?: (typeof filtered)[number]; hnsw?: (typeof filtered)[number] }>();
  for (const r of filtered) {
    const pair = pairs.get(r.selectivity_pct) ?? {};
    if (r.method.startsWith("planner")) pair.planner = r;
    else pair.hnsw = r;
    pairs.set(r.selectivity_pct, pair);
  }
  const exactRows = [...pairs.values()].filter((p) => p.planner?.method.includes("exact") && p.hnsw);
  const wins = (p: (typeof exactRows)[number]) => p.planner!.latency.p50_ms < p.hnsw!.latency.p50_ms;
  const firstLoss = exactRows.findIndex((p) => !wins(p));
  const exactWins = firstLoss < 0 ? exactRows : exactRows.slice(0, firstLoss);
  const exactLoses = exactRows.filter((p) => !wins(p));
  if (exactWins.length > 0) {
    const widest = exactWins.at(-1)!;
    lines.push(
      `The exact path is faster than HNSW + allow-list at every share up to ${widest.planner!.selectivity_pct}% ` +
        `(${widest.planner!.candidates} candidates: ${widest.planner!.latency.p50_ms} vs ${widest.hnsw!.latency.p50_ms} ms p50), ` +
        `and far faster on narrow lists, where a filtered graph walk must pass many rejected nodes ` +
        `(${exactRows[0].planner!.selectivity_pct}%: ${exactRows[0].planner!.latency.p50_ms} vs ${exactRows[0].hnsw!.latency.p50_ms} ms, ` +
        `HNSW recall ${exactRows[0].hnsw!.recall_at_10}).`,
    );
  }
  if (exactLoses.length > 0) {
    lines.push(
      "Where the planner still scans exactly but HNSW + allow-list at ef 64 is faster: " +
        exactLoses
          .map((p) => `${p.planner!.selectivity_pct}% (${p.planner!.latency.p50_ms} vs ${p.hnsw!.latency.p50_ms} ms, HNSW recall ${p.hnsw!.recall_at_10})`)
          .join(", ") +
        "; a cut-off by share of the index as well as by count would keep the exact path where it wins.",
    );
  }
  const walks = [...pairs.values()].filter((p) => p.planner?.method.includes("hnsw_filtered") && p.hnsw);
  if (walks.length > 0) {
    lines.push(
      "The planner's raised ef on the HNSW path: " +
        walks
          .map(
            (p) =>
              `${p.planner!.selectivity_pct}%: ${p.planner!.method.replace(/^planner \(hnsw_filtered, /, "").replace(/\)$/, "")} ` +
              `${p.planner!.latency.p50_ms} ms, recall ${p.planner!.recall_at_10} vs ef 64 ${p.hnsw!.latency.p50_ms} ms, recall ${p.hnsw!.recall_at_10}`,
          )
          .join("; ") +
        ".",
    );
  }
  const hnsw64 = ef.find((r) => r.method === "HNSW" && r.ef === 64);
  const plain = grpc.find((r) => r.series === "no filter");
  if (hnsw64 && plain) {
    lines.push(
      `Unfiltered, the HNSW walk (ef 64) is ${hnsw64.latency.p50_ms} ms of a ${plain.latency.p50_ms} ms SearchImages call at p50; ` +
        "the rest is the call itself, the image lookup for like_image_id and loading the results' rows.",
    );
  }
  // What a filtered call adds beyond the unfiltered call's own overhead: the candidate query.
  const callOverhead = hnsw64 && plain ? plain.latency.p50_ms - hnsw64.latency.p50_ms : 0;
  for (const r of grpc.filter((g) => g.series !== "no filter")) {
    const share = (100 * r.candidates) / (plain?.candidates || r.candidates);
    const near = [...pairs.values()]
      .filter((p) => p.planner)
      .sort((a, b) => Math.abs(a.planner!.selectivity_pct - share) - Math.abs(b.planner!.selectivity_pct - share))[0];
    if (!near) continue;
    const added = r.latency.p50_ms - near.planner!.latency.p50_ms;
    lines.push(
      `${r.series} (${r.candidates} images, ${r.plan}): ${r.latency.p50_ms} ms over gRPC, ${round(added)} ms more than the planner ` +
        `alone at ${near.planner!.selectivity_pct}% in-process (${near.planner!.latency.p50_ms} ms); beyond the ` +
        `${round(callOverhead)} ms an unfiltered call adds to its walk, about ${round(Math.max(0, added - callOverhead))} ms is ` +
        "the query for the candidate ids.",
    );
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------
// 5. Callers: admin and ordinary keys, this tree beside a base tree

/** A tree whose app is measured: this one, or a worktree given with --base. */
interface Tree {
  label: string;
  startApp: typeof startApp;
  loadOptions: typeof loadOptions;
}

/**
 * SearchImages by like_image_id through gRPC in this process, for the admin key and for an
 * ordinary account's key (every image public: both see them all), unfiltered and with tags on
 * 0.1%, 1%, 10% and 50% of the images; per tree, each on its own database seeded alike, so
 * the base tree runs its own schema and code. Also the filter index's bytes per image.
 */
async function benchCallers(cleanup: Cleanup, environment: RunEnvironment): Promise<void> {
  const random = makeRandom(7);
  console.log(`generating ${COUNT} x ${DIMENSION} vectors in ${CLUSTERS} clusters`);
  const { vectors } = clusteredVectors({ count: COUNT, dimension: DIMENSION, clusters: CLUSTERS, queries: 1, seed: 42 });
  const masks = tagMasks(COUNT, random);
  const trees: Tree[] = [];
  if (flags.base) {
    const root = path.resolve(flags.base);
    const app = (await import(pathToFileURL(path.join(root, "src/app.ts")).href)) as { startApp: typeof startApp };
    const config = (await import(pathToFileURL(path.join(root, "src/config/options.ts")).href)) as { loadOptions: typeof loadOptions };
    trees.push({ label: `before (${flags.base})`, startApp: app.startApp, loadOptions: config.loadOptions });
  }
  trees.push({ label: "after (this tree)", startApp, loadOptions });

  // The filter index's size for these images (the app holds the same attributes).
  const { FilterIndex } = await import("../src/search/filter-index.js");
  const filters = new FilterIndex();
  const now = Date.now();
  for (let i = 0; i < COUNT; i++) {
    filters.set(i, {
      ownerId: DEFAULT_ACCOUNT_ID,
      isPublic: true,
      indexed: true,
      tagTerms: TAGS.filter((_, bit) => masks[i] & (1 << bit)).map((t) => t.tag),
      nsfwLevel: 0,
      postId: null,
      modelId: null,
      modelVersionId: null,
      username: "",
      classNames: [],
      createdMs: now - i * 1000,
      fileName: `bench-${idOf(i)}.jpg`,
      tags: TAGS.filter((_, bit) => masks[i] & (1 << bit)).map((t) => t.tag),
    });
  }
  const filterBytes = {
    in_memory_per_image: round(filters.memoryBytes() / COUNT, 1),
    snapshot_per_image: round(filters.serialize(COUNT).length / COUNT, 1),
  };

  const likePositions = sample(COUNT, QUERIES, random);
  for (let i = likePositions.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [likePositions[i], likePositions[j]] = [likePositions[j], likePositions[i]];
  }
  const filterSeries = [
    { label: "no filter", tags: [] as string[], members: null as Int32Array | null },
    ...[3, 0, 1, 2].map((bit) => {
      const out: number[] = [];
      for (let i = 0; i < COUNT; i++) if (masks[i] & (1 << bit)) out.push(i);
      return { label: `tag ${TAGS[bit].tag} (${TAGS[bit].share * 100}%)`, tags: [TAGS[bit].tag], members: Int32Array.from(out) };
    }),
  ];
  const truth = filterSeries.map(() => [] as number[][]);
  for (const p of likePositions) {
    const scores = scoresOf(vectors[p], vectors);
    filterSeries.forEach((f, fi) => truth[fi].push(topPositions(scores, K, f.members, p)));
  }
  const modelDir = await createTempDir(cleanup, "glimpse-bench-model-");
  await writeClipTestModel(modelDir, { dimension: DIMENSION });
  await writeFile(path.join(modelDir, "glimpse-model.json"), JSON.stringify({ id: MODEL_ID }));

  const rows: { tree: string; caller: string; filter: string; matching: number; recall_at_10: number; latency: LatencySummary }[] = [];
  const starts: Record<string, unknown>[] = [];
  for (const tree of trees) {
    const db = await createTempDatabase();
    cleanup.add(`drop database ${db.name}`, () => db.drop());
    const dataDir = await createTempDir(cleanup, "glimpse-bench-data-");
    const adminKey = `glk_bench${randomBytes(24).toString("base64url")}`;
    const options = tree.loadOptions({}, [], {
      dataDir,
      databaseUrl: db.url,
      grpcHost: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      logLevel: "info",
      shutdownGraceMs: 2000,
      model: modelDir,
      modelAutoPull: false,
      adminKey,
      rateLimitPerMinute: 1_000_000,
    });
    let app: App | undefined = await tree.startApp(options, { logger: captureLog().logger });
    cleanup.add(`stop ${tree.label}`, async () => app?.stop());
    await app.searchReady;
    await app.stop();
    console.log(`${tree.label}: seeding`);
    await seedCatalogue(db.url, vectors, masks);
    const { log, logger } = captureLog();
    const t = startTimer();
    app = await tree.startApp(options, { logger });
    await app.searchReady;
    const loaded = log.find("vector index loaded");
    starts.push({ tree: tree.label, search_ready_s: round(t() / 1000, 1), source: loaded?.source, vectors: loaded?.vectors, filtered: loaded?.filtered ?? "-" });
    const channel = createChannel(`127.0.0.1:${app.grpcPort}`);
    const admin: ImageServiceClient = createClient(ImageServiceDefinition, channel, {
      "*": { metadata: Metadata({ authorization: `Bearer ${adminKey}` }) },
    });
    const accounts = createClient(AccountServiceDefinition, channel, {
      "*": { metadata: Metadata({ authorization: `Bearer ${adminKey}` }) },
    });
    const { apiKeySecret } = await accounts.createAccount({ email: "ordinary@bench.test", username: "ordinary", createApiKey: true });
    const ordinary: ImageServiceClient = createClient(ImageServiceDefinition, channel, {
      "*": { metadata: Metadata({ authorization: `Bearer ${apiKeySecret}` }) },
    });
    const series = [
      ...filterSeries.map((f, fi) => ({ caller: "admin", client: admin, f, fi })),
      ...filterSeries.map((f, fi) => ({ caller: "ordinary", client: ordinary, f, fi })),
    ].map((x) => ({ ...x, stats: new Series() }));
    console.log(`${tree.label}: ${series.length} series x ${QUERIES}`);
    await interleave(series.length, QUERIES, WARMUP_ROUNDS, async (si, q, measured) => {
      const s = series[si];
      const timer = startTimer();
      const response = await s.client.searchImages({
        query: { $case: "likeImageId", value: idOf(likePositions[q]).toString() },
        limit: K,
        filter: s.f.tags.length > 0 ? { tags: s.f.tags } : undefined,
      });
      const ms = timer();
      if (measured) s.stats.add(ms, response.results.map((r) => positionOf(r.id)), truth[s.fi][q]);
    });
    for (const s of series) {
      const { recall_at_10, latency } = s.stats.summary();
      rows.push({ tree: tree.label, caller: s.caller, filter: s.f.label, matching: s.f.members?.length ?? COUNT, recall_at_10, latency });
    }
    channel.close();
    await app.stop();
    app = undefined;
  }

  const after = rows.filter((r) => r.tree === trees[trees.length - 1].label);
  const before = trees.length > 1 ? rows.filter((r) => r.tree === trees[0].label) : [];
  const json = { benchmark: "search-callers", environment, config: { count: COUNT, dimension: DIMENSION, queries: QUERIES, k: K, base: flags.base ?? null }, filter_index_bytes: filterBytes, starts, rows };
  const markdown = [
    "# Search by caller: admin and ordinary keys, before and after",
    "",
    environmentMarkdown(environment),
    `- ${COUNT} x ${DIMENSION} public images of the admin's account, SearchImages by like_image_id, limit ${K}, gRPC client in the server's process, ` +
      `one call in flight; ${WARMUP_ROUNDS} warm-up then ${QUERIES} measured rounds, round-robin over the series`,
    `- filter index for these images: ${filterBytes.in_memory_per_image} B per image in memory, ${filterBytes.snapshot_per_image} B per image in the snapshot`,
    "",
    markdownTable(["tree", "search ready s", "index from", "vectors", "with attributes"], starts.map((x) => [String(x.tree), String(x.search_ready_s), String(x.source), String(x.vectors), String(x.filtered)])),
    "",
    markdownTable(
      ["caller", "filter", "matching", ...(before.length ? ["before p50 ms", "before p99 ms", "before recall"] : []), "after p50 ms", "after p99 ms", "after recall", ...(before.length ? ["p50 before/after"] : [])],
      after.map((r, i) => {
        const b = before[i];
        return [
          r.caller,
          r.filter,
          r.matching,
          ...(b ? [b.latency.p50_ms, b.latency.p99_ms, b.recall_at_10] : []),
          r.latency.p50_ms,
          r.latency.p99_ms,
          r.recall_at_10,
          ...(b ? [`${round(b.latency.p50_ms / r.latency.p50_ms, 1)}x`] : []),
        ];
      }),
    ),
  ].join("\n");
  console.log(markdown);
  if (QUICK) return;
  const written = await writeResults("search-callers", json, markdown);
  console.log(`wrote ${written.join(", ")}`);
}

// ---------------------------------------------------------------------------------------------

await runBenchmark("bench:search", async (cleanup) => {
  const environment = await runEnvironment();
  if (flags.callers) return benchCallers(cleanup, environment);
  const loadBefore = os.loadavg().map((x) => round(x));
  const random = makeRandom(7);

  console.log(`generating ${COUNT} x ${DIMENSION} vectors in ${CLUSTERS} clusters, ${QUERIES} queries`);
  const { vectors, queries } = clusteredVectors({ count: COUNT, dimension: DIMENSION, clusters: CLUSTERS, queries: QUERIES, seed: 42 });
  const allIds = BigInt64Array.from({ length: COUNT }, (_, i) => idOf(i));

  // --- 1. Build, memory, snapshot ------------------------------------------------------------
  const rssBefore = rssAfterGc();
  let elapsed = startTimer();
  const index = await VectorIndex.create({ modelId: MODEL_ID, dimension: DIMENSION });
  for (let i = 0; i < COUNT; i++) {
    index.upsert(idOf(i), vectors[i]);
    if ((i + 1) % 20_000 === 0) console.log(`  built ${i + 1} / ${COUNT} (${(elapsed() / 1000).toFixed(0)} s)`);
  }
  const buildMs = elapsed();
  const rssBuilt = rssAfterGc();
  console.log(`index built: ${(buildMs / 1000).toFixed(1)} s`);

  const snapDir = path.join(await createTempDir(cleanup, "glimpse-bench-snapshot-"), "index");
  index.lastSeq = BigInt(COUNT);
  const writeRuns: number[] = [];
  for (let r = 0; r < SNAPSHOT_REPEATS; r++) {
    elapsed = startTimer();
    await index.writeSnapshot(snapDir); // replaces the previous one
    writeRuns.push(elapsed());
  }
  const files = await snapshotFiles(snapDir);

  const loadRuns: number[] = [];
  let rssLoadGrowth = 0;
  let sameAnswers = true;
  for (let r = 0; r < SNAPSHOT_REPEATS; r++) {
    const rssBeforeLoad = rssAfterGc();
    elapsed = startTimer();
    const loaded = await VectorIndex.loadSnapshot(snapDir, { modelId: MODEL_ID, dimension: DIMENSION });
    loadRuns.push(elapsed());
    if (!loaded || loaded.size !== COUNT) throw new Error(`snapshot loaded ${loaded?.size} vectors, wrote ${COUNT}`);
    if (r === 0) {
      rssLoadGrowth = rssAfterGc() - rssBeforeLoad;
      sameAnswers = true;
      for (const q of queries.slice(0, 20)) {
        sameAnswers &&= sameNeighbours(await loaded.searchHnsw(q, K, 64), await index.searchHnsw(q, K, 64));
      }
    }
    loaded.dispose();
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const writeMs = median(writeRuns);
  const loadMs = median(loadRuns);
  const matrixBytes = COUNT * DIMENSION * 4;
  const indexFacts = {
    vectors: COUNT,
    build_s: round(buildMs / 1000, 1),
    build_vectors_per_s: Math.round(COUNT / (buildMs / 1000)),
    rss_growth_build_mib: mib(rssBuilt - rssBefore),
    rss_growth_snapshot_load_mib: mib(rssLoadGrowth),
    float32_matrix_mib: mib(matrixBytes),
    snapshot_files_mib: { graph: mib(files.graph), vectors: mib(files.vectors), ids: mib(files.ids), total: mib(files.total) },
    snapshot_write_s: round(writeMs / 1000, 2),
    snapshot_write_runs_s: writeRuns.map((ms) => round(ms / 1000, 2)),
    snapshot_load_s: round(loadMs / 1000, 2),
    snapshot_load_runs_s: loadRuns.map((ms) => round(ms / 1000, 2)),
    rebuild_over_load: round(buildMs / loadMs, 1),
    loaded_index_answers_identically: sameAnswers,
  };
  console.log(indexFacts);

  // --- Exact truth ---------------------------------------------------------------------------
  console.log("exact truth: plain-JS scan of every vector per query");
  const lists = SELECTIVITIES.map((share) =>
    Array.from({ length: LISTS_PER_SHARE }, () => {
      const positions = sample(COUNT, Math.max(1, Math.round(COUNT * share)), random);
      return { positions, ids: BigInt64Array.from(positions, (p) => idOf(p)) };
    }),
  );
  const truth: number[][] = [];
  const filteredTruth: number[][][] = SELECTIVITIES.map(() => []);
  queries.forEach((q, qi) => {
    const scores = scoresOf(q, vectors);
    truth.push(topPositions(scores, K, null));
    SELECTIVITIES.forEach((_, si) => filteredTruth[si].push(topPositions(scores, K, lists[si][qi % LISTS_PER_SHARE].positions)));
  });

  // --- 2. ef sweep ---------------------------------------------------------------------------
  console.log(`ef sweep: ${EFS.join(", ")} and the exact kernel scan of all ${COUNT}`);
  const efSeries = [...EFS.map(() => new Series()), new Series()];
  const positions = (found: { id: bigint }[]) => found.map((n) => positionOf(n.id));
  await interleave(efSeries.length, QUERIES, WARMUP_ROUNDS, async (s, q, measured) => {
    const t = startTimer();
    const found = s < EFS.length ? await index.searchHnsw(queries[q], K, EFS[s]) : index.searchExact(queries[q], K, allIds);
    const ms = t();
    if (measured) efSeries[s].add(ms, positions(found), truth[q]);
  });
  const efResults = [
    ...EFS.map((ef, s) => ({ method: "HNSW", ef, ...efSeries[s].summary() })),
    { method: `exact scan of all ${COUNT} (WASM kernel, searchExact)`, ef: null, ...efSeries[EFS.length].summary() },
  ];

  // --- 3. Filtered ---------------------------------------------------------------------------
  console.log(`filtered: ${SELECTIVITIES.map((s) => `${s * 100}%`).join(", ")}, planner vs HNSW + allow-list at ef ${PLANNER.ef}`);
  // Beside the two methods, the id -> slot lookups alone (allowedSlots): both methods pay them.
  const filterSeries = SELECTIVITIES.flatMap((_, si) => [
    { si, method: "planner" as const, stats: new Series() },
    { si, method: "hnsw_filter" as const, stats: new Series() },
    { si, method: "lookup" as const, stats: new Series() },
  ]);
  await interleave(filterSeries.length, QUERIES, WARMUP_ROUNDS, async (s, q, measured) => {
    const { si, method, stats } = filterSeries[s];
    const list = lists[si][q % LISTS_PER_SHARE];
    const t = startTimer();
    let found: { id: bigint }[];
    let plan: SearchPlan = "hnsw_filtered";
    if (method === "lookup") {
      index.allowedSlots(list.ids);
      const ms = t();
      if (measured) stats.add(ms, [], []);
      return;
    }
    if (method === "planner") {
      const ranking = await rankCandidates(index, queries[q], K, list.ids, PLANNER);
      found = ranking.neighbours;
      plan = ranking.plan;
    } else {
      found = await index.searchHnsw(queries[q], K, PLANNER.ef, index.allowedSlots(list.ids));
    }
    const ms = t();
    if (measured) stats.add(ms, positions(found), filteredTruth[si][q], plan);
  });
  const lookupMs = (si: number) => filterSeries.find((f) => f.si === si && f.method === "lookup")!.stats.summary().latency;
  const filterResults = filterSeries.filter((f) => f.method !== "lookup").map(({ si, method, stats }) => {
    const share = SELECTIVITIES[si];
    const candidates = lists[si][0].ids.length;
    const plannerEf = filteredEf(PLANNER.ef, K, candidates / COUNT);
    const plan = [...stats.plans].join("/");
    return {
      selectivity_pct: share * 100,
      candidates,
      method: method === "planner" ? `planner (${plan}${plan === "hnsw_filtered" ? `, ef ${plannerEf}` : ""})` : `HNSW + allow-list, ef ${PLANNER.ef}`,
      ...stats.summary(),
      id_lookups_alone: lookupMs(si),
    };
  });
  index.dispose();

  // --- 4. The app over gRPC ------------------------------------------------------------------
  console.log("gRPC: seeding a scratch database");
  const db = await createTempDatabase();
  cleanup.add(`drop database ${db.name}`, () => db.drop());
  const dataDir = await createTempDir(cleanup, "glimpse-bench-data-");
  const modelDir = await createTempDir(cleanup, "glimpse-bench-model-");
  await writeClipTestModel(modelDir, { dimension: DIMENSION });
  await writeFile(path.join(modelDir, "glimpse-model.json"), JSON.stringify({ id: MODEL_ID }));
  // The default (admin) account's key; its rate limit well above what the benchmark sends.
  const adminKey = `glk_bench${randomBytes(24).toString("base64url")}`;
  const options: Options = loadOptions({}, [], {
    dataDir,
    databaseUrl: db.url,
    grpcHost: "127.0.0.1",
    grpcPort: 0,
    httpPort: 0,
    logLevel: "info",
    shutdownGraceMs: 2000,
    model: modelDir,
    modelAutoPull: false,
    adminKey,
    rateLimitPerMinute: 100_000,
  });

  let running: App | undefined;
  cleanup.add("stop app", async () => running?.stop());
  const start = async () => {
    const { log, logger } = captureLog();
    const rss = rssAfterGc();
    const t = startTimer();
    running = await startApp(options, { logger });
    const servingMs = t();
    await running.searchReady;
    const readyMs = t();
    const loadedLine = log.find("vector index loaded");
    return {
      app: running,
      log,
      facts: {
        serving_s: round(servingMs / 1000, 2),
        search_ready_s: round(readyMs / 1000, 2),
        index_source: loadedLine?.source,
        index_vectors: loadedLine?.vectors,
        index_open_s: typeof loadedLine?.ms === "number" ? round(loadedLine.ms / 1000, 2) : null,
        rss_growth_mib: mib(rssAfterGc() - rss),
      },
    };
  };
  const stop = async (app: App, log: AppLog) => {
    const t = startTimer();
    await app.stop();
    running = undefined;
    const written = log.find("index snapshot written");
    return {
      stop_s: round(t() / 1000, 2),
      snapshot_write_s: typeof written?.ms === "number" ? round(written.ms / 1000, 2) : null,
    };
  };

  // First start on the empty database migrates it.
  const first = await start();
  await stop(first.app, first.log);
  const masks = tagMasks(COUNT, random);
  const seedMs = await seedCatalogue(db.url, vectors, masks);
  console.log(`seeded ${COUNT} images + embeddings in ${(seedMs / 1000).toFixed(1)} s`);

  console.log("gRPC: start with no snapshot (rebuild from the embeddings table)");
  const cold = await start();
  if (cold.facts.index_vectors !== COUNT) throw new Error(`app indexed ${cold.facts.index_vectors} vectors, expected ${COUNT}`);
  const coldStop = await stop(cold.app, cold.log);
  const appSnapshot = await snapshotFiles(path.join(dataDir, "index", MODEL_ID));
  console.log("gRPC: restart (snapshot load)");
  const warm = await start();
  if (warm.facts.index_source !== "snapshot") throw new Error(`restart loaded the index from ${warm.facts.index_source}`);
  const startup = [
    { start: "first, no snapshot: rebuild from the embeddings table", ...cold.facts, ...coldStop },
    { start: "restart: snapshot written at the first run's shutdown", ...warm.facts },
  ];

  const channel = createChannel(`127.0.0.1:${warm.app.grpcPort}`);
  cleanup.add("close channel", async () => channel.close());
  const client: ImageServiceClient = createClient(ImageServiceDefinition, channel, {
    "*": { metadata: Metadata({ authorization: `Bearer ${adminKey}` }) },
  });
  const likePositions = sample(COUNT, QUERIES, random);
  // Shuffle so query order is not id order.
  for (let i = likePositions.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [likePositions[i], likePositions[j]] = [likePositions[j], likePositions[i]];
  }
  const tagged = TAGS.map((_, bit) => {
    const out: number[] = [];
    for (let i = 0; i < COUNT; i++) if (masks[i] & (1 << bit)) out.push(i);
    return Int32Array.from(out);
  });
  const grpcSeries = [
    { label: "no filter", tags: [] as string[], members: null as Int32Array | null },
    ...TAGS.map((t, bit) => ({ label: `tag ${t.tag}`, tags: [t.tag], members: tagged[bit] })),
  ].map((s) => ({ ...s, stats: new Series(), total: "" }));
  const grpcTruth = grpcSeries.map(() => [] as number[][]);
  for (const p of likePositions) {
    const scores = scoresOf(vectors[p], vectors);
    grpcSeries.forEach((s, si) => grpcTruth[si].push(topPositions(scores, K, s.members, p)));
  }
  console.log(`gRPC: SearchImages by like_image_id, ${grpcSeries.length} series x ${QUERIES}`);
  const stopWatching = watchProcessStalls();
  await interleave(grpcSeries.length, QUERIES, WARMUP_ROUNDS, async (s, q, measured) => {
    const series = grpcSeries[s];
    const t = startTimer();
    const response = await client.searchImages({
      query: { $case: "likeImageId", value: idOf(likePositions[q]).toString() },
      limit: K,
      filter: series.tags.length > 0 ? { tags: series.tags } : undefined,
    });
    const ms = t();
    series.total = response.total;
    if (measured) series.stats.add(ms, response.results.map((r) => positionOf(r.id)), grpcTruth[s][q]);
  });
  const stalls = stopWatching();
  const grpcResults = grpcSeries.map((s) => {
    const candidates = s.members ? s.members.length : COUNT;
    // The filter index's path (rankSlots): past the exact bound it over-fetches, exact when too few pass.
    const plan = s.members === null ? "hnsw" : scanExactly(candidates, COUNT, options.searchExactMax) ? "exact" : "hnsw_overfetch";
    return { series: s.label, candidates, plan, total_reported: s.total, ...s.stats.summary() };
  });
  const loadAfter = os.loadavg().map((x) => round(x));

  // --- Results -------------------------------------------------------------------------------
  const json = {
    benchmark: "search",
    environment,
    config: {
      quick: QUICK,
      count: COUNT,
      dimension: DIMENSION,
      clusters: CLUSTERS,
      spread: 0.5,
      queries: QUERIES,
      warmup_rounds: WARMUP_ROUNDS,
      k: K,
      hnsw: { m: 16, ef_construction: 200, space: "ip" },
      planner: PLANNER,
      allow_lists_per_share: LISTS_PER_SHARE,
      grpc_tags: TAGS,
      order: "round-robin: each round runs every series once, each on a different query",
      load_average_before: loadBefore,
      load_average_after: loadAfter,
    },
    index: indexFacts,
    ef_sweep: efResults,
    filtered: filterResults,
    grpc: {
      seed_s: round(seedMs / 1000, 1),
      startup,
      app_snapshot_files_mib: { graph: mib(appSnapshot.graph), vectors: mib(appSnapshot.vectors), ids: mib(appSnapshot.ids), total: mib(appSnapshot.total) },
      search_images: grpcResults,
      process_stalls_while_measuring: stalls,
    },
  };

  const lat = (l: LatencySummary) => [l.p50_ms, l.p99_ms];
  const reading = readFigures(efResults, filterResults, grpcResults);
  const markdown = [
    "# Vector search benchmark",
    "",
    environmentMarkdown(environment),
    `- load average (1, 5, 15 min) before ${loadBefore.join(" ")}, after ${loadAfter.join(" ")}`,
    `- ${COUNT} x ${DIMENSION} unit vectors around ${CLUSTERS} random centres (spread 0.5: same-cluster cosine about 0.8), ` +
      `${QUERIES} queries drawn the same way${QUICK ? " (--quick)" : ""}; HNSW M 16, efConstruction 200, inner product`,
    `- k = ${K}; ${WARMUP_ROUNDS} warm-up then ${QUERIES} measured rounds per table, round-robin over its series, ` +
      "each call on a different query; recall@10 against a plain-JS scan of every vector",
    "",
    "## Index",
    "",
    markdownTable(
      ["what", "value"],
      [
        ["build into VectorIndex (= rebuild from vectors)", `${indexFacts.build_s} s, ${indexFacts.build_vectors_per_s} vectors/s`],
        ["process RSS growth, build", `${indexFacts.rss_growth_build_mib} MiB`],
        ["  of which float32 matrix (WASM, 4 B x 512 x n)", `${indexFacts.float32_matrix_mib} MiB`],
        ["process RSS growth, snapshot load (second copy)", `${indexFacts.rss_growth_snapshot_load_mib} MiB`],
        [
          "snapshot files",
          `${indexFacts.snapshot_files_mib.total} MiB (graph ${indexFacts.snapshot_files_mib.graph}, vectors ${indexFacts.snapshot_files_mib.vectors}, ids ${indexFacts.snapshot_files_mib.ids})`,
        ],
        [
          "snapshot write (fsync'd), median of runs",
          `${indexFacts.snapshot_write_s} s (${indexFacts.snapshot_write_runs_s.join(", ")})`,
        ],
        [
          "snapshot load (read, sha256, graph, matrix), median of runs",
          `${indexFacts.snapshot_load_s} s (${indexFacts.snapshot_load_runs_s.join(", ")})`,
        ],
        ["rebuild / load", `${indexFacts.rebuild_over_load}x`],
        ["loaded index answers as the built one (20 queries)", String(sameAnswers)],
      ],
    ),
    "",
    "## Recall and latency per ef (in-process, no filter)",
    "",
    markdownTable(
      ["method", "ef", "recall@10", "p50 ms", "p99 ms"],
      efResults.map((r) => [r.method, r.ef ?? "-", r.recall_at_10, ...lat(r.latency)]),
    ),
    "",
    `## Filtered search (in-process, random allow-lists; planner: exactMax ${PLANNER.exactMax}, ef ${PLANNER.ef})`,
    "",
    "Both sides include turning the candidate ids into index slots (the exact path looks up each id's row, the",
    "HNSW side builds the slot bitmap with allowedSlots); the last column is that lookup alone (allowedSlots, timed",
    "in the same rounds). mean results < 10 would mean HNSW came back short.",
    "",
    markdownTable(
      ["allowed", "candidates", "method", "recall@10", "mean results", "p50 ms", "p99 ms", "id lookups alone p50 ms"],
      filterResults.map((r) => [
        `${r.selectivity_pct}%`,
        r.candidates,
        r.method,
        r.recall_at_10,
        r.mean_results,
        ...lat(r.latency),
        r.id_lookups_alone.p50_ms,
      ]),
    ),
    "",
    "## Through gRPC (SearchImages, like_image_id, limit 10, one call in flight)",
    "",
    `${COUNT} images and embeddings written straight into Postgres in ${round(seedMs / 1000, 1)} s; model \`${MODEL_ID}\` ` +
      "(a 512-wide test model: like_image_id uses the stored vector, so no model runs while timing). Client and server share one process.",
    "",
    markdownTable(
      ["start", "serving s", "search ready s", "index opened in s", "RSS growth MiB", "stop s (final snapshot s)"],
      startup.map((s) => [
        s.start,
        s.serving_s,
        s.search_ready_s,
        s.index_open_s ?? "?",
        s.rss_growth_mib,
        "stop_s" in s ? `${s.stop_s} (${s.snapshot_write_s ?? "none"})` : "-",
      ]),
    ),
    "",
    `The app's snapshot: ${json.grpc.app_snapshot_files_mib.total} MiB.`,
    "",
    markdownTable(
      ["filter", "matching images", "planner path", "recall@10", "p50 ms", "p99 ms"],
      grpcResults.map((r) => [r.series, r.candidates, r.plan, r.recall_at_10, ...lat(r.latency)]),
    ),
    "",
    `While measuring, this process spent ${stalls.gc_total_ms} ms in ${stalls.gc_count} GC pauses (longest ${stalls.gc_max_ms} ms); ` +
      `event-loop delay p99 ${stalls.event_loop_delay_p99_ms} ms, max ${stalls.event_loop_delay_max_ms} ms.`,
    "",
    "## Reading the figures",
    "",
    ...reading.map((line) => `- ${line}`),
  ].join("\n");
  if (QUICK) {
    console.log(markdown);
    console.log("--quick: results not written");
    return;
  }
  const written = await writeResults("search", json, markdown);
  console.log(markdown);
  console.log(`wrote ${written.join(", ")}`);
});
