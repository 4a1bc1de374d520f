// glimpse's exact-scan kernel: inner products of one query with rows of a row-major float32
// matrix, and the best k of them, with 128-bit SIMD. Compiled by AssemblyScript to
// native/build/kernel.wasm (`npm run build:native`) and driven by src/vector/kernel.ts;
// native/README.md describes the memory layout and the measurements behind the choices here.
//
// The module allocates nothing. The caller owns the linear memory: it places the matrix at or
// after `heapBase()` and the per-call scratch (query, row list, results) after the matrix, and
// passes byte addresses. `dim` is the number of float32 components per row, so a row is
// `dim * 4` bytes and row r starts at `matrix + r * dim * 4`. Rows are not padded; a dimension
// that is not a multiple of 4 leaves rows unaligned, which WebAssembly's v128 loads accept.
//
// Ranking: higher score first; equal scores rank the lower row index first. A NaN score (only
// possible when a product overflows to infinity and meets the opposite infinity) ranks as
// -Infinity, so the order stays total.

/** First byte after the module's static data: where the caller may start placing its data. */
export function heapBase(): usize {
  return __heap_base;
}

// ---------------------------------------------------------------------------------------------
// Inner products
//
// The scan is bound by memory, not arithmetic, so what matters is how many rows are in flight
// and whether the hardware prefetcher sees them as streams. The full scan reads four rows side
// by side, one from each quarter of the range: four sequential streams. Rows next to each other
// would share 4 KiB pages and look like random access to the prefetcher (two adjacent rows at
// once measured 2.3x slower than one row at a time); eight streams measured slower than four.
// A candidate list is gathered eight rows at a time, one from each eighth of the list, since
// there every row starts cold and more rows in flight hide more memory latency (measured 1.3x
// faster than four for random lists). README.md has the figures.
//
// Every path sums in the same order (one f32x4 accumulator over 4-float steps, lanes summed
// pairwise, then a scalar tail), so a row gets the same score whichever path reads it, and
// equal rows tie exactly.

