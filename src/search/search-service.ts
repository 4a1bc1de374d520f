import type { Analyse, AnalyseLimits } from "../catalogue/analyse.js";
import { hammingDistance } from "../catalogue/analyse.js";
import type { CatalogueService } from "../catalogue/catalogue-service.js";
import { parseFilter, type ImageFilterInput } from "../catalogue/listing.js";
import type { Caller, ImageFilter, ImageRecord } from "../catalogue/types.js";
import type { Clock } from "../clock.js";
import type { Embedder } from "../embedding/embedder.js";
import { DomainError, Violations } from "../errors.js";
import type { EmbeddingsRepository } from "../store/embeddings-repository.js";
import { IdList } from "../vector/id-list.js";
import type { Neighbour, VectorIndex } from "../vector/vector-index.js";
import type roaring from "roaring";
import { isUnrestricted, needsDatabase } from "./filter-index.js";
import type { IndexKeeper } from "./index-keeper.js";
import { searched, stage, stageSync } from "../observability/call-scope.js";

/** Result fields a caller can ask for (seed 3's `fields`). */
export const SEARCH_FIELDS = [
  "id",
  "name",
  "annotations",
  "labels",
  "split",
  "tags",
  "owner",
  "embedding",
  "created",
  "url",
  "image",
] as const;
export type SearchField = (typeof SEARCH_FIELDS)[number];

export const DEFAULT_SEARCH_LIMIT = 50;
export const MAX_SEARCH_LIMIT = 250;
export const MAX_STREAM_LIMIT = 10_000;
export const MAX_SEARCH_DEPTH = 10_000;
export const MAX_EF = 4096;
const MAX_PROMPT = 2000;

/** What to rank by. */
export type SearchQueryInput =
  | { kind: "prompt"; text: string }
  | { kind: "like_image_id"; id: bigint }
  | { kind: "like_image_content"; content: Uint8Array }
  | { kind: "none" };

/** A search request in domain terms; zero means unset for the numeric fields. */
export interface SearchInput {
  query: SearchQueryInput;
  threshold: number;
  offset: number;
  limit: number;
  filter: ImageFilterInput;
  fields: string[];
  ef: number;
  hybrid: boolean;
}

/** One ranked result: the vector score, and the image when a selected field needs it. */
export interface SearchHit {
  id: bigint;
  /** (1 + cosine) / 2, in [0, 1]. */
  score: number;
  image?: ImageRecord;
  embedding?: Float32Array;
  /** Held in memory by the filter index: set whether or not the image row was loaded. */
  created?: Date;
  owner?: string;
  name?: string;
  tags?: string[];
}

/** Fields answered from memory (the vector and filter indexes); any other needs the image row. */
const MEMORY_FIELDS: ReadonlySet<SearchField> = new Set(["id", "created", "owner", "url", "embedding", "name", "tags"]);

/** How the planner answered: useful in logs and benchmarks. */
export type SearchPlan = "hnsw" | "hnsw_overfetch" | "hnsw_filtered" | "exact";

export interface SearchOutcome {
  offset: number;
  total: number;
  totalIsLowerBound: boolean;
  hits: SearchHit[];
  modelId: string;
  plan: SearchPlan;
  fields: ReadonlySet<SearchField>;
}

/** The embedder and the index, once both are ready. */
export interface SearchEngine {
  embedder: Embedder;
  keeper: IndexKeeper;
}

export interface SearchDeps {
  embeddings: EmbeddingsRepository;
  catalogue: CatalogueService;
  clock: Clock;
  /** The engine, or a DomainError (FAILED_PRECONDITION) saying why there is none yet. */
  engine: () => SearchEngine;
  /** Checks like-image content as an upload would (through the shared decode pool). */
  analyse: Analyse;
  limits: AnalyseLimits;
  /** Default HNSW breadth. */
  ef: number;
  /** Filters matching at most this many images are scanned exactly. */
  exactMax: number;
}

/** A validated search. */
interface Plan {
  query: SearchQueryInput;
  threshold: number;
  offset: number;
  limit: number;
  filter: ImageFilter;
  filtered: boolean;
  fields: Set<SearchField>;
  ef: number;
  hybrid: boolean;
}

