import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  dotCodesJs,
  int8Stride,
  QuantisedMatrix,
  quantiseQuery,
  quantiseRow,
} from "../../src/vector/quantised-matrix.js";
import { VectorIndex, type ScanQuantisation } from "../../src/vector/vector-index.js";
import { clipLikeVectors, clusteredVectors, makeRandom } from "../../bench/vectors.js";

/** Vectors with components in [-1, 1): not normalised, so row scales differ. */
function randomVectors(next: () => number, count: number, dimension: number): Float32Array[] {
  return Array.from({ length: count }, () => Float32Array.from({ length: dimension }, () => next() * 2 - 1));
}

async function filledMatrix(vectors: Float32Array[], dimension: number, capacity = vectors.length) {
  const matrix = await QuantisedMatrix.create(dimension, capacity);
  vectors.forEach((v, r) => matrix.set(r, v));
  return matrix;
}

/**
 * What the kernel ranks by, computed in JS from the stored codes: f32(integer dot) x row
 * scale, then x the query's step, best first, lower row first on a tie; absent rows skipped.
 */
function referenceTopK(matrix: QuantisedMatrix, query: Float32Array, k: number, rows: Iterable<number>) {
  const q = quantiseQuery(query, matrix.stride);
  const scored: { row: number; score: number }[] = [];
  for (const row of new Set(rows)) {
    const { codes, scale } = matrix.row(row);
    if (!(scale > 0)) continue;
    const score = Math.fround(Math.fround(dotCodesJs(codes, q.codes)) * scale);
    scored.push({ row, score });
  }
  scored.sort((a, b) => b.score - a.score || a.row - b.row);
  const top = scored.slice(0, k);
  return { rows: top.map((s) => s.row), scores: top.map((s) => Math.fround(s.score * q.scale)) };
}

const plain = (t: { rows: Int32Array; scores: Float32Array }) => ({ rows: [...t.rows], scores: [...t.scores] });

