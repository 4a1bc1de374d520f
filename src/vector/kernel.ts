/**
 * The WASM SIMD exact-scan kernel (native/assembly/kernel.ts, built to native/build/kernel.wasm
 * by `npm run build:native`) and the matrix of vectors it scans.
 *
 * Each VectorMatrix instantiates the module with a linear memory of its own:
 *
 *   [0, base)                  the module's static data (none today)
 *   [base, base + capacity*D*4) the matrix, row-major float32, row r at base + r*D*4
 *   [scratch, memory end)       per-call scratch: query, row list, sort buffers, results
 *
 * `scratch` sits right after the matrix (64-byte aligned), so growing the matrix only moves
 * scratch, whose contents never outlive a call. Growing memory detaches every JS view of it,
 * so views are made fresh for each call and never kept.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

// The slice of the WebAssembly JS API used here; @types/node 20 and lib ES2023 do not declare it.
/** A compiled WebAssembly.Module. */
export type WasmModule = object;
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  compile(bytes: Uint8Array): Promise<WasmModule>;
  Instance: new (module: WasmModule, imports: object) => { readonly exports: object };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** Where `npm run build:native` writes the compiled kernel. */
export const KERNEL_WASM_PATH = fileURLToPath(new URL("../../native/build/kernel.wasm", import.meta.url));

/** The compiled kernel module; every VectorMatrix instantiates it with a memory of its own. */
export interface Kernel {
  /** The file the module was compiled from. */
  readonly path: string;
  readonly module: WasmModule;
}

/** The best rows of a scan, best first: higher score first, equal scores lower row first. */
export interface TopK {
  rows: Int32Array;
  scores: Float32Array;
}

/** The module's exports (see native/assembly/kernel.ts for each one's contract). */
interface KernelExports {
  memory: WasmMemory;
  heapBase(): number;
  firstRowOutOfRange(rows: number, n: number, limit: number): number;
  dotRows(matrix: number, dim: number, query: number, rows: number, n: number, out: number): void;
  topKRange(
    matrix: number,
    dim: number,
    query: number,
    count: number,
    k: number,
    outRows: number,
    outScores: number,
  ): number;
  topKRows(
    matrix: number,
    dim: number,
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

export const PAGE_BYTES = 65_536;
/** wasm32 addresses 4 GiB: 65,536 pages of 64 KiB. */
export const MAX_PAGES = 65_536;
export const DEFAULT_CAPACITY = 1024;
/** Room left for scratch when doubling the matrix would reach the 4 GiB limit. */
export const SCRATCH_HEADROOM_BYTES = 64 * 2 ** 20;
/** The kernel's radix sort keeps 256 int32 counters. */
export const SORT_COUNTS_BYTES = 256 * 4;

let loading: Promise<Kernel> | undefined;

/**
 * Loads (once) and returns the compiled kernel; throws a clear error telling to run
 * `npm run build:native` when the .wasm is missing.
 */
export function loadKernel(): Promise<Kernel> {
  loading ??= compileKernel(KERNEL_WASM_PATH).catch((err: unknown) => {
    loading = undefined; // a later call may find the file built by then
    throw err;
  });
  return loading;
}

async function compileKernel(path: string): Promise<Kernel> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new Error(`the WASM vector kernel is not built (${path} is missing): run \`npm run build:native\``, {
        cause: err,
      });
    }
    throw err;
  }
  try {
    return { path, module: await wasm.compile(bytes) };
  } catch (err) {
    throw new Error(
      `the WASM vector kernel at ${path} does not compile (it needs WebAssembly SIMD, Node 20+); ` +
        "rebuild it with `npm run build:native`",
      { cause: err },
    );
  }
}

/** A fresh instance of the kernel module, with a linear memory of its own; its exports. */
export function instantiateKernel(kernel: Kernel): object {
  return new wasm.Instance(kernel.module, {}).exports;
}