/** Sum of the four lanes, in the order every path uses. */
// @ts-ignore: decorator
@inline
function lanes(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

/** The finished score of a row: lanes summed, scalar tail added, NaN ranked as -Infinity. */
// @ts-ignore: decorator
@inline
function finish(acc: v128, row: usize, query: usize, from: usize, end: usize): f32 {
  let sum = lanes(acc);
  for (let o = from; o < end; o += 4) sum += load<f32>(row + o) * load<f32>(query + o);
  return isNaN(sum) ? -Infinity : sum;
}

/** Inner product of `dim` float32 at `row` with `dim` float32 at `query`. */
function dotRow(row: usize, query: usize, dim: i32): f32 {
  let a = f32x4.splat(0);
  const end4 = (<usize>(dim & ~3)) << 2;
  for (let o: usize = 0; o < end4; o += 16) {
    a = f32x4.add(a, f32x4.mul(v128.load(row + o), v128.load(query + o)));
  }
  return finish(a, row, query, end4, (<usize>dim) << 2);
}

// Results of dotRows4 and dotRows8: globals, because a function returns one value and the
// module allocates nothing.
let dot0: f32 = 0;
let dot1: f32 = 0;
let dot2: f32 = 0;
let dot3: f32 = 0;
let dot4: f32 = 0;
let dot5: f32 = 0;
let dot6: f32 = 0;
let dot7: f32 = 0;

/** Inner products of the query with four rows at once, into dot0..dot3. */
// @ts-ignore: decorator
@inline
function dotRows4(r0: usize, r1: usize, r2: usize, r3: usize, query: usize, dim: i32): void {
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  const end4 = (<usize>(dim & ~3)) << 2;
  for (let o: usize = 0; o < end4; o += 16) {
    const q = v128.load(query + o);
    a0 = f32x4.add(a0, f32x4.mul(v128.load(r0 + o), q));
    a1 = f32x4.add(a1, f32x4.mul(v128.load(r1 + o), q));
    a2 = f32x4.add(a2, f32x4.mul(v128.load(r2 + o), q));
    a3 = f32x4.add(a3, f32x4.mul(v128.load(r3 + o), q));
  }
  const end = (<usize>dim) << 2;
  dot0 = finish(a0, r0, query, end4, end);
  dot1 = finish(a1, r1, query, end4, end);
  dot2 = finish(a2, r2, query, end4, end);
  dot3 = finish(a3, r3, query, end4, end);
}

/** Inner products of the query with eight rows at once, into dot0..dot7. */
// @ts-ignore: decorator
@inline
function dotRows8(
  r0: usize,
  r1: usize,
  r2: usize,
  r3: usize,
  r4: usize,
  r5: usize,
  r6: usize,
  r7: usize,
  query: usize,
  dim: i32,
): void {
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  let a4 = f32x4.splat(0);
  let a5 = f32x4.splat(0);
  let a6 = f32x4.splat(0);
  let a7 = f32x4.splat(0);
  const end4 = (<usize>(dim & ~3)) << 2;
  for (let o: usize = 0; o < end4; o += 16) {
    const q = v128.load(query + o);
    a0 = f32x4.add(a0, f32x4.mul(v128.load(r0 + o), q));
    a1 = f32x4.add(a1, f32x4.mul(v128.load(r1 + o), q));
    a2 = f32x4.add(a2, f32x4.mul(v128.load(r2 + o), q));
    a3 = f32x4.add(a3, f32x4.mul(v128.load(r3 + o), q));
    a4 = f32x4.add(a4, f32x4.mul(v128.load(r4 + o), q));
    a5 = f32x4.add(a5, f32x4.mul(v128.load(r5 + o), q));
    a6 = f32x4.add(a6, f32x4.mul(v128.load(r6 + o), q));
    a7 = f32x4.add(a7, f32x4.mul(v128.load(r7 + o), q));
  }
  const end = (<usize>dim) << 2;
  dot0 = finish(a0, r0, query, end4, end);
  dot1 = finish(a1, r1, query, end4, end);
  dot2 = finish(a2, r2, query, end4, end);
  dot3 = finish(a3, r3, query, end4, end);
  dot4 = finish(a4, r4, query, end4, end);
  dot5 = finish(a5, r5, query, end4, end);
  dot6 = finish(a6, r6, query, end4, end);
  dot7 = finish(a7, r7, query, end4, end);
}

/**
 * Inner products of the query with the rows listed at `list + i*4 + j*eighth` for j in 0..7
 * (one row from each eighth of a list, `eighth` bytes apart), into dot0..dot7.
 */
// @ts-ignore: decorator
@inline
function dotListed8(matrix: usize, stride: usize, query: usize, dim: i32, list: usize, i: i32, eighth: usize): void {
  const p = list + ((<usize>i) << 2);
  dotRows8(
    matrix + (<usize>load<i32>(p)) * stride,
    matrix + (<usize>load<i32>(p + eighth)) * stride,
    matrix + (<usize>load<i32>(p + 2 * eighth)) * stride,
    matrix + (<usize>load<i32>(p + 3 * eighth)) * stride,
    matrix + (<usize>load<i32>(p + 4 * eighth)) * stride,
    matrix + (<usize>load<i32>(p + 5 * eighth)) * stride,
    matrix + (<usize>load<i32>(p + 6 * eighth)) * stride,
    matrix + (<usize>load<i32>(p + 7 * eighth)) * stride,
    query,
    dim,
  );
}

// ---------------------------------------------------------------------------------------------
// Top-k: a binary heap of the best k so far with its worst entry at the root, kept in two
// parallel arrays (scores: f32, rows: i32) that become the result, best first.

/** Whether (sa, ra) ranks below (sb, rb). */
// @ts-ignore: decorator
@inline
function worse(sa: f32, ra: i32, sb: f32, rb: i32): bool {
  return sa < sb || (sa == sb && ra > rb);
}

/** Puts (s, r) at heap index `i` and moves it down until neither child ranks below it. */
function siftDown(scores: usize, rows: usize, i: i32, size: i32, s: f32, r: i32): void {
  while (true) {
    let child = 2 * i + 1;
    if (child >= size) break;
    let cs = load<f32>(scores + ((<usize>child) << 2));
    let cr = load<i32>(rows + ((<usize>child) << 2));
    const right = child + 1;
    if (right < size) {
      const rs = load<f32>(scores + ((<usize>right) << 2));
      const rr = load<i32>(rows + ((<usize>right) << 2));
      if (worse(rs, rr, cs, cr)) {
        child = right;
        cs = rs;
        cr = rr;
      }
    }
    if (!worse(cs, cr, s, r)) break;
    store<f32>(scores + ((<usize>i) << 2), cs);
    store<i32>(rows + ((<usize>i) << 2), cr);
    i = child;
  }
  store<f32>(scores + ((<usize>i) << 2), s);
  store<i32>(rows + ((<usize>i) << 2), r);
}

/** Appends (s, r) to a heap of `size` entries and moves it up into place. */
function siftUp(scores: usize, rows: usize, size: i32, s: f32, r: i32): void {
  let i = size;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    const ps = load<f32>(scores + ((<usize>parent) << 2));
    const pr = load<i32>(rows + ((<usize>parent) << 2));
    if (!worse(s, r, ps, pr)) break;
    store<f32>(scores + ((<usize>i) << 2), ps);
    store<i32>(rows + ((<usize>i) << 2), pr);
    i = parent;
  }
  store<f32>(scores + ((<usize>i) << 2), s);
  store<i32>(rows + ((<usize>i) << 2), r);
}

