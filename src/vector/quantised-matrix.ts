/**
 * int8 rows for the exact scan: the same vectors as a VectorMatrix at a quarter of the bytes,
 * scanned by the kernel's integer SIMD loops (native/assembly/kernel.ts, "int8 rows").
 *
 * Quantisation is symmetric and per row: a row's scale is its largest magnitude / 127 and each
 * component is stored as round(x / scale), so a row needs nothing but itself: an insert or an
 * update never re-quantises other rows, and a snapshot's float32 vectors are quantised as they
 * load. (A per-dimension scale would follow the data's spread better, but needs statistics of
 * the whole collection that drift as images come and go.) The query is quantised per call to
 * int16 with the most steps that keep every integer sum inside int32, so the row's rounding is
 * the only error that matters; the float32 re-rank of the best candidates removes it from the
 * final ranking (VectorIndex does that).
 *
 * Layout of the instance's linear memory:
 *
 *   [base, base + capacity*stride)      codes, row r at base + r*stride (stride = dimension
 *                                       rounded up to 16 bytes, padding zero)
 *   [scales, scales + capacity*4)       float32 scale of each row; 0 marks an absent row
 *   [scratch, memory end)               per-call scratch, as in VectorMatrix
 */
import {
  align,
  checkCount,
  checkFinite,
  DEFAULT_CAPACITY,
  instantiateKernel,
  loadKernel,
  MAX_PAGES,
  PAGE_BYTES,
  SCRATCH_HEADROOM_BYTES,
  SORT_COUNTS_BYTES,
  type Kernel,
  type TopK,
  type VectorMatrix,
  type WasmMemory,
} from "./kernel.js";

/** The int8 exports of the module (see native/assembly/kernel.ts). */
interface QuantisedExports {
  memory: WasmMemory;
  heapBase(): number;
  firstRowOutOfRange(rows: number, n: number, limit: number): number;
  dotRowsI8(codes: number, stride: number, query: number, rows: number, n: number, out: number): void;
  topKRangeI8(
    codes: number,
    scales: number,
    stride: number,
    query: number,
    count: number,
    k: number,
    outRows: number,
    outScores: number,
  ): number;
  topKRowsI8(
    codes: number,
    scales: number,
    stride: number,
    query: number,
    rows: number,
    n: number,
    limit: number,
    k: number,
    tmp: number,
    counts: number,
    outRows: number,
    outScores: number,
  ): number;
}

/** Largest code magnitude: symmetric, so -128 is never used and negation is exact. */
const CODE_MAX = 127;
/** The scale stored for an all-zero row: positive (present), and its codes are all zero. */
const ZERO_ROW_SCALE = 2 ** -126;

/** A quantised query: int16 steps padded to the row stride, and the size of one step. */
export interface QuantisedQuery {
  codes: Int16Array;
  scale: number;
}

/** Bytes of one int8 row: the dimension rounded up to 16 (one v128 load). */
export function int8Stride(dimension: number): number {
  return align(dimension, 16);
}

/**
 * Quantises `vector` into `codes` (at least its length; the rest is left alone) and returns
 * the row's scale: symmetric, largest magnitude -> 127. An all-zero vector gets a tiny
 * positive scale so that it still counts as present.
 */
export function quantiseRow(vector: ArrayLike<number>, codes: Int8Array): number {
  let max = 0;
  for (let i = 0; i < vector.length; i++) max = Math.max(max, Math.abs(vector[i]));
  if (max === 0) {
    codes.fill(0, 0, vector.length);
    return ZERO_ROW_SCALE;
  }
  const scale = Math.fround(max / CODE_MAX);
  for (let i = 0; i < vector.length; i++) {
    codes[i] = Math.max(-CODE_MAX, Math.min(CODE_MAX, Math.round(vector[i] / scale)));
  }
  return scale;
}

/**
 * Quantises a query to int16 over `stride` components (zero past its length), with as many
 * steps as int32 sums allow: `dimension * 127 * steps < 2^31`, at most 32,767 steps.
 */