export interface FindDuplicatesInput {
  imageId: bigint;
  maxHammingDistance?: number;
  minScore?: number;
  limit: number;
}

export interface DuplicateHit {
  image: ImageRecord;
  hammingDistance: number;
  score: number | undefined;
}

export const toScore = (cosine: number) => Math.min(1, Math.max(0, (1 + cosine) / 2));

/**
 * Semantic search over the caller's readable, indexed images.
 *
 * The planner: a search with no restriction at all (an admin, no filter) walks HNSW. Anything
 * else first asks Postgres which indexed images pass; when few do (see `scanExactly`), their
 * vectors are scanned exactly by the WASM kernel (recall 1 by construction, and cheap: 5k x 512
 * is 10 MB of reads, about 2 ms); when more do, HNSW walks with those images as an allow-list and
 * `ef` raised in inverse proportion to the share that passes, so narrow filters still find k.
 */
export class SearchService {
  constructor(private readonly deps: SearchDeps) {}

  /** SearchImages (and, with `stream`, the wider limits of StreamSearchImages). */
  async search(
    caller: Caller,
    input: SearchInput,
    signal?: AbortSignal,
    { stream = false, hydrate = true }: { stream?: boolean; hydrate?: boolean } = {},
  ): Promise<SearchOutcome> {
    const started = performance.now();
    const plan = this.validate(input, stream);
    const engine = this.deps.engine();
    const { index } = engine.keeper;
    let exclude: bigint | undefined;
    let vector: Float32Array;
    const q = plan.query;
    if (q.kind === "prompt") {
      vector = await stage("embed", () => engine.embedder.embedText(q.text, signal));
    } else if (q.kind === "like_image_id") {
      // An indexed image the caller may read is answered from memory; anything else asks the
      // catalogue, which says why it cannot be searched by (not found, not indexed).
      const slot = index.slot(q.id);
      const image =
        slot !== undefined && engine.keeper.filters.readable(slot, caller)
          ? { id: q.id, indexStatus: "indexed", indexError: "" }
          : await this.deps.catalogue.get(caller, q.id);
      const stored = index.vector(image.id);
      if (!stored) {
        throw new DomainError(
          "FAILED_PRECONDITION",
          `image ${image.id} is not indexed (index_status ${image.indexStatus}` +
            `${image.indexError ? `: ${image.indexError}` : ""}), so it cannot be searched by`,
        );
      }
      vector = stored;
      exclude = image.id;
    } else if (q.kind === "like_image_content") {
      // Checking and decoding the query image is part of turning it into a vector.
      vector = await stage("embed", async () => {
        await this.deps.analyse(q.content, this.deps.limits, "like_image_content", { signal });
        return engine.embedder.embedImage(q.content, signal);
      });
    } else {
      throw new Error("unreachable: validated query");
    }
    signal?.throwIfAborted();

    const depth = plan.offset + plan.limit + (exclude === undefined ? 0 : 1);
    const ranked = await stage("rank", () => this.rank(caller, plan, engine, vector, depth));
    let neighbours = ranked.neighbours.filter((n) => n.id !== exclude);
    let total = ranked.total;
    if (exclude !== undefined && (ranked.includes?.(exclude) ?? true)) total -= 1;
    let lowerBound = false;
    if (plan.threshold > 0) {
      const passes = (n: Neighbour) => n.id !== exclude && toScore(n.cosine) >= plan.threshold;
      neighbours = neighbours.filter(passes);
      if (ranked.everyScore) {
        total = ranked.everyScore.filter(passes).length;
      } else {
        // Only the candidates the graph walk examined were scored: count those.
        total = neighbours.length;
        lowerBound = true;
      }
    }
    if (plan.hybrid && q.kind === "prompt") {
      neighbours = await this.fuseWithText(caller, plan, engine, vector, q.text, neighbours);
    }

    const window = neighbours.slice(plan.offset, plan.offset + plan.limit);
    const hits = hydrate
      ? await stage("hydrate", () => this.hydrate(caller, plan.fields, engine, window))
      : window.map((n) => ({ id: n.id, score: toScore(n.cosine) }));
    searched(ranked.plan, started);
    return {
      offset: plan.offset,
      total: Math.max(total, 0),
      totalIsLowerBound: lowerBound,
      hits,
      modelId: engine.embedder.modelId,
      plan: ranked.plan,
      fields: plan.fields,
    };
  }