// The heap during one call. The root's entry is cached so that the common case, a candidate
// below the k-th best, costs one comparison.
let heapScores: usize = 0;
let heapRows: usize = 0;
let heapSize: i32 = 0;
let heapCap: i32 = 0;
let rootScore: f32 = 0;
let rootRow: i32 = 0;

function heapReset(rows: usize, scores: usize, k: i32): void {
  heapRows = rows;
  heapScores = scores;
  heapSize = 0;
  heapCap = k;
}

// @ts-ignore: decorator
@inline
function offer(s: f32, r: i32): void {
  if (heapSize < heapCap) {
    siftUp(heapScores, heapRows, heapSize, s, r);
    heapSize++;
    rootScore = load<f32>(heapScores);
    rootRow = load<i32>(heapRows);
  } else if (s > rootScore || (s == rootScore && r < rootRow)) {
    siftDown(heapScores, heapRows, 0, heapSize, s, r);
    rootScore = load<f32>(heapScores);
    rootRow = load<i32>(heapRows);
  }
}

/** Sorts the heap best first in place (heapsort) and returns its size. */
function heapFinish(): i32 {
  const scores = heapScores;
  const rows = heapRows;
  for (let end = heapSize - 1; end > 0; end--) {
    const off = (<usize>end) << 2;
    const s = load<f32>(scores + off);
    const r = load<i32>(rows + off);
    store<f32>(scores + off, load<f32>(scores));
    store<i32>(rows + off, load<i32>(rows));
    siftDown(scores, rows, 0, end, s, r);
  }
  return heapSize;
}

// ---------------------------------------------------------------------------------------------
// Candidate lists: sorted (rows in address order are cheaper to stream) and deduplicated.

/** Number of bits needed for values below `limit`. */
// @ts-ignore: decorator
@inline
function bitsBelow(limit: i32): i32 {
  return limit <= 1 ? 0 : 32 - <i32>clz(<u32>(limit - 1));
}

/**
 * Sorts the `n` int32 at `rows`, all in [0, limit), ascending (LSD radix sort, 8-bit digits,
 * as many passes as `limit` needs), using `tmp` (n int32) and `counts` (256 int32) as scratch;
 * returns the address of the sorted array, `rows` or `tmp`.
 */
function sortRows(rows: usize, n: i32, limit: i32, tmp: usize, counts: usize): usize {
  if (n < 2) return rows;
  let src = rows;
  let dst = tmp;
  const bits = bitsBelow(limit);
  for (let shift = 0; shift < bits; shift += 8) {
    memory.fill(counts, 0, 256 << 2);
    for (let i = 0; i < n; i++) {
      const c = counts + ((<usize>((load<u32>(src + ((<usize>i) << 2)) >> shift) & 255)) << 2);
      store<u32>(c, load<u32>(c) + 1);
    }
    let total: u32 = 0;
    for (let d = 0; d < 256; d++) {
      const c = counts + ((<usize>d) << 2);
      const count = load<u32>(c);
      store<u32>(c, total);
      total += count;
    }
    for (let i = 0; i < n; i++) {
      const v = load<u32>(src + ((<usize>i) << 2));
      const c = counts + ((<usize>((v >> shift) & 255)) << 2);
      const at = load<u32>(c);
      store<u32>(c, at + 1);
      store<u32>(dst + ((<usize>at) << 2), v);
    }
    const t = src;
    src = dst;
    dst = t;
  }
  return src;
}