export function quantiseQuery(query: ArrayLike<number>, stride: number): QuantisedQuery {
  const steps = Math.max(1, Math.min(32_767, Math.floor((2 ** 31 - 1) / (CODE_MAX * query.length))));
  const codes = new Int16Array(stride);
  let max = 0;
  for (let i = 0; i < query.length; i++) max = Math.max(max, Math.abs(query[i]));
  if (max === 0) return { codes, scale: 0 };
  const scale = max / steps;
  for (let i = 0; i < query.length; i++) {
    codes[i] = Math.max(-steps, Math.min(steps, Math.round(query[i] / scale)));
  }
  return { codes, scale };
}

/** int8 rows of `dimension`-wide vectors in the kernel's linear memory, scanned by integer SIMD. */
export class QuantisedMatrix {
  /** Bytes per row of codes. */
  readonly stride: number;
  private kernel: QuantisedExports | undefined;
  private readonly base: number;
  private rowCapacity = 0;

  private constructor(
    readonly dimension: number,
    initialCapacity: number,
    kernel: Kernel,
  ) {
    this.stride = int8Stride(dimension);
    this.kernel = instantiateKernel(kernel) as QuantisedExports;
    this.base = align(this.kernel.heapBase(), 64);
    this.grow(initialCapacity);
  }

  /** A matrix with room for `initialCapacity` rows (1024 by default), all absent. */
  static async create(dimension: number, initialCapacity = DEFAULT_CAPACITY): Promise<QuantisedMatrix> {
    checkCount(dimension, "dimension", 1 << 20);
    if (dimension === 0) throw new RangeError("dimension must be at least 1");
    checkCount(initialCapacity, "initialCapacity");
    return new QuantisedMatrix(dimension, initialCapacity, await loadKernel());
  }

  /** How many rows fit without growing. */
  get capacity(): number {
    return this.rowCapacity;
  }

  /** Bytes one row takes: its codes and its scale. */
  get bytesPerRow(): number {
    return this.stride + 4;
  }

  /** Grows (amortised doubling) so that row index `rows - 1` is writable. */
  ensureCapacity(rows: number): void {
    checkCount(rows, "rows");
    this.exports();
    if (rows <= this.rowCapacity) return;
    const fits = Math.floor((MAX_PAGES * PAGE_BYTES - SCRATCH_HEADROOM_BYTES - this.base) / this.bytesPerRow);
    this.grow(Math.max(rows, Math.min(Math.max(this.rowCapacity * 2, 16), fits)));
  }

  /** Quantises `vector` (exactly `dimension` finite numbers) into `row`, which becomes present. */
  set(row: number, vector: ArrayLike<number>): void {
    const k = this.exports();
    this.checkRow(row);
    if (vector.length !== this.dimension) {
      throw new RangeError(`vector has ${vector.length} components, the matrix ${this.dimension}`);
    }
    checkFinite(vector, "vector");
    const codes = new Int8Array(k.memory.buffer, this.base + row * this.stride, this.dimension);
    new Float32Array(k.memory.buffer, this.scalesAt(), this.rowCapacity)[row] = quantiseRow(vector, codes);
  }

  /** Marks `row` absent: no scan returns it until it is set again. */
  clear(row: number): void {
    const k = this.exports();
    this.checkRow(row);
    new Float32Array(k.memory.buffer, this.scalesAt(), this.rowCapacity)[row] = 0;
  }

  /** Whether `row` holds a vector (set and not cleared). */
  has(row: number): boolean {
    const k = this.exports();
    this.checkRow(row);
    return new Float32Array(k.memory.buffer, this.scalesAt(), this.rowCapacity)[row] > 0;
  }

  /** A copy of the row's codes and its scale (0 for an absent row). */
  row(row: number): { codes: Int8Array; scale: number } {
    const k = this.exports();
    this.checkRow(row);
    return {
      codes: new Int8Array(k.memory.buffer, this.base + row * this.stride, this.dimension).slice(),
      scale: new Float32Array(k.memory.buffer, this.scalesAt(), this.rowCapacity)[row],
    };
  }