describe("int8 kernel against the plain JS reference", () => {
  for (const dimension of [1, 3, 16, 17, 100, 512, 513]) {
    it(`gives exact integer dot products and the same ranking, dimension ${dimension}`, async () => {
      const next = makeRandom(dimension);
      const count = 203; // not a multiple of 4 or 8: the single-row tails run too
      const vectors = randomVectors(next, count, dimension);
      const matrix = await filledMatrix(vectors, dimension);
      const query = randomVectors(next, 1, dimension)[0];
      const q = quantiseQuery(query, matrix.stride);

      const list = Int32Array.from({ length: 300 }, () => Math.floor(next() * count));
      const out = new Int32Array(list.length);
      matrix.dotCodes(q.codes, list, out);
      expect([...out]).toEqual([...list].map((row) => dotCodesJs(matrix.row(row).codes, q.codes)));

      for (const k of [1, 10, 250]) {
        expect(plain(matrix.topKAll(query, k, count))).toEqual(referenceTopK(matrix, query, k, Array(count).keys()));
        expect(plain(matrix.topK(query, k, list))).toEqual(referenceTopK(matrix, query, k, list));
        const ascending = Int32Array.from(new Set(list)).sort();
        expect(plain(matrix.topK(query, k, ascending))).toEqual(referenceTopK(matrix, query, k, ascending));
      }
      matrix.dispose();
    });
  }

  it("keeps the largest possible sums inside int32", async () => {
    const dimension = 4096;
    const matrix = await QuantisedMatrix.create(dimension, 2);
    matrix.set(0, new Float32Array(dimension).fill(1));
    matrix.set(1, new Float32Array(dimension).fill(-1));
    const q = quantiseQuery(new Float32Array(dimension).fill(1), matrix.stride);
    const out = new Int32Array(2);
    matrix.dotCodes(q.codes, Int32Array.of(0, 1), out);
    const expected = dimension * 127 * q.codes[0];
    expect(expected).toBeGreaterThan(2 ** 30); // near the limit, not far below it
    expect([...out]).toEqual([expected, -expected]);
    matrix.dispose();
  });

  it("quantises each row on its own: codes within ±127, error at most half a step", () => {
    const next = makeRandom(5);
    for (const v of [...randomVectors(next, 20, 64), new Float32Array(64), Float32Array.of(-3, 0.001, 2)]) {
      const codes = new Int8Array(v.length);
      const scale = quantiseRow(v, codes);
      expect(scale).toBeGreaterThan(0);
      const max = Math.max(...v.map(Math.abs));
      if (max > 0) expect(Math.max(...codes.map(Math.abs))).toBe(127);
      for (let i = 0; i < v.length; i++) expect(Math.abs(codes[i] * scale - v[i])).toBeLessThanOrEqual(scale / 2 + 1e-9);
    }
    expect(int8Stride(1)).toBe(16);
    expect(int8Stride(512)).toBe(512);
    expect(int8Stride(513)).toBe(528);
  });

  it("never returns a cleared or never-written row, even when k asks for more", async () => {
    const next = makeRandom(8);
    const vectors = randomVectors(next, 50, 32);
    const matrix = await filledMatrix(vectors, 32, 64); // rows 50..63 never written
    const query = vectors[7];
    const best = matrix.topKAll(query, 5, 50).rows;
    for (const row of best) matrix.clear(row);
    matrix.clear(0);
    const gone = new Set([...best, 0]);
    const all = matrix.topKAll(query, 64, 64);
    expect(all.rows.length).toBe(50 - gone.size);
    for (const row of all.rows) expect(gone.has(row) || row >= 50).toBe(false);
    const listed = matrix.topK(query, 64, Int32Array.from({ length: 64 }, (_, i) => 63 - i));
    expect(plain(listed)).toEqual(plain(all));
    expect(matrix.has(best[0])).toBe(false);
    matrix.set(best[0], vectors[best[0]]);
    expect(matrix.topKAll(query, 1, 64).rows[0]).toBe(best[0]);
    matrix.dispose();
  });

  it("keeps every row and scale when it grows", async () => {
    const next = makeRandom(9);
    const vectors = randomVectors(next, 300, 24);
    const matrix = await QuantisedMatrix.create(24, 4);
    const query = vectors[0];
    for (let r = 0; r < vectors.length; r++) {
      matrix.ensureCapacity(r + 1);
      matrix.set(r, vectors[r]);
      if (r === 10) matrix.clear(3);
      if (r % 37 === 0) matrix.topKAll(query, 10, r + 1); // leaves scratch behind the matrix
    }
    expect(matrix.capacity).toBeGreaterThanOrEqual(300);
    const fresh = await filledMatrix(vectors, 24);
    fresh.clear(3);
    expect(plain(matrix.topKAll(query, 300, 300))).toEqual(plain(fresh.topKAll(query, 300, 300)));
    for (const r of [0, 1, 3, 150, 299]) expect(matrix.row(r)).toEqual(fresh.row(r));
    matrix.dispose();
    fresh.dispose();
  });

  it("names what is wrong with bad arguments", async () => {
    const matrix = await QuantisedMatrix.create(8, 10);
    expect(() => matrix.topKAll(new Float32Array(7), 1, 10)).toThrow(/query has 7 components, the matrix 8/);
    expect(() => matrix.topK(new Float32Array(8), 1, Int32Array.of(2, 10))).toThrow(/rows\[1\] = 10 is out of range/);
    expect(() => matrix.set(10, new Float32Array(8))).toThrow(/row 10 is out of range/);
    expect(() => matrix.set(0, new Float32Array(8).fill(Infinity))).toThrow(/vector\[0\] is Infinity/);
    expect(() => matrix.topKAll(new Float32Array(8), 1, 11)).toThrow(/count must be an integer in \[0, 10\]/);
    matrix.dispose();
    expect(() => matrix.topKAll(new Float32Array(8), 1, 1)).toThrow(/after dispose/);
  });
});