/** Removes repeats from the sorted `n` int32 at `rows` in place; returns the new length. */
function dedupeSorted(rows: usize, n: i32): i32 {
  if (n < 2) return n;
  let last = load<i32>(rows);
  let kept = 1;
  for (let i = 1; i < n; i++) {
    const v = load<i32>(rows + ((<usize>i) << 2));
    if (v != last) {
      store<i32>(rows + ((<usize>kept) << 2), v);
      kept++;
      last = v;
    }
  }
  return kept;
}

// ---------------------------------------------------------------------------------------------
// Exports

/**
 * Index of the first of the `n` int32 at `rows` outside [0, limit), or -1 if all are in range.
 */
export function firstRowOutOfRange(rows: usize, n: i32, limit: i32): i32 {
  for (let i = 0; i < n; i++) {
    if (<u32>load<i32>(rows + ((<usize>i) << 2)) >= <u32>limit) return i;
  }
  return -1;
}

/**
 * Writes the inner product of the query with each of the `n` rows listed at `rows` (all in
 * range) to the float32 array at `out`, in list order.
 */
export function dotRows(matrix: usize, dim: i32, query: usize, rows: usize, n: i32, out: usize): void {
  const stride = (<usize>dim) << 2;
  const groups = n >> 3;
  const eighth = (<usize>groups) << 2;
  for (let i = 0; i < groups; i++) {
    dotListed8(matrix, stride, query, dim, rows, i, eighth);
    const o = out + ((<usize>i) << 2);
    store<f32>(o, dot0);
    store<f32>(o + eighth, dot1);
    store<f32>(o + 2 * eighth, dot2);
    store<f32>(o + 3 * eighth, dot3);
    store<f32>(o + 4 * eighth, dot4);
    store<f32>(o + 5 * eighth, dot5);
    store<f32>(o + 6 * eighth, dot6);
    store<f32>(o + 7 * eighth, dot7);
  }
  for (let i = groups << 3; i < n; i++) {
    const off = (<usize>i) << 2;
    store<f32>(out + off, dotRow(matrix + (<usize>load<i32>(rows + off)) * stride, query, dim));
  }
}

/**
 * The best `k` of rows 0..count-1 by inner product with the query, best first into `outRows`
 * (int32) and `outScores` (float32), each with room for min(k, count); returns how many it
 * wrote, min(k, count).
 */
export function topKRange(
  matrix: usize,
  dim: i32,
  query: usize,
  count: i32,
  k: i32,
  outRows: usize,
  outScores: usize,
): i32 {
  heapReset(outRows, outScores, k);
  if (k <= 0) return 0;
  const stride = (<usize>dim) << 2;
  const quarter = count >> 2;
  const q = (<usize>quarter) * stride;
  let row = matrix;
  for (let r = 0; r < quarter; r++) {
    dotRows4(row, row + q, row + 2 * q, row + 3 * q, query, dim);
    offer(dot0, r);
    offer(dot1, r + quarter);
    offer(dot2, r + 2 * quarter);
    offer(dot3, r + 3 * quarter);
    row += stride;
  }
  for (let r = quarter << 2; r < count; r++) {
    offer(dotRow(matrix + (<usize>r) * stride, query, dim), r);
  }
  return heapFinish();
}

/**
 * The best `k` of the `n` rows listed at `rows` (any order, all in [0, limit), a row listed
 * more than once counting once), best first into `outRows` and `outScores`, each with room
 * for min(k, n); returns how many it wrote. Sorts the list in place, using `tmp` (n int32) and
 * `counts` (256 int32) as scratch.
 */
