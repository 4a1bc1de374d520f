import { afterAll, beforeAll, describe, expect, it } from "vitest";
import roaring from "roaring";
import { rankSlots, type RankOptions } from "../../src/search/search-service.js";
import { VectorIndex } from "../../src/vector/vector-index.js";
import { clusteredVectors, makeRandom } from "../../bench/vectors.js";

const N = 20_000;
const DIM = 64;
const K = 10;
const QUERIES = 20;

/**
 * Recall@10 of the planner on slot bitmaps at every selectivity, for filters that keep a random
 * share of the images and for filters that keep the share farthest from the query (the walk
 * starts among rejected nodes). Two settings: the service's exact-scan bound, and one so low
 * that every set past 2,000 images goes to HNSW (over-fetch, or the filtered walk).
 */
describe("filtered search recall on the filter index's bitmaps", () => {
  let index: VectorIndex;
  let vectors: Float32Array[];
  let queries: Float32Array[];

  beforeAll(async () => {
    ({ vectors, queries } = clusteredVectors({ count: N, dimension: DIM, clusters: 40, queries: QUERIES, seed: 17 }));
    index = await VectorIndex.create({ modelId: "test", dimension: DIM });
    vectors.forEach((v, i) => index.upsert(5_000_000_000_000_000_000n + BigInt(i) * 4_194_304n, v));
  }, 120_000);
  afterAll(() => index?.dispose());

  const scoresOf = (query: Float32Array) =>
    vectors.map((v) => {
      let s = 0;
      for (let d = 0; d < DIM; d++) s += v[d] * query[d];
      return s;
    });

  const settings: [string, RankOptions][] = [
    ["the default exact bound", { ef: 64, exactMax: 20_000 }],
    ["a low exact bound", { ef: 64, exactMax: 400 }],
  ];
  const cases = [
    ...[0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 0.9].map((share) => ({ share, farthest: false })),
    ...[0.01, 0.1, 0.5, 0.9].map((share) => ({ share, farthest: true })),
  ];
  for (const [setting, options] of settings) {
    for (const { share, farthest } of cases) {
      const what = farthest ? `the ${share * 100}% of images farthest from the query` : `a random ${share * 100}% of images`;
      it(`finds the true top 10 (recall >= 0.95) when the filter keeps ${what}, with ${setting}`, async () => {
        const random = makeRandom(Math.round(share * 1000) + (farthest ? 1 : 0));
        let hits = 0;
        let total = 0;
        const plans = new Set<string>();
        for (const query of queries) {
          const scores = scoresOf(query);
          const order = vectors.map((_, i) => i);
          let kept: number[];
          if (farthest) kept = order.sort((a, b) => scores[a] - scores[b]).slice(0, Math.round(N * share));
          else kept = order.filter(() => random() < share);
          const keep = new Set(kept);
          const slots = new roaring.RoaringBitmap32(kept.map((i) => index.slot(index.idAt(i))!));
          const truth = kept
            .sort((a, b) => scores[b] - scores[a])
            .slice(0, K)
            .map((i) => index.idAt(i));
          const ranking = await rankSlots(index, query, K, slots, options);
          plans.add(ranking.plan);
          expect(ranking.total).toBe(kept.length);
          const got = ranking.neighbours.map((n) => n.id);
          expect(got).toHaveLength(Math.min(K, kept.length));
          for (const id of got) expect(keep.has(index.slot(id)!)).toBe(true);
          hits += got.filter((id) => truth.includes(id)).length;
          total += truth.length;
        }
        expect(hits / total, `plans: ${[...plans].join(", ")}`).toBeGreaterThanOrEqual(0.95);
      });
    }
  }
});
