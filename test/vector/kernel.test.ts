import { describe, expect, it } from "vitest";
import { loadKernel, topKJs, VectorMatrix, type TopK } from "../../src/vector/kernel.js";
import { makeRandom as random } from "../../bench/vectors.js";

/**
 * A matrix and the same data as a plain Float32Array. Integer components in [-8, 8] keep every
 * product and sum exact in float32 (|sum| <= 513 * 64 < 2^24), so the kernel and the float64
 * reference must agree bit for bit, and scores tie often.
 */
async function integerMatrix(dimension: number, count: number, seed: number) {
  const next = random(seed);
  const matrix = await VectorMatrix.create(dimension, count);
  const flat = new Float32Array(dimension * count);
  for (let i = 0; i < flat.length; i++) flat[i] = Math.floor(next() * 17) - 8;
  for (let r = 0; r < count; r++) matrix.set(r, flat.subarray(r * dimension, (r + 1) * dimension));
  const query = Float32Array.from({ length: dimension }, () => Math.floor(next() * 17) - 8);
  return { matrix, flat, query, next };
}

/** Unit vectors with random float components, as embeddings are. */
async function normalisedMatrix(dimension: number, count: number, seed: number) {
  const next = random(seed);
  const unit = () => {
    const v = Float64Array.from({ length: dimension }, () => next() * 2 - 1);
    const norm = Math.hypot(...v);
    return Float32Array.from(v, (x) => x / norm);
  };
  const matrix = await VectorMatrix.create(dimension);
  matrix.ensureCapacity(count);
  const flat = new Float32Array(dimension * count);
  for (let r = 0; r < count; r++) {
    const v = unit();
    flat.set(v, r * dimension);
    matrix.set(r, v);
  }
  return { matrix, flat, query: unit(), next };
}

function allRows(count: number): Int32Array {
  return Int32Array.from({ length: count }, (_, i) => i);
}

/** `count` rows below `limit` in random order, some listed twice. */
function candidateList(next: () => number, count: number, limit: number): Int32Array {
  return Int32Array.from({ length: count }, () => Math.floor(next() * limit));
}

function plain(result: TopK) {
  return { rows: [...result.rows], scores: [...result.scores] };
}

/**
 * The kernel sums in float32, the reference in float64: scores agree to `eps`, and the rows
 * agree at every rank except among scores closer than `eps`, where either order is right.
 */
function expectSameRanking(actual: TopK, expected: TopK, eps: number): void {
  expect(actual.rows.length).toBe(expected.rows.length);
  const n = expected.rows.length;
  for (let i = 0; i < n; i++) {
    expect(Math.abs(actual.scores[i] - expected.scores[i])).toBeLessThan(eps);
    const nearTie =
      (i > 0 && expected.scores[i - 1] - expected.scores[i] < eps) ||
      (i + 1 < n && expected.scores[i] - expected.scores[i + 1] < eps);
    if (!nearTie) expect(actual.rows[i]).toBe(expected.rows[i]);
  }
  expect(new Set(actual.rows).size).toBe(n);
}

describe("VectorMatrix against the plain JS reference", () => {
  for (const dimension of [1, 3, 4, 8, 12, 512, 513]) {
    it(`ranks exactly as topKJs, dimension ${dimension}`, async () => {
      const count = 301; // not a multiple of 4: the last rows take the single-row path
      const { matrix, flat, query, next } = await integerMatrix(dimension, count, dimension);
      for (const k of [1, 10, 400]) {
        const expected = plain(topKJs(flat, dimension, query, k, allRows(count)));
        expect(expected.rows.length).toBe(Math.min(k, count));
        expect(plain(matrix.topKAll(query, k, count))).toEqual(expected);
        expect(plain(matrix.topK(query, k, allRows(count).reverse()))).toEqual(expected);

        const list = candidateList(next, 150, count);
        const fromList = plain(topKJs(flat, dimension, query, k, list));
        expect(fromList.rows.length).toBe(Math.min(k, new Set(list).size));
        expect(plain(matrix.topK(query, k, list))).toEqual(fromList);
      }
      matrix.dispose();
    });
  }

  it("ranks normalised 512-d vectors as topKJs does, up to float32 rounding", async () => {
    const count = 2003;
    const { matrix, flat, query, next } = await normalisedMatrix(512, count, 7);
    for (const k of [1, 10, 100]) {
      expectSameRanking(matrix.topKAll(query, k, count), topKJs(flat, 512, query, k, allRows(count)), 1e-5);
      const list = candidateList(next, 700, count);
      expectSameRanking(matrix.topK(query, k, list), topKJs(flat, 512, query, k, list), 1e-5);
    }
    matrix.dispose();
  });

  it("gives a row the same float32 score whether it is scanned, listed or dotted", async () => {
    const count = 1001;
    const { matrix, query, next } = await normalisedMatrix(100, count, 9);
    const scanned = matrix.topKAll(query, 50, count);
    const shuffled = allRows(count).sort(() => next() - 0.5);
    expect(plain(matrix.topK(query, 50, shuffled))).toEqual(plain(scanned));
    const out = new Float32Array(50);
    matrix.dot(query, scanned.rows, out);
    expect([...out]).toEqual([...scanned.scores]);
    matrix.dispose();
  });

  it("scans only the first `count` rows in topKAll", async () => {
    const { matrix, flat, query } = await integerMatrix(16, 100, 3);
    expect(plain(matrix.topKAll(query, 10, 37))).toEqual(plain(topKJs(flat, 16, query, 10, allRows(37))));
    matrix.dispose();
  });

  it("dot gives each listed row's inner product in list order, repeats included", async () => {
    const { matrix, flat, query, next } = await integerMatrix(513, 64, 11);
    const list = candidateList(next, 203, 64);
    const out = new Float32Array(list.length);
    matrix.dot(query, list, out);
    const expected = [...list].map((row) => {
      let sum = 0;
      for (let j = 0; j < 513; j++) sum += flat[row * 513 + j] * query[j];
      return sum;
    });
    expect([...out]).toEqual(expected);
    // And the same score as the top-k paths give the row.
    const best = matrix.topK(query, 1, list);
    expect(best.scores[0]).toBe(Math.max(...out));
    matrix.dispose();
  });
});

