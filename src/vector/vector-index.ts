import { createHash } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { createGraph, readGraph, UNKNOWN_PACE, type Graph, type GraphPace, type GraphThread } from "./graph.js";
import type { HnswBuild, HnswBuildChoice } from "./hnsw-addon.mjs";
import { IdList, IdSlotMap } from "./id-list.js";
import { VectorMatrix, type TopK } from "./kernel.js";
import { QuantisedMatrix, quantisedPays, rerank, rerankDepth } from "./quantised-matrix.js";

/** One nearest neighbour: an image id and its cosine similarity to the query. */
export interface Neighbour {
  id: bigint;
  cosine: number;
}

/**
 * How the exact scan reads the vectors: `int8` scans int8 rows (a quarter of the bytes) and
 * re-ranks the best candidates (rerankDepth) by their float32 inner products; `float32` scans
 * the float32 rows themselves. Both keep the float32 rows.
 */
export type ScanQuantisation = "int8" | "float32";

/**
 * int8 by default: recall@10 of the int8 scan plus re-rank against the float32 scan is at
 * least 0.99 on the benchmark sets (bench/quantised.ts, test/vector/quantised.test.ts).
 */
export const DEFAULT_SCAN_QUANTISATION: ScanQuantisation = "float32";

/** Graph parameters; the defaults suit 512-wide CLIP vectors up to a few million images. */
export interface VectorIndexOptions {
  modelId: string;
  dimension: number;
  /** How the exact scan reads the vectors (DEFAULT_SCAN_QUANTISATION when unset). */
  scanQuantisation?: ScanQuantisation;
  /** HNSW links per node. */
  m?: number;
  /** HNSW build breadth. */
  efConstruction?: number;
  initialCapacity?: number;
  /** Where the HNSW graph lives (default `inline`; the server puts it on a thread of its own). */
  graphThread?: GraphThread;
  /** Which compiled hnswlib runs the graph (default `auto`: the AVX2 build where there is one). */
  hnswBuild?: HnswBuildChoice;
  /** How busy the process is, for a graph on its own thread (GraphPace; default: unknown). */
  pace?: GraphPace;
  /** Told each graph walk's own time in ms, in the searching call's async context. */
  onWalk?: (ms: number) => void;
}

/** What a snapshot's `snapshot.json` records. */
interface SnapshotManifest {
  format: 1;
  modelId: string;
  dimension: number;
  /** The last `index_log` sequence number the snapshot includes. */
  lastSeq: string;
  /** Slots in use (live or free) when written. */
  slots: number;
  /** graph, vectors and ids, plus the owner's attachments (the filter index) by name. */
  files: Record<string, { name: string; bytes: number; sha256: string }>;
  writtenAt: string;
}

const MANIFEST = "snapshot.json";

/**
 * The in-process vector index: an HNSW graph (hnswlib, inner product) for approximate
 * search, and beside it the same vectors in one contiguous float32 matrix for exact scans
 * of candidate lists with the WASM kernel. In the int8 scan mode (the default) the scan reads
 * int8 rows instead (QuantisedMatrix, a quarter of the bytes) and the float32 matrix re-ranks
 * its best candidates; the float32 rows stay because hnswlib's own copy is too slow to read
 * back (getPoint builds a JS array element by element: 0.2-0.4 ms per vector, measured in
 * bench/quantised.ts, against 0.04-0.08 ms for the whole re-rank from the matrix).
 *
 * Images are mapped to dense slots: a slot is both the HNSW label and the matrix row. A
 * removed image's slot is marked deleted in the graph and reused by the next insert (hnswlib
 * updates a deleted label in place), so memory stays bounded under churn. Ids are never
 * assumed dense or small: the slot table is the only link between the two.
 *
 * The graph may live on a thread of its own (`graphThread: "worker"`): inserts and deletes are
 * then posted to it without waiting, in order, and a walk runs there while this thread goes
 * on; everything else (the slot table, the matrix, the exact scans) stays on the owning
 * thread. Either way one JS thread owns the index; derived state, rebuilt from Postgres.
 */
export class VectorIndex {
  readonly modelId: string;
  readonly dimension: number;
  /** The last `index_log` sequence applied (maintained by the owner of the index). */
  lastSeq = 0n;
  /** Files the loaded snapshot carried beside the vectors (`writeSnapshot`'s attachments). */
  attachments = new Map<string, Buffer>();