  /**
   * The best `k` present rows among those listed, by approximate inner product (the int8 dot
   * product scaled back), best first. `rows` may be in any order (an ascending list skips the
   * sort); a row listed more than once counts once; absent rows are skipped.
   */
  topK(query: Float32Array, k: number, rows: Int32Array): TopK {
    const kernel = this.exports();
    const q = this.quantise(query);
    checkCount(k, "k");
    const n = rows.length;
    const m = Math.min(k, n);
    if (m === 0) return { rows: new Int32Array(0), scores: new Float32Array(0) };
    const s = this.scratch([
      ["query", this.stride * 2],
      ["rows", n * 4],
      ["tmp", n * 4],
      ["counts", SORT_COUNTS_BYTES],
      ["outRows", m * 4],
      ["outScores", m * 4],
    ]);
    const buffer = kernel.memory.buffer;
    new Int16Array(buffer, s.query, this.stride).set(q.codes);
    new Int32Array(buffer, s.rows, n).set(rows);
    const bad = kernel.firstRowOutOfRange(s.rows, n, this.rowCapacity);
    if (bad >= 0) throw new RangeError(`rows[${bad}] = ${rows[bad]} is out of range [0, ${this.rowCapacity})`);
    const found = kernel.topKRowsI8(
      this.base,
      this.scalesAt(),
      this.stride,
      s.query,
      s.rows,
      n,
      this.rowCapacity,
      m,
      s.tmp,
      s.counts,
      s.outRows,
      s.outScores,
    );
    return this.readTopK(s.outRows, s.outScores, found, q.scale);
  }

  /** The best `k` present rows of 0..count-1 (full scan), as topK. */
  topKAll(query: Float32Array, k: number, count: number): TopK {
    const kernel = this.exports();
    const q = this.quantise(query);
    checkCount(k, "k");
    checkCount(count, "count", this.rowCapacity);
    const m = Math.min(k, count);
    if (m === 0) return { rows: new Int32Array(0), scores: new Float32Array(0) };
    const s = this.scratch([
      ["query", this.stride * 2],
      ["outRows", m * 4],
      ["outScores", m * 4],
    ]);
    new Int16Array(kernel.memory.buffer, s.query, this.stride).set(q.codes);
    const found = kernel.topKRangeI8(this.base, this.scalesAt(), this.stride, s.query, count, m, s.outRows, s.outScores);
    return this.readTopK(s.outRows, s.outScores, found, q.scale);
  }

  /**
   * The exact integer dot product of an int16 query (`stride` long, as quantiseQuery makes
   * it) with each listed row's codes, into `out` in list order; absent rows included.
   */
  dotCodes(query: Int16Array, rows: Int32Array, out: Int32Array): void {
    const kernel = this.exports();
    if (query.length !== this.stride) throw new RangeError(`query has ${query.length} codes, a row ${this.stride}`);
    if (out.length < rows.length) throw new RangeError(`out has room for ${out.length}, rows lists ${rows.length}`);
    const n = rows.length;
    if (n === 0) return;
    const s = this.scratch([
      ["query", this.stride * 2],
      ["rows", n * 4],
      ["out", n * 4],
    ]);
    const buffer = kernel.memory.buffer;
    new Int16Array(buffer, s.query, this.stride).set(query);
    new Int32Array(buffer, s.rows, n).set(rows);
    const bad = kernel.firstRowOutOfRange(s.rows, n, this.rowCapacity);
    if (bad >= 0) throw new RangeError(`rows[${bad}] = ${rows[bad]} is out of range [0, ${this.rowCapacity})`);
    kernel.dotRowsI8(this.base, this.stride, s.query, s.rows, n, s.out);
    out.set(new Int32Array(kernel.memory.buffer, s.out, n));
  }

  /** Releases the matrix (see VectorMatrix.dispose). */
  dispose(): void {
    this.kernel = undefined;
  }

  private exports(): QuantisedExports {
    if (!this.kernel) throw new Error("QuantisedMatrix used after dispose()");
    return this.kernel;
  }

  private quantise(query: Float32Array): QuantisedQuery {
    if (query.length !== this.dimension) {
      throw new RangeError(`query has ${query.length} components, the matrix ${this.dimension}`);
    }
    checkFinite(query, "query");
    return quantiseQuery(query, this.stride);
  }

  private checkRow(row: number): void {
    if (!Number.isInteger(row) || row < 0 || row >= this.rowCapacity) {
      throw new RangeError(`row ${row} is out of range [0, ${this.rowCapacity})`);
    }
  }

  private scalesAt(capacity = this.rowCapacity): number {
    return align(this.base + capacity * this.stride, 16);
  }