describe("VectorMatrix ranking rules", () => {
  it("breaks ties by the lower row first, however the rows are listed", async () => {
    const matrix = await VectorMatrix.create(5, 20);
    const same = [0.25, -1, 3, 0.5, 2];
    for (const row of [11, 3, 17, 7, 5]) matrix.set(row, same);
    matrix.set(9, [0.25, -1, 3, 0.5, 2.5]); // just above the tied rows
    const query = new Float32Array([1, 1, 1, 1, 1]);

    const listed = matrix.topK(query, 4, new Int32Array([17, 5, 11, 9, 7, 3]));
    expect([...listed.rows]).toEqual([9, 3, 5, 7]);
    expect([...listed.scores]).toEqual([5.25, 4.75, 4.75, 4.75]);

    const scanned = matrix.topKAll(query, 6, 20);
    expect([...scanned.rows]).toEqual([9, 3, 5, 7, 11, 17]);
    matrix.dispose();
  });

  it("keeps the lowest rows when every row ties, across a full scan", async () => {
    const matrix = await VectorMatrix.create(4, 103);
    for (let r = 0; r < 103; r++) matrix.set(r, [1, 2, 3, 4]);
    const query = new Float32Array([1, 0, 0, 0]);
    expect([...matrix.topKAll(query, 10, 103).rows]).toEqual([...allRows(10)]);
    const shuffled = allRows(103).sort((a, b) => ((a * 37) % 103) - ((b * 37) % 103));
    expect([...matrix.topK(query, 5, shuffled).rows]).toEqual([0, 1, 2, 3, 4]);
    matrix.dispose();
  });

  it("counts a row listed several times once", async () => {
    const { matrix, query } = await integerMatrix(8, 10, 5);
    const result = matrix.topK(query, 10, new Int32Array([4, 4, 2, 4, 2, 9]));
    expect([...result.rows].sort()).toEqual([2, 4, 9]);
    matrix.dispose();
  });

  it("returns nothing for an empty list, k = 0 or count = 0", async () => {
    const { matrix, query } = await integerMatrix(8, 10, 5);
    const empty = { rows: [], scores: [] };
    expect(plain(matrix.topK(query, 10, new Int32Array(0)))).toEqual(empty);
    expect(plain(matrix.topK(query, 0, allRows(10)))).toEqual(empty);
    expect(plain(matrix.topKAll(query, 10, 0))).toEqual(empty);
    expect(plain(matrix.topKAll(query, 0, 10))).toEqual(empty);
    matrix.dot(query, new Int32Array(0), new Float32Array(0));
    expect(plain(topKJs(new Float32Array(80), 8, query, 5, new Int32Array(0)))).toEqual(empty);
    matrix.dispose();
  });
});