  private readonly graph: Graph;
  private readonly matrix: VectorMatrix;
  /** The int8 rows the exact scan reads when scanning quantised; undefined for float32. */
  private readonly quantised: QuantisedMatrix | undefined;
  /** slot -> image id; 0n marks a free slot (snowflake ids are always positive). */
  private slotIds: BigInt64Array;
  private readonly slotOf = new IdSlotMap();
  private readonly free: number[] = [];
  private used = 0;
  private readonly onWalk: (ms: number) => void;

  private constructor(
    options: Required<VectorIndexOptions>,
    graph: Graph,
    matrix: VectorMatrix,
    quantised: QuantisedMatrix | undefined,
  ) {
    this.modelId = options.modelId;
    this.dimension = options.dimension;
    this.graph = graph;
    this.matrix = matrix;
    this.quantised = quantised;
    this.slotIds = new BigInt64Array(graph.capacity);
    this.onWalk = options.onWalk;
  }

  static async create(options: VectorIndexOptions): Promise<VectorIndex> {
    const full = withDefaults(options);
    const shape = {
      dimension: full.dimension,
      capacity: full.initialCapacity,
      m: full.m,
      efConstruction: full.efConstruction,
      build: full.hnswBuild,
    };
    const graph = await createGraph(full.graphThread, shape, full.pace);
    const matrix = await VectorMatrix.create(full.dimension, full.initialCapacity);
    return new VectorIndex(full, graph, matrix, await quantisedFor(full, full.initialCapacity));
  }

  /** How the exact scan reads the vectors. */
  get scanQuantisation(): ScanQuantisation {
    return this.quantised ? "int8" : "float32";
  }

  /** Bytes per image of the matrix the exact scan reads (int8 codes and scale, or float32). */
  get scanBytesPerImage(): number {
    return this.quantised ? this.quantised.bytesPerRow : this.dimension * 4;
  }

  /** Number of images in the index. */
  get size(): number {
    return this.slotOf.size;
  }

  /** Slots in use, live or free for reuse: the extent of the graph and the matrix. */
  get slots(): number {
    return this.used;
  }

  has(id: bigint): boolean {
    return this.slotOf.has(id);
  }

  /** The slot of an indexed image, or undefined. */
  slot(id: bigint): number | undefined {
    return this.slotOf.get(id);
  }

  /** The image in a slot (0n for a free one). */
  idAt(slot: number): bigint {
    return this.slotIds[slot] ?? 0n;
  }

  /** The stored vector of an image, or undefined when it is not indexed. */
  vector(id: bigint): Float32Array | undefined {
    const slot = this.slotOf.get(id);
    return slot === undefined ? undefined : this.matrix.get(slot);
  }

  /** Inserts an image's vector, or replaces it. */
  upsert(id: bigint, vector: Float32Array): void {
    if (vector.length !== this.dimension) {
      throw new RangeError(`vector of image ${id} has ${vector.length} values, the index holds ${this.dimension}`);
    }
    const existing = this.slotOf.get(id);
    if (existing !== undefined) {
      this.graph.add(existing, id, vector);
      this.matrix.set(existing, vector);
      this.quantised?.set(existing, vector);
      return;
    }
    const slot = this.free.pop() ?? this.used++;
    this.reserve(slot + 1);
    // A reused slot is a deleted label: hnswlib un-deletes it and updates its vector in place.
    this.graph.add(slot, id, vector);
    this.matrix.set(slot, vector);
    this.quantised?.set(slot, vector);
    this.slotIds[slot] = id;
    this.slotOf.set(id, slot);
  }

  /** Removes an image; false when it was not indexed. */
  remove(id: bigint): boolean {
    const slot = this.slotOf.get(id);
    if (slot === undefined) return false;
    this.graph.remove(slot);
    this.quantised?.clear(slot);
    this.slotIds[slot] = 0n;
    this.slotOf.delete(id);
    this.free.push(slot);
    return true;
  }

  /**
   * Approximate k nearest neighbours by HNSW. With `allowed`, only images whose slot is set
   * in it are considered (hnswlib checks it while walking the graph, so k results still
   * come back when the filter is narrow, as long as `ef` is wide enough).
   */
  async searchHnsw(query: Float32Array, k: number, ef: number, allowed?: Uint8Array): Promise<Neighbour[]> {
    if (this.size === 0 || k <= 0) return [];
    const count = Math.min(k, this.size);
    const { ids, distances, walkMs } = await this.graph.search(query, count, Math.max(ef, count), allowed);
    this.onWalk(walkMs);
    const out: Neighbour[] = [];
    for (let i = 0; i < ids.length; i++) {
      // hnswlib's inner-product distance is 1 - dot.
      if (ids[i] !== 0n) out.push({ id: ids[i], cosine: 1 - distances[i] });
    }
    return out.sort(byScore);
  }