/** Rounds `n` up to a multiple of `to` (a power of two). */
export function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export function checkCount(value: number, name: string, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${name} must be an integer in [0, ${max}], got ${value}`);
  }
}

/** Every component must be finite as a float32 (1e39, say, would be stored as Infinity). */
export function checkFinite(values: ArrayLike<number>, name: string): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(Math.fround(values[i]))) {
      throw new RangeError(`${name}[${i}] is ${values[i]}; components must be finite float32 values`);
    }
  }
}

/** Row-major float32 matrix of `dimension`-wide vectors living in the kernel's linear memory. */
export class VectorMatrix {
  private kernel: KernelExports | undefined;
  private readonly base: number;
  private rowCapacity: number;

  private constructor(
    readonly dimension: number,
    initialCapacity: number,
    kernel: Kernel,
  ) {
    this.kernel = instantiateKernel(kernel) as KernelExports;
    this.base = align(this.kernel.heapBase(), 64);
    this.rowCapacity = 0;
    this.grow(initialCapacity);
  }

  /** A matrix with room for `initialCapacity` rows (1024 by default), all zero. */
  static async create(dimension: number, initialCapacity = DEFAULT_CAPACITY): Promise<VectorMatrix> {
    checkCount(dimension, "dimension", 1 << 20);
    if (dimension === 0) throw new RangeError("dimension must be at least 1");
    checkCount(initialCapacity, "initialCapacity");
    return new VectorMatrix(dimension, initialCapacity, await loadKernel());
  }

  /** How many rows fit without growing; rows never written read as zero vectors. */
  get capacity(): number {
    return this.rowCapacity;
  }

  /** Grows (amortised doubling) so that row index `rows - 1` is writable. */
  ensureCapacity(rows: number): void {
    checkCount(rows, "rows");
    this.exports();
    if (rows <= this.rowCapacity) return;
    // Double, but when that would pass the 4 GiB a memory holds, take only what still leaves
    // room for a call's scratch (64 MiB: the list, sort buffer and results of ~8M rows).
    const fits = Math.floor((MAX_PAGES * PAGE_BYTES - SCRATCH_HEADROOM_BYTES - this.base) / (this.dimension * 4));
    this.grow(Math.max(rows, Math.min(Math.max(this.rowCapacity * 2, 16), fits)));
  }

  /** Writes `vector` (exactly `dimension` finite numbers) to `row`, below `capacity`. */
  set(row: number, vector: ArrayLike<number>): void {
    const k = this.exports();
    this.checkRow(row, "row");
    if (vector.length !== this.dimension) {
      throw new RangeError(`vector has ${vector.length} components, the matrix ${this.dimension}`);
    }
    checkFinite(vector, "vector");
    new Float32Array(k.memory.buffer, this.rowOffset(row), this.dimension).set(vector);
  }

  /** A copy of the row. */
  get(row: number): Float32Array {
    const k = this.exports();
    this.checkRow(row, "row");
    return new Float32Array(k.memory.buffer, this.rowOffset(row), this.dimension).slice();
  }

  /**
   * Inner products of `query` with each listed row, best k first. `rows` may be in any order;
   * a row listed more than once counts once, so the result has min(k, distinct rows) entries.
   */
  topK(query: Float32Array, k: number, rows: Int32Array): TopK {
    const kernel = this.exports();
    this.checkQuery(query);
    checkCount(k, "k");
    const n = rows.length;
    const m = Math.min(k, n);
    if (m === 0) return { rows: new Int32Array(0), scores: new Float32Array(0) };
    const s = this.scratch([
      ["query", this.dimension * 4],
      ["rows", n * 4],
      ["tmp", n * 4],
      ["counts", SORT_COUNTS_BYTES],
      ["outRows", m * 4],
      ["outScores", m * 4],
    ]);
    this.writeScratch(s.query, query, s.rows, rows);
    this.checkRows(s.rows, rows);
    const found = kernel.topKRows(
      this.base,
      this.dimension,
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
    return this.readTopK(s.outRows, s.outScores, found);
  }

  /** Inner products with rows 0..count-1, best k first (full scan). */
  topKAll(query: Float32Array, k: number, count: number): TopK {
    const kernel = this.exports();
    this.checkQuery(query);
    checkCount(k, "k");
    checkCount(count, "count", this.rowCapacity);
    const m = Math.min(k, count);
    if (m === 0) return { rows: new Int32Array(0), scores: new Float32Array(0) };
    const s = this.scratch([
      ["query", this.dimension * 4],
      ["outRows", m * 4],
      ["outScores", m * 4],
    ]);
    this.writeScratch(s.query, query);
    const found = kernel.topKRange(this.base, this.dimension, s.query, count, m, s.outRows, s.outScores);
    return this.readTopK(s.outRows, s.outScores, found);
  }

  /** Inner products of query with the listed rows into out (same order; duplicates kept). */
  dot(query: Float32Array, rows: Int32Array, out: Float32Array): void {
    const kernel = this.exports();
    this.checkQuery(query);
    if (out.length < rows.length) {
      throw new RangeError(`out has room for ${out.length} scores, rows lists ${rows.length}`);
    }
    const n = rows.length;
    if (n === 0) return;
    const s = this.scratch([
      ["query", this.dimension * 4],
      ["rows", n * 4],
      ["out", n * 4],
    ]);
    this.writeScratch(s.query, query, s.rows, rows);
    this.checkRows(s.rows, rows);
    kernel.dotRows(this.base, this.dimension, s.query, s.rows, n, s.out);
    out.set(new Float32Array(kernel.memory.buffer, s.out, n));
  }

  /**
   * Releases the matrix: drops its WebAssembly instance and memory (WebAssembly memory cannot
   * shrink, so it goes back only when collected) and makes every later call throw.
   */
  dispose(): void {
    this.kernel = undefined;
  }

  private exports(): KernelExports {
    if (!this.kernel) throw new Error("VectorMatrix used after dispose()");
    return this.kernel;
  }

  private rowOffset(row: number): number {
    return this.base + row * this.dimension * 4;
  }

  private matrixEnd(capacity = this.rowCapacity): number {
    return align(this.base + capacity * this.dimension * 4, 64);
  }

  private checkRow(row: number, name: string): void {
    if (!Number.isInteger(row) || row < 0 || row >= this.rowCapacity) {
      throw new RangeError(`${name} ${row} is out of range [0, ${this.rowCapacity})`);
    }
  }

  private checkQuery(query: Float32Array): void {
    if (query.length !== this.dimension) {
      throw new RangeError(`query has ${query.length} components, the matrix ${this.dimension}`);
    }
    checkFinite(query, "query");
  }

  /** Throws a RangeError naming the first listed row outside the matrix (rows copied to `at`). */
  private checkRows(at: number, rows: Int32Array): void {
    const bad = this.exports().firstRowOutOfRange(at, rows.length, this.rowCapacity);
    if (bad >= 0) throw new RangeError(`rows[${bad}] = ${rows[bad]} is out of range [0, ${this.rowCapacity})`);
  }

  /** Lays out the named regions after the matrix (16-byte aligned), growing memory to fit. */
  private scratch<N extends string>(regions: [N, number][]): Record<N, number> {
    const at = {} as Record<N, number>;
    let end = this.matrixEnd();
    for (const [name, bytes] of regions) {
      at[name] = end;
      end = align(end + bytes, 16);
    }
    this.reserve(end);
    return at;
  }

  private writeScratch(queryAt: number, query: Float32Array, rowsAt?: number, rows?: Int32Array): void {
    const buffer = this.exports().memory.buffer;
    new Float32Array(buffer, queryAt, this.dimension).set(query);
    if (rows && rowsAt !== undefined) new Int32Array(buffer, rowsAt, rows.length).set(rows);
  }

  private readTopK(rowsAt: number, scoresAt: number, count: number): TopK {
    const buffer = this.exports().memory.buffer;
    return {
      rows: new Int32Array(buffer, rowsAt, count).slice(),
      scores: new Float32Array(buffer, scoresAt, count).slice(),
    };
  }

  /** Makes linear memory at least `bytes` long (for a matrix of `rows` rows plus scratch). */
  private reserve(bytes: number, rows = this.rowCapacity): void {
    const memory = this.exports().memory;
    const have = memory.buffer.byteLength;
    if (bytes <= have) return;
    const pages = Math.ceil(bytes / PAGE_BYTES);
    if (pages > MAX_PAGES) {
      throw new RangeError(
        `the vector kernel needs ${bytes} bytes of memory (${rows} rows x ${this.dimension} dimensions ` +
          "plus scratch); a WebAssembly memory holds at most 4 GiB",
      );
    }
    memory.grow(pages - have / PAGE_BYTES);
  }

  /** Resizes the matrix to `capacity` rows; the new rows read as zero. */
  private grow(capacity: number): void {
    const oldEnd = this.base + this.rowCapacity * this.dimension * 4;
    const newEnd = this.base + capacity * this.dimension * 4;
    const oldMemoryEnd = this.exports().memory.buffer.byteLength;
    this.reserve(this.matrixEnd(capacity), capacity);
    // Bytes past the old end may hold scratch from earlier calls; pages added now are zero.
    const dirtyEnd = Math.min(newEnd, oldMemoryEnd);
    if (dirtyEnd > oldEnd) new Uint8Array(this.exports().memory.buffer, oldEnd, dirtyEnd - oldEnd).fill(0);
    this.rowCapacity = capacity;
  }
}

/**
 * Plain JS reference with the same semantics (for tests and the benchmark): the best `k` of
 * the listed rows of the row-major `matrix` by inner product with `query`, best first, equal
 * scores lower row first, a row listed more than once counting once. Sums in float64, so its
 * scores can differ from the kernel's float32 sums in the last bits.
 */
export function topKJs(
  matrix: Float32Array,
  dimension: number,
  query: Float32Array,
  k: number,
  rows: Int32Array,
): TopK {
  if (query.length !== dimension) throw new RangeError(`query has ${query.length} components, the matrix ${dimension}`);
  checkCount(k, "k");
  const rowCount = Math.floor(matrix.length / dimension);
  const seen = new Uint8Array(rowCount);
  const heapRows = new Int32Array(Math.min(k, rows.length));
  const heapScores = new Float32Array(heapRows.length);
  const cap = heapRows.length;
  let size = 0;
  const worse = (sa: number, ra: number, sb: number, rb: number) => sa < sb || (sa === sb && ra > rb);
  const place = (i: number, s: number, r: number) => {
    heapScores[i] = s;
    heapRows[i] = r;
  };
  const siftDown = (i: number, end: number, s: number, r: number) => {
    for (;;) {
      let c = 2 * i + 1;
      if (c >= end) break;
      if (c + 1 < end && worse(heapScores[c + 1], heapRows[c + 1], heapScores[c], heapRows[c])) c++;
      if (!worse(heapScores[c], heapRows[c], s, r)) break;
      place(i, heapScores[c], heapRows[c]);
      i = c;
    }
    place(i, s, r);
  };
  for (let i = 0; i < rows.length && cap > 0; i++) {
    const row = rows[i];
    if (!Number.isInteger(row) || row < 0 || row >= rowCount) {
      throw new RangeError(`rows[${i}] = ${row} is out of range [0, ${rowCount})`);
    }
    if (seen[row]) continue;
    seen[row] = 1;
    let sum = 0;
    const offset = row * dimension;
    for (let j = 0; j < dimension; j++) sum += matrix[offset + j] * query[j];
    const score = Number.isNaN(sum) ? -Infinity : Math.fround(sum);
    if (size < cap) {
      let at = size++;
      while (at > 0) {
        const parent = (at - 1) >> 1;
        if (!worse(score, row, heapScores[parent], heapRows[parent])) break;
        place(at, heapScores[parent], heapRows[parent]);
        at = parent;
      }
      place(at, score, row);
    } else if (worse(heapScores[0], heapRows[0], score, row)) {
      siftDown(0, size, score, row);
    }
  }
  for (let end = size - 1; end > 0; end--) {
    const s = heapScores[end];
    const r = heapRows[end];
    place(end, heapScores[0], heapRows[0]);
    siftDown(0, end, s, r);
  }
  return { rows: heapRows.slice(0, size), scores: heapScores.slice(0, size) };
}