export function topKRows(
  matrix: usize,
  dim: i32,
  query: usize,
  rows: usize,
  n: i32,
  limit: i32,
  k: i32,
  tmp: usize,
  counts: usize,
  outRows: usize,
  outScores: usize,
): i32 {
  heapReset(outRows, outScores, k);
  if (k <= 0) return 0;
  // A bitmap's slots come ascending and distinct: nothing to sort or drop.
  let list = rows;
  let m = n;
  if (!ascending(rows, n)) {
    list = sortRows(rows, n, limit, tmp, counts);
    m = dedupeSorted(list, n);
  }
  const stride = (<usize>dim) << 2;
  const groups = m >> 3;
  const eighth = (<usize>groups) << 2;
  for (let i = 0; i < groups; i++) {
    dotListed8(matrix, stride, query, dim, list, i, eighth);
    const p = list + ((<usize>i) << 2);
    offer(dot0, load<i32>(p));
    offer(dot1, load<i32>(p + eighth));
    offer(dot2, load<i32>(p + 2 * eighth));
    offer(dot3, load<i32>(p + 3 * eighth));
    offer(dot4, load<i32>(p + 4 * eighth));
    offer(dot5, load<i32>(p + 5 * eighth));
    offer(dot6, load<i32>(p + 6 * eighth));
    offer(dot7, load<i32>(p + 7 * eighth));
  }
  for (let i = groups << 3; i < m; i++) {
    const r = load<i32>(list + ((<usize>i) << 2));
    offer(dotRow(matrix + (<usize>r) * stride, query, dim), r);
  }
  return heapFinish();
}

// ---------------------------------------------------------------------------------------------
// int8 rows
//
// A quantised matrix stores each row as `stride` signed bytes (the dimension rounded up to 16,
// padding zero) and, in a separate float32 array, the row's scale: component j of the row is
// about code[j] * scale. A scale that is not positive marks a row that is absent (never
// written, or deleted): scans skip it, so it is never returned. The query comes as `stride`
// int16 (padding zero), scaled by the caller so that no sum can overflow int32 (|code| <= 127,
// so dim * 127 * max|query| < 2^31).
//
// A row's integer dot product is exact: i8 lanes are sign-extended to i16 and multiplied
// pairwise into i32 lanes (i32x4.dot_i16x8_s), and integer sums do not depend on order. Its
// score is f32(dot) * scale; ranking is as for float rows (higher first, lower row on a tie).
// The full scan reads four rows from the four quarters of the range, a list eight rows at a
// time, for the reasons given above for float rows.

/** The exact integer dot product of `stride` int8 at `row` with `stride` int16 at `query`. */
function dotRowI8(row: usize, query: usize, stride: usize): i32 {
  let a = i32x4.splat(0);
  for (let o: usize = 0; o < stride; o += 16) {
    const v = v128.load(row + o);
    const q = query + (o << 1);
    a = i32x4.add(a, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(v), v128.load(q)));
    a = i32x4.add(a, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(v), v128.load(q, 16)));
  }
  return lanesI32(a);
}

/** Sum of the four i32 lanes. */
// @ts-ignore: decorator
@inline
function lanesI32(v: v128): i32 {
  return i32x4.extract_lane(v, 0) + i32x4.extract_lane(v, 1) + i32x4.extract_lane(v, 2) + i32x4.extract_lane(v, 3);
}

// Results of dotRowsI8x4 and dotRowsI8x8.
let idot0: i32 = 0;
let idot1: i32 = 0;
let idot2: i32 = 0;
let idot3: i32 = 0;
let idot4: i32 = 0;
let idot5: i32 = 0;
let idot6: i32 = 0;
let idot7: i32 = 0;

/** Adds the products of 16 codes at `row + o` with the query's 16 int16 at `q` to `acc`. */
// @ts-ignore: decorator
@inline
function stepI8(acc: v128, row: usize, o: usize, q0: v128, q1: v128): v128 {
  const v = v128.load(row + o);
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(v), q0));
  return i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(v), q1));
}