  /** The compiled hnswlib the graph runs on. */
  get hnswBuild(): HnswBuild {
    return this.graph.build;
  }

  /** Graph requests (searches included) whose answer has not been taken yet (Graph.awaited). */
  get graphAwaited(): number {
    return this.graph.awaited;
  }

  /** Graph changes made and not yet known to be applied (a graph on its own thread). */
  get graphBacklog(): number {
    return this.graph.backlog;
  }

  /** Resolves once the graph has applied every change made before the call. */
  graphSettled(): Promise<void> {
    return this.graph.settled();
  }

  /** Exact top k among the given images (those not in the index are ignored). */
  searchExact(query: Float32Array, k: number, ids: IdList | ArrayLike<bigint>): Neighbour[] {
    return this.searchExactSlots(query, k, this.slotsOf(ids));
  }

  /**
   * Exact top k among the given slots (live ones; the caller passes no free slot, though the
   * int8 mode skips one anyway). An ascending list, as a bitmap of slots gives, is cheapest.
   * Scores are float32 inner products in both scan modes. `float32` scans the float32 rows
   * even in int8 mode: for lists whose best scores sit in the dense middle of the distribution
   * (a filter keeping the images farthest from the query), where int8's error exceeds the
   * gaps between scores and the re-rank misses (recall 0.2-0.4 at 100k, bench/filtered.ts).
   */
  searchExactSlots(query: Float32Array, k: number, rows: Int32Array, float32 = false): Neighbour[] {
    if (rows.length === 0 || k <= 0) return [];
    if (!this.quantised || float32) return this.neighbours(this.matrix.topK(query, Math.min(k, rows.length), rows));
    if (!quantisedPays(k, rows.length)) {
      // A short list: the float32 scan alone, skipping free slots as the int8 scan does.
      const live = rows.filter((slot) => this.slotIds[slot] !== 0n);
      return this.neighbours(this.matrix.topK(query, Math.min(k, live.length), live));
    }
    return this.neighbours(rerank(this.matrix, query, k, this.quantised.topK(query, rerankDepth(k, rows.length), rows)));
  }

  /** Exact top k of every indexed image: a scan of the whole matrix, not the graph. */
  searchExactAll(query: Float32Array, k: number): Neighbour[] {
    if (this.size === 0 || k <= 0) return [];
    const want = Math.min(k, this.size);
    if (this.quantised) {
      const candidates = this.quantised.topKAll(query, rerankDepth(want, this.used), this.used);
      return this.neighbours(rerank(this.matrix, query, want, candidates));
    }
    // Free slots still hold their old vectors here: take as many more as there are, drop them.
    const top = this.matrix.topKAll(query, want + this.free.length, this.used);
    const live = this.neighbours(top).filter((n) => n.id !== 0n);
    return live.slice(0, want);
  }

  /** Exact similarity of the query to every given image that is indexed. */
  scoreAll(query: Float32Array, ids: IdList | ArrayLike<bigint>): Neighbour[] {
    return this.scoreSlots(query, this.slotsOf(ids));
  }

  /** Exact similarity of the query to the image in every given slot. */
  scoreSlots(query: Float32Array, rows: Int32Array): Neighbour[] {
    const scores = new Float32Array(rows.length);
    if (rows.length > 0) this.matrix.dot(query, rows, scores);
    const out: Neighbour[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) out[i] = { id: this.slotIds[rows[i]], cosine: scores[i] };
    return out;
  }

  /** A slot bitmap of the given images, for `searchHnsw`'s filter. */
  allowedSlots(ids: IdList | ArrayLike<bigint>): Uint8Array {
    const bitmap = new Uint8Array(this.used);
    for (const slot of this.slotsOf(ids)) bitmap[slot] = 1;
    return bitmap;
  }

  /** Every indexed image id. */
  ids(): bigint[] {
    return [...this.slotOf.ids()];
  }

  /** Frees the kernel memory; the index is unusable afterwards. */
  dispose(): void {
    this.graph.close();
    this.matrix.dispose();
    this.quantised?.dispose();
  }

  private neighbours(top: TopK): Neighbour[] {
    const out: Neighbour[] = new Array(top.rows.length);
    for (let i = 0; i < top.rows.length; i++) out[i] = { id: this.slotIds[top.rows[i]], cosine: top.scores[i] };
    return out;
  }


