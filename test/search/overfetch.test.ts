import { afterAll, beforeAll, describe, expect, it } from "vitest";
import roaring from "roaring";
import { filteredEf, MAX_EF, MAX_OVERFETCH, overfetchDepth, rankSlots } from "../../src/search/search-service.js";
import { VectorIndex } from "../../src/vector/vector-index.js";
import { clusteredVectors, makeRandom } from "../../bench/vectors.js";

const N = 3000;
const DIM = 32;
const K = 10;
/** Wide enough that on this small index both walks find the true top k. */
const EF = 256;

const dot = (a: Float32Array, b: Float32Array) => {
  let s = 0;
  for (let d = 0; d < a.length; d++) s += a[d] * b[d];
  return s;
};

describe("the planner's over-fetch for filters passing most of the index", () => {
  let index: VectorIndex;
  let vectors: Float32Array[];
  let queries: Float32Array[];
  const ids: bigint[] = [];

  beforeAll(async () => {
    ({ vectors, queries } = clusteredVectors({ count: N, dimension: DIM, clusters: 12, queries: 10, seed: 5 }));
    index = await VectorIndex.create({ modelId: "m", dimension: DIM });
    vectors.forEach((v, i) => {
      ids.push(8_000_000_000_000_000_000n + BigInt(i) * 977n);
      index.upsert(ids[i], v);
    });
  }, 60_000);
  afterAll(() => index?.dispose());

  /** What the walk with the bitmap as hnswlib's filter returns (the path below the share). */
  const filteredWalk = async (query: Float32Array, slots: roaring.RoaringBitmap32) => {
    const allowed = new Uint8Array(index.slots);
    for (const slot of slots.toUint32Array()) allowed[slot] = 1;
    return (await index.searchHnsw(query, K, filteredEf(EF, K, slots.size / index.size), allowed)).map((n) => n.id);
  };
  const exact = (query: Float32Array, slots: roaring.RoaringBitmap32) =>
    index.searchExactSlots(query, K, new Int32Array(slots.toUint32Array().buffer), true).map((n) => n.id);

  it("asks plain HNSW for depth / share x 1.5 plus a margin, up to MAX_OVERFETCH", async () => {
    expect(overfetchDepth(10, 0.1)).toBe(160);
    expect(overfetchDepth(10, 0.5)).toBe(40);
    expect(overfetchDepth(10, 0.9)).toBe(Math.ceil((10 / 0.9) * 1.5) + 10);
    expect(overfetchDepth(10, 1)).toBe(25);
    expect(overfetchDepth(10, 0.03)).toBeNull(); // 511 > MAX_OVERFETCH: the filtered walk answers
    expect(overfetchDepth(10, 0.03, 1000)).toBe(Math.ceil((10 / 0.03) * 1.5) + 10);
    expect(overfetchDepth(4000, 0.9, 10_000)).toBeNull(); // never past MAX_EF
    expect(MAX_OVERFETCH).toBeLessThanOrEqual(MAX_EF);
  });

  it("over-fetches on a high-share filter and returns what the filtered walk would", async () => {
    const random = makeRandom(9);
    for (const share of [0.5, 0.7, 0.9]) {
      const slots = new roaring.RoaringBitmap32();
      for (let s = 0; s < N; s++) if (random() < share) slots.add(s);
      for (const query of queries) {
        const ranking = await rankSlots(index, query, K, slots, { ef: EF, exactMax: 100 });
        expect(ranking.plan).toBe("hnsw_overfetch");
        expect(ranking.total).toBe(slots.size);
        const got = ranking.neighbours.map((n) => n.id);
        expect(got).toHaveLength(K);
        for (const id of got) expect(slots.has(index.slot(id)!)).toBe(true);
        expect(got).toEqual(await filteredWalk(query, slots));
        expect(got).toEqual(exact(query, slots));
      }
    }
  });

  it("scans exactly when the passing images are the farthest from the query, whatever exactMax says", async () => {
    for (const share of [0.1, 0.5, 0.9]) {
      for (const query of queries) {
        // Keep the `share` of images farthest from the query: the nearest ones HNSW finds all fail.
        const order = vectors.map((v, i) => ({ slot: index.slot(ids[i])!, s: dot(v, query) })).sort((a, b) => a.s - b.s);
        const slots = new roaring.RoaringBitmap32(order.slice(0, Math.round(N * share)).map((x) => x.slot));
        const ranking = await rankSlots(index, query, K, slots, { ef: EF, exactMax: 100 });
        expect(ranking.plan).toBe("exact");
        expect(ranking.total).toBe(slots.size);
        const got = ranking.neighbours.map((n) => n.id);
        expect(got).toHaveLength(K);
        for (const id of got) expect(slots.has(index.slot(id)!)).toBe(true);
        expect(got).toEqual(exact(query, slots));
      }
    }
  });

  it("never returns an image the bitmap rejects or the index has removed", async () => {
    const query = queries[0];
    const nearest = (await index.searchHnsw(query, 4, EF)).map((n) => n.id);
    const slots = new roaring.RoaringBitmap32();
    for (let s = 0; s < N; s++) slots.add(s);
    // The nearest is private to someone else (out of the bitmap); the second is deleted but
    // its slot left in the bitmap (a filter index a moment behind the vector index).
    slots.remove(index.slot(nearest[0])!);
    const far = (await index.searchHnsw(query.map((x) => -x), 1, EF))[0].id; // some other image, also unreadable
    slots.remove(index.slot(far)!);
    const removedSlot = index.slot(nearest[1])!;
    const removedVector = index.vector(nearest[1])!;
    index.remove(nearest[1]);
    try {
      const ranking = await rankSlots(index, query, K, slots, { ef: EF, exactMax: 100 });
      expect(ranking.plan).toBe("hnsw_overfetch");
      const got = ranking.neighbours.map((n) => n.id);
      expect(got).toHaveLength(K);
      expect(got).not.toContain(nearest[0]);
      expect(got).not.toContain(nearest[1]);
      expect(got).not.toContain(far);
      expect(got.slice(0, 2)).toEqual(nearest.slice(2, 4));
      expect(slots.has(removedSlot)).toBe(true);
    } finally {
      index.upsert(nearest[1], removedVector);
    }
  });
});