  /** FindDuplicates: near-duplicates by perceptual hash and, when indexed, by embedding. */
  async findDuplicates(caller: Caller, input: FindDuplicatesInput): Promise<DuplicateHit[]> {
    const v = new Violations();
    v.check(input.imageId > 0n, "image_id", "must be a positive image id");
    const maxDistance = input.maxHammingDistance ?? 10;
    v.check(Number.isInteger(maxDistance) && maxDistance >= 0 && maxDistance <= 64, "max_hamming_distance", "must be within 0..64");
    const minScore = input.minScore ?? 0.95;
    v.check(Number.isFinite(minScore) && minScore >= 0 && minScore <= 1, "min_score", "must be within [0, 1]");
    v.check(Number.isInteger(input.limit) && input.limit >= 0 && input.limit <= 100, "limit", "must be within 0..100");
    v.throwIfAny();
    const limit = input.limit === 0 ? 20 : input.limit;

    const image = await this.deps.catalogue.get(caller, input.imageId);
    const found = new Map<bigint, DuplicateHit>();
    for (const near of await this.deps.embeddings.nearPhash(image.phash, maxDistance, image.id, caller, limit)) {
      found.set(near.image.id, { image: near.image, hammingDistance: near.distance, score: undefined });
    }

    let engine: SearchEngine | undefined;
    try {
      engine = this.deps.engine();
    } catch {
      engine = undefined; // no model: hash matches only
    }
    const own = engine?.keeper.index.vector(image.id);
    if (engine && own) {
      const index = engine.keeper.index;
      // Readability is checked when hydrating; look a little deeper to make up for skipped ones.
      const similar = (await index.searchHnsw(own, limit * 4 + 1, Math.max(this.deps.ef, limit * 4 + 1))).filter((n) => n.id !== image.id && toScore(n.cosine) >= minScore);
      const missing = similar.filter((n) => !found.has(n.id)).map((n) => n.id);
      for (const other of await this.deps.embeddings.images(missing, caller)) {
        found.set(other.id, { image: other, hammingDistance: hammingDistance(image.phash, other.phash), score: undefined });
      }
      // Indexed ones get their exact similarity; the others keep no score.
      for (const n of index.scoreAll(own, [...found.keys()])) found.get(n.id)!.score = toScore(n.cosine);
    }
    return [...found.values()]
      .sort(
        (a, b) =>
          a.hammingDistance - b.hammingDistance ||
          (b.score ?? -1) - (a.score ?? -1) ||
          (a.image.id < b.image.id ? -1 : a.image.id > b.image.id ? 1 : 0),
      )
      .slice(0, limit);
  }