  /**
   * Writes a snapshot into `dir` atomically: the graph, the vectors and the slot table go
   * to new files named after the log sequence, then `snapshot.json` naming them replaces the
   * old one by rename. A crash at any point leaves the previous snapshot intact; files of
   * older snapshots are removed afterwards.
   */
  async writeSnapshot(dir: string, attachments: Record<string, Uint8Array> = {}): Promise<void> {
    await mkdir(dir, { recursive: true });
    const stem = `snapshot-${this.lastSeq}-${Date.now().toString(36)}`;
    const graphName = `${stem}.hnsw`;
    const tmpGraph = path.join(dir, `${graphName}.tmp`);
    await this.graph.write(tmpGraph);
    await fsyncFile(tmpGraph);
    await rename(tmpGraph, path.join(dir, graphName));

    const vectors = new Float32Array(this.used * this.dimension);
    for (let slot = 0; slot < this.used; slot++) {
      if (this.slotIds[slot] !== 0n) vectors.set(this.matrix.get(slot), slot * this.dimension);
    }
    const ids = this.slotIds.slice(0, this.used);
    const files: SnapshotManifest["files"] = {
      graph: { name: graphName, ...(await describe(path.join(dir, graphName))) },
      vectors: await writeAtomic(dir, `${stem}.vec`, bytesOf(vectors)),
      ids: await writeAtomic(dir, `${stem}.ids`, bytesOf(ids)),
    };
    for (const [key, bytes] of Object.entries(attachments)) {
      files[key] = await writeAtomic(dir, `${stem}.${key}`, bytes);
    }
    const manifest: SnapshotManifest = {
      format: 1,
      modelId: this.modelId,
      dimension: this.dimension,
      lastSeq: this.lastSeq.toString(),
      slots: this.used,
      files,
      writtenAt: new Date().toISOString(),
    };
    await writeAtomic(dir, MANIFEST, Buffer.from(JSON.stringify(manifest, null, 2)));
    const keep = new Set([MANIFEST, ...Object.values(files).map((f) => f.name)]);
    for (const name of await readdir(dir)) {
      if (!keep.has(name) && name.startsWith("snapshot")) await rm(path.join(dir, name), { force: true });
    }
  }