describe("VectorMatrix storage", () => {
  it("round-trips rows through set and get as float32", async () => {
    const matrix = await VectorMatrix.create(3, 4);
    matrix.set(2, [0.1, -2.5, 1e-7]);
    const row = matrix.get(2);
    expect([...row]).toEqual([Math.fround(0.1), -2.5, Math.fround(1e-7)]);
    row[0] = 42; // a copy: changing it leaves the matrix alone
    expect(matrix.get(2)[0]).toBe(Math.fround(0.1));
    expect([...matrix.get(3)]).toEqual([0, 0, 0]);
    matrix.dispose();
  });

  it("keeps existing rows when it grows, and new rows read as zero", async () => {
    const matrix = await VectorMatrix.create(6, 2);
    expect(matrix.capacity).toBe(2);
    matrix.set(0, [1, 2, 3, 4, 5, 6]);
    matrix.set(1, [-1, -2, -3, -4, -5, -6]);
    // Fill the scratch space right after the matrix, which growth then takes over.
    const query = new Float32Array([9, 9, 9, 9, 9, 9]);
    matrix.topK(query, 2, new Int32Array(5000).fill(1));

    matrix.ensureCapacity(3);
    expect(matrix.capacity).toBeGreaterThanOrEqual(4); // doubled, not one row at a time
    matrix.ensureCapacity(5000);
    expect(matrix.capacity).toBeGreaterThanOrEqual(5000);
    expect([...matrix.get(0)]).toEqual([1, 2, 3, 4, 5, 6]);
    expect([...matrix.get(1)]).toEqual([-1, -2, -3, -4, -5, -6]);
    for (const row of [2, 100, 4999]) expect([...matrix.get(row)]).toEqual([0, 0, 0, 0, 0, 0]);
    matrix.set(4999, [0, 0, 0, 0, 0, 1]);
    expect([...matrix.topKAll(query, 2, 5000).rows]).toEqual([0, 4999]);

    const before = matrix.capacity;
    matrix.ensureCapacity(10);
    expect(matrix.capacity).toBe(before);
    matrix.dispose();
  });

  it("loads the compiled kernel once", async () => {
    const [a, b] = await Promise.all([loadKernel(), loadKernel()]);
    expect(a).toBe(b);
    expect(a.path).toMatch(/native\/build\/kernel\.wasm$/);
  });
});

describe("VectorMatrix argument checks", () => {
  it("names the listed row that is out of range", async () => {
    const { matrix, query } = await integerMatrix(4, 10, 1);
    expect(() => matrix.topK(query, 3, new Int32Array([1, 2, 10]))).toThrow(
      new RangeError("rows[2] = 10 is out of range [0, 10)"),
    );
    expect(() => matrix.topK(query, 3, new Int32Array([-1]))).toThrow(/rows\[0\] = -1 is out of range/);
    expect(() => matrix.dot(query, new Int32Array([3, 12]), new Float32Array(2))).toThrow(/rows\[1\] = 12/);
    expect(() => topKJs(new Float32Array(40), 4, query, 3, new Int32Array([0, 10]))).toThrow(/rows\[1\] = 10/);
    expect(() => matrix.get(10)).toThrow(RangeError);
    expect(() => matrix.set(-1, [1, 2, 3, 4])).toThrow(RangeError);
    expect(() => matrix.topKAll(query, 3, 11)).toThrow(RangeError);
    matrix.dispose();
  });

  it("rejects vectors and queries of the wrong size or with non-finite components", async () => {
    const { matrix, query } = await integerMatrix(4, 10, 1);
    expect(() => matrix.set(0, [1, 2, 3])).toThrow(/3 components, the matrix 4/);
    expect(() => matrix.set(0, [1, Number.NaN, 3, 4])).toThrow(/vector\[1\] is NaN/);
    expect(() => matrix.set(0, [1, 2, 1e39, 4])).toThrow(/vector\[2\] is 1e\+39/);
    expect(() => matrix.topKAll(new Float32Array(5), 1, 10)).toThrow(RangeError);
    expect(() => matrix.topK(new Float32Array([0, Infinity, 0, 0]), 1, allRows(3))).toThrow(/query\[1\]/);
    expect(() => matrix.topKAll(query, -1, 10)).toThrow(RangeError);
    expect(() => matrix.topKAll(query, 1.5, 10)).toThrow(RangeError);
    expect(() => matrix.dot(query, allRows(3), new Float32Array(2))).toThrow(/room for 2/);
    await expect(VectorMatrix.create(0)).rejects.toThrow(RangeError);
    matrix.dispose();
  });

  it("refuses to grow past the 4 GiB a WebAssembly memory holds, and stays usable", async () => {
    await expect(VectorMatrix.create(512, 3_000_000)).rejects.toThrow(/at most 4 GiB/);
    const { matrix, flat, query } = await integerMatrix(512, 10, 2);
    expect(() => matrix.ensureCapacity(2_200_000)).toThrow(/at most 4 GiB/);
    expect(matrix.capacity).toBe(10);
    expect(plain(matrix.topKAll(query, 3, 10))).toEqual(plain(topKJs(flat, 512, query, 3, allRows(10))));
    matrix.dispose();
  });

  it("grows short of doubling when only that fits", async () => {
    const matrix = await VectorMatrix.create(512, 1_500_000); // 3 GB: doubling would pass 4 GiB
    matrix.set(1_499_999, new Float32Array(512).fill(1));
    matrix.ensureCapacity(1_600_000);
    expect(matrix.capacity).toBeGreaterThanOrEqual(1_600_000);
    matrix.set(1_599_999, new Float32Array(512).fill(2));
    const result = matrix.topK(new Float32Array(512).fill(1), 3, new Int32Array([0, 1_499_999, 1_599_999]));
    expect([...result.rows]).toEqual([1_599_999, 1_499_999, 0]);
    matrix.dispose();
  });

  it("refuses use after dispose", async () => {
    const { matrix, query } = await integerMatrix(4, 10, 1);
    matrix.dispose();
    expect(() => matrix.topKAll(query, 1, 10)).toThrow(/after dispose/);
    expect(() => matrix.get(0)).toThrow(/after dispose/);
  });
});