  private validate(input: SearchInput, stream: boolean): Plan {
    const v = new Violations();
    const q = input.query;
    if (q.kind === "none") v.add("query", "give one of prompt, like_image_id or like_image_content");
    if (q.kind === "prompt") {
      const text = q.text.trim();
      v.check(text.length > 0, "prompt", "must not be empty");
      v.check([...q.text].length <= MAX_PROMPT, "prompt", `must be at most ${MAX_PROMPT} characters`);
    }
    if (q.kind === "like_image_id") v.check(q.id > 0n, "like_image_id", "must be a positive image id");
    if (q.kind === "like_image_content") v.check(q.content.length > 0, "like_image_content", "must not be empty");
    v.check(Number.isFinite(input.threshold) && input.threshold >= 0 && input.threshold <= 1, "threshold", "must be within [0, 1]");
    v.check(Number.isInteger(input.offset) && input.offset >= 0, "offset", "must be 0 or more");
    const maxLimit = stream ? MAX_STREAM_LIMIT : MAX_SEARCH_LIMIT;
    v.check(Number.isInteger(input.limit) && input.limit >= 0 && input.limit <= maxLimit, "limit", `must be within 0..${maxLimit}`);
    const limit = input.limit === 0 ? DEFAULT_SEARCH_LIMIT : input.limit;
    v.check(input.offset + limit <= MAX_SEARCH_DEPTH, "offset", `offset + limit must be at most ${MAX_SEARCH_DEPTH}`);
    v.check(Number.isInteger(input.ef) && input.ef >= 0 && input.ef <= MAX_EF, "ef", `must be 0 (server default) or within 1..${MAX_EF}`);
    const fields = new Set<SearchField>();
    for (const name of input.fields.length === 0 ? ["id", "created"] : input.fields) {
      if ((SEARCH_FIELDS as readonly string[]).includes(name)) fields.add(name as SearchField);
      else v.add("fields", `unknown field ${JSON.stringify(name)}; known: ${SEARCH_FIELDS.join(", ")}`);
    }
    const filter = parseFilter(input.filter, v);
    v.throwIfAny();
    return {
      query: q.kind === "prompt" ? { kind: "prompt", text: q.text.trim() } : q,
      threshold: input.threshold,
      offset: input.offset,
      limit,
      filter,
      filtered: !isEmptyFilter(filter),
      fields,
      ef: input.ef,
      hybrid: input.hybrid,
    };
  }

  /**
   * Works out which indexed images pass the filter and may be read, and ranks them. The
   * filter index answers in memory with an exact bitmap; only filters it cannot answer
   * (`needsDatabase`: meta) ask PostgreSQL.
   */
  private async rank(caller: Caller, plan: Plan, engine: SearchEngine, vector: Float32Array, depth: number): Promise<Ranking> {
    const { embeddings, clock, exactMax } = this.deps;
    const options = { ef: plan.ef || this.deps.ef, exactMax, everyScore: plan.threshold > 0 };
    const { index, filters } = engine.keeper;
    if (!plan.filtered && caller.isAdmin) return rankCandidates(index, vector, depth, null, options);
    const now = clock.now();
    if (!needsDatabase(plan.filter)) {
      return rankSlots(index, vector, depth, stageSync("candidates", () => filters.candidates(plan.filter, caller, now)), options);
    }
    let candidates = await stage("candidates", () => embeddings.candidateIds(plan.filter, caller, now, exactMax + 1));
    if (candidates.length > exactMax) candidates = await stage("candidates", () => embeddings.candidateIds(plan.filter, caller, now, null));
    return rankCandidates(engine.keeper.index, vector, depth, candidates, options);
  }

  /**
   * Reciprocal rank fusion of the vector ranking with a full-text ranking of the prompt over
   * image text (tags, meta prompt and caption, file name). Scores stay vector scores.
   */
  private async fuseWithText(
    caller: Caller,
    plan: Plan,
    engine: SearchEngine,
    vector: Float32Array,
    prompt: string,
    neighbours: Neighbour[],
  ): Promise<Neighbour[]> {
    const depth = plan.offset + plan.limit;
    const textIds = await this.deps.embeddings.textMatches(prompt, plan.filter, caller, this.deps.clock.now(), depth);
    const K = 60;
    const fused = new Map<bigint, { n: Neighbour; rrf: number }>();
    neighbours.forEach((n, i) => fused.set(n.id, { n, rrf: 1 / (K + i + 1) }));
    const unscored = textIds.filter((id) => !fused.has(id));
    const scored = new Map(engine.keeper.index.scoreAll(vector, unscored).map((n) => [n.id, n]));
    textIds.forEach((id, i) => {
      const entry = fused.get(id);
      if (entry) entry.rrf += 1 / (K + i + 1);
      else {
        const n = scored.get(id);
        if (n && toScore(n.cosine) >= plan.threshold) fused.set(id, { n, rrf: 1 / (K + i + 1) });
      }
    });
    return [...fused.values()].sort((a, b) => b.rrf - a.rrf || b.n.cosine - a.n.cosine).map((e) => e.n);
  }