/** Integer dot products of the query with four int8 rows at once, into idot0..idot3. */
// @ts-ignore: decorator
@inline
function dotRowsI8x4(r0: usize, r1: usize, r2: usize, r3: usize, query: usize, stride: usize): void {
  let a0 = i32x4.splat(0);
  let a1 = i32x4.splat(0);
  let a2 = i32x4.splat(0);
  let a3 = i32x4.splat(0);
  for (let o: usize = 0; o < stride; o += 16) {
    const q = query + (o << 1);
    const q0 = v128.load(q);
    const q1 = v128.load(q, 16);
    a0 = stepI8(a0, r0, o, q0, q1);
    a1 = stepI8(a1, r1, o, q0, q1);
    a2 = stepI8(a2, r2, o, q0, q1);
    a3 = stepI8(a3, r3, o, q0, q1);
  }
  idot0 = lanesI32(a0);
  idot1 = lanesI32(a1);
  idot2 = lanesI32(a2);
  idot3 = lanesI32(a3);
}

/** Integer dot products of the query with eight int8 rows at once, into idot0..idot7. */
// @ts-ignore: decorator
@inline
function dotRowsI8x8(
  r0: usize,
  r1: usize,
  r2: usize,
  r3: usize,
  r4: usize,
  r5: usize,
  r6: usize,
  r7: usize,
  query: usize,
  stride: usize,
): void {
  let a0 = i32x4.splat(0);
  let a1 = i32x4.splat(0);
  let a2 = i32x4.splat(0);
  let a3 = i32x4.splat(0);
  let a4 = i32x4.splat(0);
  let a5 = i32x4.splat(0);
  let a6 = i32x4.splat(0);
  let a7 = i32x4.splat(0);
  for (let o: usize = 0; o < stride; o += 16) {
    const q = query + (o << 1);
    const q0 = v128.load(q);
    const q1 = v128.load(q, 16);
    a0 = stepI8(a0, r0, o, q0, q1);
    a1 = stepI8(a1, r1, o, q0, q1);
    a2 = stepI8(a2, r2, o, q0, q1);
    a3 = stepI8(a3, r3, o, q0, q1);
    a4 = stepI8(a4, r4, o, q0, q1);
    a5 = stepI8(a5, r5, o, q0, q1);
    a6 = stepI8(a6, r6, o, q0, q1);
    a7 = stepI8(a7, r7, o, q0, q1);
  }
  idot0 = lanesI32(a0);
  idot1 = lanesI32(a1);
  idot2 = lanesI32(a2);
  idot3 = lanesI32(a3);
  idot4 = lanesI32(a4);
  idot5 = lanesI32(a5);
  idot6 = lanesI32(a6);
  idot7 = lanesI32(a7);
}

/** Offers row `r` with integer dot `dot` when the row is present (its scale is positive). */
// @ts-ignore: decorator
@inline
function offerI8(scales: usize, dot: i32, r: i32): void {
  const scale = load<f32>(scales + ((<usize>r) << 2));
  if (scale > 0) offer(<f32>dot * scale, r);
}

// Where touchRow's loads go, so that they are not optimised away.
let touched: u32 = 0;

/** Loads one byte of each 64-byte line of a row: a prefetch (WebAssembly has none). */
// @ts-ignore: decorator
@inline
function touchRow(row: usize, stride: usize): void {
  let t: u32 = 0;
  for (let o: usize = 0; o < stride; o += 64) t += load<u8>(row + o);
  touched += t;
}

/** Whether the `n` int32 at `rows` are strictly ascending (sorted, no repeats). */
function ascending(rows: usize, n: i32): bool {
  let last = -1;
  for (let i = 0; i < n; i++) {
    const v = load<i32>(rows + ((<usize>i) << 2));
    if (v <= last) return false;
    last = v;
  }
  return true;
}

/**
 * The exact integer dot product of the int16 query with each of the `n` int8 rows listed at
 * `rows` (all in range), into the int32 array at `out`, in list order; absent rows included.
 */
export function dotRowsI8(codes: usize, stride: i32, query: usize, rows: usize, n: i32, out: usize): void {
  const s = <usize>stride;
  for (let i = 0; i < n; i++) {
    const off = (<usize>i) << 2;
    store<i32>(out + off, dotRowI8(codes + (<usize>load<i32>(rows + off)) * s, query, s));
  }
}