describe("VectorIndex exact search on int8 rows with float32 re-rank", () => {
  const N = 6_000;
  const DIM = 128;
  const K = 10;
  const idOf = (i: number) => 7_000_000_000_000_000_000n + BigInt(i) * 4_194_304n;
  const sets = {
    clustered: clusteredVectors({ count: N, dimension: DIM, clusters: 60, queries: 40, seed: 3 }),
    "clip-like": clipLikeVectors({ count: N, dimension: DIM, clusters: 60, queries: 40, seed: 3 }),
  };
  const indexes = new Map<string, VectorIndex>();
  let dir: string;

  async function build(vectors: Float32Array[], scanQuantisation: ScanQuantisation) {
    const index = await VectorIndex.create({ modelId: "test", dimension: DIM, scanQuantisation, efConstruction: 40 });
    vectors.forEach((v, i) => index.upsert(idOf(i), v));
    return index;
  }

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "glimpse-quantised-"));
    for (const [name, set] of Object.entries(sets)) {
      indexes.set(`${name}/int8`, await build(set.vectors, "int8"));
      indexes.set(`${name}/float32`, await build(set.vectors, "float32"));
    }
  }, 120_000);
  afterAll(async () => {
    for (const index of indexes.values()) index.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  function subset(share: number, seed: number): Int32Array {
    const next = makeRandom(seed);
    return Int32Array.from({ length: N }, (_, i) => i).filter(() => next() < share);
  }

  for (const name of Object.keys(sets) as (keyof typeof sets)[]) {
    for (const share of [1, 0.1, 0.01]) {
      it(`keeps recall@10 >= 0.99 against the float32 scan, ${name}, ${share * 100}% of images`, () => {
        const int8 = indexes.get(`${name}/int8`)!;
        const float = indexes.get(`${name}/float32`)!;
        expect(int8.scanQuantisation).toBe("int8");
        expect(float.scanQuantisation).toBe("float32");
        let hits = 0;
        let wanted = 0;
        sets[name].queries.forEach((query, q) => {
          const rows = share === 1 ? null : subset(share, q);
          const truth = rows ? float.searchExactSlots(query, K, rows) : float.searchExactAll(query, K);
          const got = rows ? int8.searchExactSlots(query, K, rows) : int8.searchExactAll(query, K);
          expect(got).toHaveLength(truth.length);
          const ids = new Set(got.map((n) => n.id));
          hits += truth.filter((n) => ids.has(n.id)).length;
          wanted += truth.length;
          // Re-ranked scores are the float32 scores themselves.
          const exact = new Map(float.scoreAll(query, got.map((n) => n.id)).map((n) => [n.id, n.cosine]));
          for (const n of got) expect(n.cosine).toBe(exact.get(n.id));
        });
        expect(hits / wanted).toBeGreaterThanOrEqual(0.99);
      });
    }
  }

  it("returns only slots of the subset it is given", () => {
    const index = indexes.get("clustered/int8")!;
    for (const [q, query] of sets.clustered.queries.entries()) {
      const rows = subset(0.05, 100 + q);
      const allowed = new Set([...rows].map((slot) => index.idAt(slot)));
      const got = index.searchExactSlots(query, K, rows);
      expect(got.length).toBe(K);
      for (const n of got) expect(allowed.has(n.id)).toBe(true);
    }
  });

  it("never returns a removed image, in either scan mode, and reuses its slot", async () => {
    for (const mode of ["int8", "float32"] as const) {
      const { vectors, queries } = sets.clustered;
      const index = await build(vectors.slice(0, 2000), mode);
      const query = queries[0];
      const best = index.searchExactAll(query, 20);
      const removed = new Set(best.slice(0, 15).map((n) => n.id));
      const removedSlots = Int32Array.from([...removed].map((id) => index.slot(id)!));
      for (const id of removed) index.remove(id);
      const all = index.searchExactAll(query, 50);
      expect(all).toHaveLength(50);
      for (const n of all) expect(removed.has(n.id)).toBe(false);
      expect(all.slice(0, 5).map((n) => n.id)).toEqual(best.slice(15).map((n) => n.id));
      if (mode === "int8") {
        // The int8 scan skips a free slot even when a caller lists one.
        const rows = Int32Array.from({ length: 2000 }, (_, i) => i);
        for (const n of index.searchExactSlots(query, 2000, rows)) expect(removed.has(n.id)).toBe(false);
        expect(index.searchExactSlots(query, 10, rows)).toHaveLength(10);
        expect(index.searchExactSlots(query, 10, removedSlots)).toHaveLength(0);
      }
      // A new image takes a freed slot and is found there.
      index.upsert(idOf(90_000), query);
      expect(removedSlots).toContain(index.slot(idOf(90_000)));
      expect(index.searchExactAll(query, 1)[0].id).toBe(idOf(90_000));
      index.dispose();
    }
  });

  it("answers the same after a snapshot round trip, whichever mode wrote it", async () => {
    const float = indexes.get("clip-like/float32")!;
    const int8 = indexes.get("clip-like/int8")!;
    const removedId = int8.searchExactAll(sets["clip-like"].queries[1], 1)[0].id;
    int8.remove(removedId);
    float.remove(removedId);
    await int8.writeSnapshot(path.join(dir, "int8"));
    await float.writeSnapshot(path.join(dir, "float32"));
    for (const source of ["int8", "float32"]) {
      const loaded = await VectorIndex.loadSnapshot(path.join(dir, source), {
        modelId: "test",
        dimension: DIM,
        scanQuantisation: "int8",
      });
      expect(loaded!.scanQuantisation).toBe("int8");
      for (const query of sets["clip-like"].queries.slice(0, 10)) {
        expect(loaded!.searchExactAll(query, K)).toEqual(int8.searchExactAll(query, K));
        const rows = subset(0.1, 7);
        expect(loaded!.searchExactSlots(query, K, rows)).toEqual(int8.searchExactSlots(query, K, rows));
      }
      expect(loaded!.searchExactAll(sets["clip-like"].queries[1], 3).map((n) => n.id)).not.toContain(removedId);
      loaded!.dispose();
    }
  });
});