  /** Fills the selected fields of hits from `search(..., { hydrate: false })`. */
  hydrateHits(caller: Caller, fields: ReadonlySet<SearchField>, hits: SearchHit[]): Promise<SearchHit[]> {
    const engine = this.deps.engine();
    return stage("hydrate", () => this.hydrate(caller, fields, engine, hits.map((h) => ({ id: h.id, cosine: 2 * h.score - 1 }))));
  }

  /**
   * Fills the selected fields. Fields held in memory (MEMORY_FIELDS) need no query; any other
   * loads the rows in one query. Images deleted or hidden meanwhile drop out either way (in
   * memory: as far as the index has followed the log).
   */
  private async hydrate(caller: Caller, fields: ReadonlySet<SearchField>, engine: SearchEngine, window: Neighbour[]) {
    const { index, filters } = engine.keeper;
    const needsImage = [...fields].some((f) => !MEMORY_FIELDS.has(f));
    const images = needsImage
      ? new Map((await this.deps.embeddings.images(window.map((n) => n.id), caller)).map((image) => [image.id, image]))
      : undefined;
    const hits: SearchHit[] = [];
    for (const n of window) {
      const slot = index.slot(n.id);
      const image = images?.get(n.id);
      if (images ? !image : slot === undefined || !filters.readable(slot, caller)) continue;
      const hit: SearchHit = { id: n.id, score: toScore(n.cosine) };
      if (image) hit.image = image;
      if (slot !== undefined) {
        if (fields.has("created")) hit.created = new Date(filters.createdAt(slot));
        if (fields.has("owner")) hit.owner = filters.ownerOf(slot);
        if (fields.has("name")) hit.name = filters.nameOf(slot);
        if (fields.has("tags")) hit.tags = filters.tagsOf(slot);
      }
      if (image) {
        hit.created = image.createdAt;
        hit.owner = image.ownerId;
        hit.name = image.fileName;
        hit.tags = image.tags;
      }
      if (fields.has("embedding")) hit.embedding = index.vector(n.id);
      hits.push(hit);
    }
    return hits;
  }
}

/** A ranking with what is known about the whole candidate set. */
export interface Ranking {
  plan: SearchPlan;
  /** The best `depth` candidates, best first. */
  neighbours: Neighbour[];
  /** How many images passed the filter. */
  total: number;
  /** Every candidate's score, when all were scored (exact thresholds and totals). */
  everyScore?: Neighbour[];
  /** Whether an image passed the filter, when one applied. */
  includes?: (id: bigint) => boolean;
}

export interface RankOptions {
  /** Base HNSW breadth. */
  ef: number;
  /** Candidate lists up to this long are scanned exactly. */
  exactMax: number;
  /** On the exact path, score every candidate (for exact counts above a threshold). */
  everyScore?: boolean;
  /** The exact scan's share of the index (default EXACT_SHARE; benchmarks force paths with it). */
  exactShare?: number;
  /** The largest plain-HNSW over-fetch (default MAX_OVERFETCH; 0 turns over-fetching off). */
  overfetchMax?: number;
}

/** Lists this short are always scanned exactly (well under a millisecond). */
const ALWAYS_EXACT = 2000;
/**
 * Candidate sets up to this share of the index are scanned exactly; wider ones over-fetch with
 * plain HNSW. Calibrated with `bench/filtered.ts` at 100k x 512 (CPU time per call, p50): the
 * float32 scan takes 0.36 ms at 1%, 1.9 ms at 5%, 3.6 ms at 10%; the over-fetch 2.1 ms at 5%
 * (310 results), 1.6 ms at 10%, 1.1-1.3 ms from 15% up; plain HNSW unfiltered 1.0 ms. A faster
 * exact scan moves it up.
 */
export const EXACT_SHARE = 0.06;

/**
 * The most results the planner asks of plain HNSW to keep the first `depth` the bitmap passes
 * (`overfetchDepth`). Beyond it an exact scan answers within `exactMax`, else the filtered
 * walk: plain HNSW at ef 400 still costs less than hnswlib's filtered walk, which calls back
 * into JavaScript for every node it considers (40 ms at 3% of 100k x 512, bench/filtered.ts).
 */