/**
 * The best `k` present rows of 0..count-1 by f32(integer dot) * scale, best first into
 * `outRows` (int32) and `outScores` (float32, before the query's scale), each with room for
 * min(k, count); returns how many it wrote (fewer when rows are absent).
 */
export function topKRangeI8(
  codes: usize,
  scales: usize,
  stride: i32,
  query: usize,
  count: i32,
  k: i32,
  outRows: usize,
  outScores: usize,
): i32 {
  heapReset(outRows, outScores, k);
  if (k <= 0) return 0;
  const s = <usize>stride;
  const quarter = count >> 2;
  const q = (<usize>quarter) * s;
  let row = codes;
  for (let r = 0; r < quarter; r++) {
    dotRowsI8x4(row, row + q, row + 2 * q, row + 3 * q, query, s);
    offerI8(scales, idot0, r);
    offerI8(scales, idot1, r + quarter);
    offerI8(scales, idot2, r + 2 * quarter);
    offerI8(scales, idot3, r + 3 * quarter);
    row += s;
  }
  for (let r = quarter << 2; r < count; r++) {
    offerI8(scales, dotRowI8(codes + (<usize>r) * s, query, s), r);
  }
  return heapFinish();
}

/**
 * The best `k` present rows among the `n` listed at `rows` (any order, all in [0, limit), a
 * row listed more than once counting once), as topKRangeI8. A strictly ascending list (what a
 * bitmap of slots gives) is scanned as it is; any other is sorted in place first, using `tmp`
 * (n int32) and `counts` (256 int32) as scratch.
 */
export function topKRowsI8(
  codes: usize,
  scales: usize,
  stride: i32,
  query: usize,
  rows: usize,
  n: i32,
  limit: i32,
  k: i32,
  tmp: usize,
  counts: usize,
  outRows: usize,
  outScores: usize,
): i32 {
  heapReset(outRows, outScores, k);
  if (k <= 0) return 0;
  let list = rows;
  let m = n;
  if (!ascending(rows, n)) {
    list = sortRows(rows, n, limit, tmp, counts);
    m = dedupeSorted(list, n);
  }
  const s = <usize>stride;
  const groups = m >> 3;
  const eighth = (<usize>groups) << 2;
  for (let i = 0; i < groups; i++) {
    const p = list + ((<usize>i) << 2);
    // Touch the next group's rows while this one is summed. An int8 row is only eight cache
    // lines, too short for the prefetcher to start on; this took a 10% list of 100k x 512
    // from 1.5 to 1.05-1.2 ms (best of 40), where two groups ahead or every other line did worse.
    if (i + 1 < groups) {
      const n = p + 4;
      for (let j: usize = 0; j < 8; j++) touchRow(codes + (<usize>load<i32>(n + j * eighth)) * s, s);
    }
    const w0 = load<i32>(p);
    const w1 = load<i32>(p + eighth);
    const w2 = load<i32>(p + 2 * eighth);
    const w3 = load<i32>(p + 3 * eighth);
    const w4 = load<i32>(p + 4 * eighth);
    const w5 = load<i32>(p + 5 * eighth);
    const w6 = load<i32>(p + 6 * eighth);
    const w7 = load<i32>(p + 7 * eighth);
    dotRowsI8x8(
      codes + (<usize>w0) * s,
      codes + (<usize>w1) * s,
      codes + (<usize>w2) * s,
      codes + (<usize>w3) * s,
      codes + (<usize>w4) * s,
      codes + (<usize>w5) * s,
      codes + (<usize>w6) * s,
      codes + (<usize>w7) * s,
      query,
      s,
    );
    offerI8(scales, idot0, w0);
    offerI8(scales, idot1, w1);
    offerI8(scales, idot2, w2);
    offerI8(scales, idot3, w3);
    offerI8(scales, idot4, w4);
    offerI8(scales, idot5, w5);
    offerI8(scales, idot6, w6);
    offerI8(scales, idot7, w7);
  }
  for (let i = groups << 3; i < m; i++) {
    const r = load<i32>(list + ((<usize>i) << 2));
    offerI8(scales, dotRowI8(codes + (<usize>r) * s, query, s), r);
  }
  return heapFinish();
}