  private end(capacity = this.rowCapacity): number {
    return align(this.scalesAt(capacity) + capacity * 4, 64);
  }

  /** Lays out the named regions after the scales (16-byte aligned), growing memory to fit. */
  private scratch<N extends string>(regions: [N, number][]): Record<N, number> {
    const at = {} as Record<N, number>;
    let end = this.end();
    for (const [name, bytes] of regions) {
      at[name] = end;
      end = align(end + bytes, 16);
    }
    this.reserve(end);
    return at;
  }

  private readTopK(rowsAt: number, scoresAt: number, count: number, queryScale: number): TopK {
    const buffer = this.exports().memory.buffer;
    const scores = new Float32Array(buffer, scoresAt, count).slice();
    for (let i = 0; i < count; i++) scores[i] *= queryScale;
    return { rows: new Int32Array(buffer, rowsAt, count).slice(), scores };
  }

  private reserve(bytes: number, rows = this.rowCapacity): void {
    const memory = this.exports().memory;
    const have = memory.buffer.byteLength;
    if (bytes <= have) return;
    const pages = Math.ceil(bytes / PAGE_BYTES);
    if (pages > MAX_PAGES) {
      throw new RangeError(
        `the int8 vector matrix needs ${bytes} bytes of memory (${rows} rows x ${this.bytesPerRow} bytes ` +
          "plus scratch); a WebAssembly memory holds at most 4 GiB",
      );
    }
    memory.grow(pages - have / PAGE_BYTES);
  }

  /** Resizes to `capacity` rows: the scales move up past the new codes; new rows are absent. */
  private grow(capacity: number): void {
    const oldScales =
      this.rowCapacity === 0
        ? new Float32Array(0)
        : new Float32Array(this.exports().memory.buffer, this.scalesAt(), this.rowCapacity).slice();
    this.reserve(this.end(capacity), capacity);
    const buffer = this.exports().memory.buffer;
    // Everything past the old codes (old scales, old scratch) is rewritten: zero, then scales.
    const from = this.base + this.rowCapacity * this.stride;
    new Uint8Array(buffer, from, this.end(capacity) - from).fill(0);
    new Float32Array(buffer, this.scalesAt(capacity), capacity).set(oldScales);
    this.rowCapacity = capacity;
  }
}

/** Candidates per wanted result that the int8 scan hands to the float32 re-rank. */
export const RERANK_FACTOR = 4;
/** ...and at least this many more, so that a small k still re-ranks a useful pool. */
const RERANK_EXTRA = 32;

/**
 * How many int8 candidates to re-rank for the best k of n: 4k, at least k + 32. On the
 * benchmark sets (bench/quantised.ts) 2k already gives recall@10 1.0 against the float32
 * scan and k alone 0.96-0.99; the margin covers data less kind than those.
 */
export function rerankDepth(k: number, n: number): number {
  return Math.min(n, Math.max(k * RERANK_FACTOR, k + RERANK_EXTRA));
}

/**
 * Whether scanning n rows as int8 and re-ranking beats scanning them as float32: only when the
 * list is several times the re-rank depth. The re-rank gathers its rows from all over the
 * float32 matrix, and at 200 rows of 100,000 (k = 10, 42 re-ranked) the float32 scan alone was
 * already as fast (bench/quantised.ts).
 */
export function quantisedPays(k: number, n: number): boolean {
  return n >= 8 * rerankDepth(k, n);
}

/**
 * The best `k` of an int8 scan's candidates by their float32 inner products from `matrix`:
 * the float32 kernel's top k of just those rows, so the same scores and tie order (higher
 * first, lower row first) a float32 scan of them gives.
 */
export function rerank(matrix: VectorMatrix, query: Float32Array, k: number, candidates: TopK): TopK {
  return matrix.topK(query, Math.min(k, candidates.rows.length), candidates.rows);
}

/**
 * Plain JS reference of the kernel's integer dot product (for tests): the sum of code x query
 * step over the row, exact in float64 for any dimension the matrix accepts.
 */
export function dotCodesJs(codes: Int8Array, query: Int16Array): number {
  let sum = 0;
  for (let i = 0; i < codes.length; i++) sum += codes[i] * query[i];
  return sum;
}