export const MAX_OVERFETCH = 400;
/** Extra results asked of the over-fetching walk beyond depth / share x 1.5. */
const OVERFETCH_MARGIN = 10;
/**
 * How many plain-HNSW results to ask for so that `depth` of them likely pass a filter keeping
 * `share` of the index: ceil(depth / share x 1.5) + a margin; null when that exceeds `max`
 * (MAX_OVERFETCH, never more than MAX_EF).
 */
export function overfetchDepth(depth: number, share: number, max = MAX_OVERFETCH): number | null {
  if (share <= 0 || depth <= 0) return null;
  const want = Math.ceil((depth / Math.min(share, 1)) * 1.5) + OVERFETCH_MARGIN;
  return want > Math.min(max, MAX_EF) ? null : want;
}

/**
 * The HNSW breadth for a walk restricted to a share of the index: raised as the share narrows,
 * by its square root. With allow-lists spread over the graph the plain ef already finds the
 * true top 10 (bench/results/search.md); the margin is for filters that select a region far
 * from the query, where a walk must pass many rejected nodes before it reaches allowed ones.
 */
export function filteredEf(baseEf: number, depth: number, share: number): number {
  const ef = Math.ceil(Math.max(baseEf, depth) / Math.sqrt(Math.min(1, Math.max(share, 1e-4))));
  return Math.min(MAX_EF, Math.max(depth, ef));
}

/** Whether the planner scans a candidate list exactly rather than walking HNSW. */
export function scanExactly(candidates: number, indexSize: number, exactMax: number, exactShare = EXACT_SHARE): boolean {
  if (candidates > exactMax) return false;
  return candidates <= ALWAYS_EXACT || candidates <= exactShare * indexSize;
}

/**
 * The query planner. `candidates` null means every indexed image may be returned: plain
 * HNSW. A short list (at most `exactMax` ids, and at most EXACT_SHARE of the index or 2000
 * ids): exact scan of just those vectors (recall 1). A longer list: HNSW restricted to the
 * list, with ef raised as the list's share of the index shrinks (by its square root).
 */
export async function rankCandidates(
  index: VectorIndex,
  vector: Float32Array,
  depth: number,
  candidateIds: IdList | ArrayLike<bigint> | null,
  options: RankOptions,
): Promise<Ranking> {
  const candidates = candidateIds === null ? null : IdList.of(candidateIds);
  const baseEf = Math.max(options.ef, depth);
  if (candidates === null) {
    return { plan: "hnsw", neighbours: await index.searchHnsw(vector, depth, baseEf), total: index.size };
  }
  if (scanExactly(candidates.length, index.size, options.exactMax, options.exactShare)) {
    const includes = (id: bigint) => candidates.includes(id);
    if (options.everyScore) {
      const all = index.scoreAll(vector, candidates).sort(byCosine);
      return { plan: "exact", neighbours: all.slice(0, depth), total: all.length, everyScore: all, includes };
    }
    const neighbours = index.searchExact(vector, depth, candidates);
    return { plan: "exact", neighbours, total: candidates.length, includes };
  }
  const ef = filteredEf(options.ef, depth, candidates.length / Math.max(index.size, 1));
  const neighbours = await index.searchHnsw(vector, depth, ef, index.allowedSlots(candidates));
  return { plan: "hnsw_filtered", neighbours, total: candidates.length, includes: (id) => candidates.includes(id) };
}

/**
 * The planner on an exact candidate bitmap (slots of the vector index, from the filter
 * index): every indexed image -> plain HNSW; few (`scanExactly`) -> exact scan of just those
 * rows (float32); more -> plain HNSW for `overfetchDepth` results, of which the first `depth`
 * the bitmap passes (no JavaScript call per visited node), when that depth is at most
 * MAX_OVERFETCH. When fewer pass (the filter keeps images far from the query): an exact scan,
 * whatever the set's size. When the over-fetch would be too deep: exact within `exactMax`,
 * else HNSW with the bitmap as filter, ef raised as its share narrows.
 */