  /**
   * Loads the snapshot in `dir`. Returns null when there is none; throws SnapshotError when
   * it is unusable (corrupt, or written for another model or dimension), so the caller can
   * log why and rebuild.
   */
  static async loadSnapshot(dir: string, options: VectorIndexOptions): Promise<VectorIndex | null> {
    let text: string;
    try {
      text = await readFile(path.join(dir, MANIFEST), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
    let manifest: SnapshotManifest;
    try {
      manifest = JSON.parse(text) as SnapshotManifest;
    } catch {
      throw new SnapshotError("snapshot.json is not valid JSON");
    }
    if (manifest.format !== 1) throw new SnapshotError(`unknown snapshot format ${manifest.format}`);
    if (manifest.modelId !== options.modelId || manifest.dimension !== options.dimension) {
      throw new SnapshotError(
        `snapshot is for model ${manifest.modelId} (${manifest.dimension} dims), ` +
          `the index is for ${options.modelId} (${options.dimension} dims)`,
      );
    }
    // Verify every file before handing it to hnswlib, which trusts what it reads.
    const contents: Record<string, Buffer> = {};
    for (const key of Object.keys(manifest.files ?? {})) {
      const file = manifest.files[key];
      let bytes: Buffer;
      try {
        bytes = await readFile(path.join(dir, file.name));
      } catch {
        throw new SnapshotError(`snapshot file ${file.name} is missing`);
      }
      if (bytes.length !== file.bytes || (await sha256Sliced(bytes)) !== file.sha256) {
        throw new SnapshotError(`snapshot file ${file.name} does not match its checksum`);
      }
      contents[key] = bytes;
    }
    if (!contents.graph || !contents.vectors || !contents.ids) {
      throw new SnapshotError("snapshot.json does not name the graph, vectors and ids files");
    }
    const slots = manifest.slots;
    const dimension = options.dimension;
    if (contents.vectors!.length !== slots * dimension * 4 || contents.ids!.length !== slots * 8) {
      throw new SnapshotError("snapshot files disagree with the recorded slot count");
    }

    const full = withDefaults(options);
    const ids = bigintsOf(contents.ids!);
    let graph: Graph;
    try {
      const file = path.join(dir, manifest.files.graph.name);
      graph = await readGraph(full.graphThread, dimension, file, ids, full.hnswBuild, full.pace);
    } catch (err) {
      throw new SnapshotError(`snapshot graph ${manifest.files.graph.name} is unreadable: ${(err as Error).message}`);
    }
    const capacity = Math.max(graph.capacity, slots, 1);
    const matrix = await VectorMatrix.create(dimension, capacity);
    const quantised = await quantisedFor(full, capacity);
    const index = new VectorIndex({ ...full, initialCapacity: capacity }, graph, matrix, quantised);
    index.reserve(capacity);

    const vectors = floatsOf(contents.vectors!);
    index.used = slots;
    let sliceStart = performance.now();
    for (let slot = 0; slot < slots; slot++) {
      // Hand the event loop back now and then: health checks keep answering during a load.
      if ((slot & 255) === 0 && performance.now() - sliceStart >= LOAD_SLICE_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceStart = performance.now();
      }
      const id = ids[slot];
      if (id === 0n) {
        index.free.push(slot);
        continue;
      }
      index.slotIds[slot] = id;
      index.slotOf.set(id, slot);
      const vector = vectors.subarray(slot * dimension, (slot + 1) * dimension);
      index.matrix.set(slot, vector);
      index.quantised?.set(slot, vector);
    }
    index.free.reverse(); // lowest free slot reused first
    index.lastSeq = BigInt(manifest.lastSeq);
    for (const [key, bytes] of Object.entries(contents)) {
      if (key !== "graph" && key !== "vectors" && key !== "ids") index.attachments.set(key, bytes);
    }
    return index;
  }

  /** Makes slots 0..rows-1 addressable in the graph, the matrix and the slot table. */
  private reserve(rows: number): void {
    const capacity = this.graph.capacity;
    if (rows > capacity) this.graph.resize(Math.max(rows, capacity * 2));
    const needed = this.graph.capacity;
    this.matrix.ensureCapacity(needed);
    this.quantised?.ensureCapacity(needed);
    if (this.slotIds.length < needed) {
      const grown = new BigInt64Array(needed);
      grown.set(this.slotIds);
      this.slotIds = grown;
    }
  }

  private slotsOf(ids: IdList | ArrayLike<bigint>): Int32Array {
    const words = IdList.of(ids).words;
    const rows = new Int32Array(words.length / 2);
    let n = 0;
    for (let i = 0; i < words.length; i += 2) {
      const slot = this.slotOf.lookup(words[i], words[i + 1]);
      if (slot >= 0) rows[n++] = slot;
    }
    return rows.subarray(0, n);
  }
}

/** A snapshot that cannot be used; the index is rebuilt from the database instead. */
export class SnapshotError extends Error {
  override name = "SnapshotError";
}

const byScore = (a: Neighbour, b: Neighbour) => b.cosine - a.cosine || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

function withDefaults(options: VectorIndexOptions): Required<VectorIndexOptions> {
  return {
    m: 16,
    efConstruction: 200,
    initialCapacity: 1024,
    scanQuantisation: DEFAULT_SCAN_QUANTISATION,
    graphThread: "inline",
    hnswBuild: "auto",
    ...options,
    pace: options.pace ?? UNKNOWN_PACE,
    onWalk: options.onWalk ?? (() => {}),
  };
}

async function quantisedFor(options: Required<VectorIndexOptions>, capacity: number) {
  return options.scanQuantisation === "int8" ? QuantisedMatrix.create(options.dimension, capacity) : undefined;
}


/** The longest a snapshot load runs (checksums, filling the matrix) before yielding. */
const LOAD_SLICE_MS = 10;

/** sha256 of a large buffer, 4 MiB at a time with a yield between (about 10 ms each). */
async function sha256Sliced(bytes: Uint8Array): Promise<string> {
  const hash = createHash("sha256");
  const chunk = 4 << 20;
  for (let at = 0; at < bytes.length; at += chunk) {
    hash.update(bytes.subarray(at, at + chunk));
    if (at + chunk < bytes.length) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return hash.digest("hex");
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function bytesOf(array: Float32Array | BigInt64Array): Buffer {
  return Buffer.from(array.buffer, array.byteOffset, array.byteLength);
}

/** The buffer's bytes as float32 (copied when misaligned). */
function floatsOf(bytes: Buffer): Float32Array {
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return new Float32Array(copy.buffer);
}

function bigintsOf(bytes: Buffer): BigInt64Array {
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return new BigInt64Array(copy.buffer);
}

async function describe(file: string): Promise<{ bytes: number; sha256: string }> {
  const bytes = await readFile(file);
  return { bytes: (await stat(file)).size, sha256: sha256(bytes) };
}

async function fsyncFile(file: string): Promise<void> {
  const handle = await open(file, "r+");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `name` in `dir` by temp file, fsync and rename. */
async function writeAtomic(dir: string, name: string, bytes: Uint8Array) {
  const tmp = path.join(dir, `${name}.tmp`);
  const handle = await open(tmp, "w");
  try {
    await handle.writeFile(bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path.join(dir, name));
  return { name, bytes: bytes.byteLength, sha256: sha256(bytes) };
}