export async function rankSlots(
  index: VectorIndex,
  vector: Float32Array,
  depth: number,
  slots: roaring.RoaringBitmap32,
  options: RankOptions,
): Promise<Ranking> {
  const count = slots.size;
  const includes = (id: bigint) => {
    const slot = index.slot(id);
    return slot !== undefined && slots.has(slot);
  };
  const baseEf = Math.max(options.ef, depth);
  if (count === index.size) {
    return { plan: "hnsw", neighbours: await index.searchHnsw(vector, depth, baseEf), total: count, includes };
  }
  // The float32 rows unless the operator chose int8 (GLIMPSE_SCAN_QUANTISATION): a filter may
  // keep images far from the query, whose best scores sit among thousands of close ones, and
  // there the int8 scan's re-rank misses (recall 0.74 for the farthest 3% at 100k x 512,
  // bench/filtered.ts), which is why float32 is the default.
  const exact = (): Ranking => {
    const rows = new Int32Array(slots.toUint32Array().buffer);
    if (options.everyScore) {
      const all = index.scoreSlots(vector, rows).sort(byCosine);
      return { plan: "exact", neighbours: all.slice(0, depth), total: all.length, everyScore: all, includes };
    }
    return { plan: "exact", neighbours: index.searchExactSlots(vector, depth, rows), total: count, includes };
  };
  if (scanExactly(count, index.size, options.exactMax, options.exactShare)) return exact();
  const share = count / Math.max(index.size, 1);
  const want = overfetchDepth(depth, share, options.overfetchMax);
  // Too deep to over-fetch (a wide page of a narrow set): exact while the set is within bounds.
  if (want === null && count <= options.exactMax) return exact();
  if (want !== null) {
    // Plain HNSW (no callback per visited node), then the first `depth` that pass the bitmap.
    const kept: Neighbour[] = [];
    for (const n of await index.searchHnsw(vector, want, Math.max(options.ef, want))) {
      const slot = index.slot(n.id);
      if (slot !== undefined && slots.has(slot)) {
        kept.push(n);
        if (kept.length === depth) break;
      }
    }
    if (kept.length >= Math.min(depth, count)) return { plan: "hnsw_overfetch", neighbours: kept, total: count, includes };
    // Too few pass: the filter rejects the query's neighbourhood (it keeps images far from the
    // query). A filtered walk would cross every rejected node near the query before it found
    // allowed ones: at 100k x 512, 420 ms for a filter keeping the farthest half, and recall
    // 0.86 for the farthest 90% (bench/filtered.ts). The exact scan's cost is bounded by the
    // set's size and its recall is 1, so it answers, whatever `exactMax` says.
    return exact();
  }
  const ef = filteredEf(options.ef, depth, share);
  const neighbours = await index.searchHnsw(vector, depth, ef, denseBitmap(slots, index.slots));
  return { plan: "hnsw_filtered", neighbours, total: count, includes };
}

/** A reused byte per slot for the filtered walk's membership test (one JS thread: never shared). */
let dense = new Uint8Array(0);

/**
 * The bitmap as one byte per slot, for hnswlib's filter callback: O(1) membership per visited
 * node. One buffer is reused across calls (cleared at the start of each): the graph reads it
 * (inline) or copies it (a graph thread) before searchHnsw returns its promise, so the next
 * call may overwrite it.
 */
function denseBitmap(slots: roaring.RoaringBitmap32, extent: number): Uint8Array {
  if (dense.length < extent) dense = new Uint8Array(Math.max(extent, dense.length * 2));
  else dense.fill(0, 0, extent);
  for (const slot of slots.toUint32Array()) if (slot < extent) dense[slot] = 1;
  return dense;
}

const byCosine = (a: Neighbour, b: Neighbour) => b.cosine - a.cosine || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** True when the filter lets every image through. */
function isEmptyFilter(f: ImageFilter): boolean {
  return isUnrestricted(f) && f.indexStatus === null && Object.keys(f.metaEquals).length === 0 && f.metaKeys.length === 0;
}

