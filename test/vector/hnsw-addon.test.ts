import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { clusteredVectors } from "../../bench/vectors.js";
import { AVX2_ADDON, chooseBuild, cpuRunsAvx2, loadHnswlib } from "../../src/vector/hnsw-addon.mjs";
import { VectorIndex, type Neighbour } from "../../src/vector/vector-index.js";

const DIM = 64;
const K = 10;
const avx2Built = cpuRunsAvx2() && existsSync(AVX2_ADDON);
const why = cpuRunsAvx2()
  ? `${AVX2_ADDON} is not built (npm test builds it first: scripts/build-hnsw-if-stale.mjs)`
  : "this CPU does not run AVX2 and FMA, so only the baseline build can run here";

const skipped = avx2Built ? "" : ` (skipped: ${why})`;

const recall = (got: Neighbour[], want: Neighbour[]) => got.filter((n) => want.some((w) => w.id === n.id)).length / want.length;

describe("the compiled hnswlib the graph runs on", () => {
  const open: VectorIndex[] = [];
  afterEach(() => {
    for (const index of open.splice(0)) index.dispose();
  });

  it("runs the package's own build when asked for baseline", () => {
    expect(chooseBuild("baseline")).toBe("baseline");
    expect(loadHnswlib("baseline").hnswlib).toBe(createRequire(import.meta.url)("hnswlib-node"));
    expect(() => chooseBuild("fast" as never)).toThrow(/unknown hnswlib build/);
  });

  it.skipIf(!avx2Built)(`runs the AVX2 build by default, on either thread, and finds what the baseline build finds${skipped}`, async () => {
    const { vectors, queries } = clusteredVectors({ count: 4000, dimension: DIM, clusters: 16, queries: 40, seed: 21 });
    const build = async (graphThread: "inline" | "worker", hnswBuild: "auto" | "baseline") => {
      const index = await VectorIndex.create({ modelId: "m", dimension: DIM, initialCapacity: 512, graphThread, hnswBuild });
      open.push(index);
      vectors.forEach((v, i) => index.upsert(BigInt(i + 1), v));
      await index.graphSettled();
      return index;
    };
    const baseline = await build("inline", "baseline");
    const avx2 = await build("inline", "auto");
    const avx2Thread = await build("worker", "auto");
    expect([baseline.hnswBuild, avx2.hnswBuild, avx2Thread.hnswBuild]).toEqual(["baseline", "avx2", "avx2"]);
    const recalls = { baseline: 0, avx2: 0, avx2Thread: 0 };
    for (const query of queries) {
      const exact = baseline.searchExactAll(query, K);
      const got = {
        baseline: await baseline.searchHnsw(query, K, 64),
        avx2: await avx2.searchHnsw(query, K, 64),
        avx2Thread: await avx2Thread.searchHnsw(query, K, 64),
      };
      for (const name of ["baseline", "avx2", "avx2Thread"] as const) recalls[name] += recall(got[name], exact) / queries.length;
      // The same image scores the same under either build (FMA rounds once, not twice).
      for (const n of got.avx2) {
        const same = exact.find((e) => e.id === n.id);
        if (same) expect(n.cosine).toBeCloseTo(same.cosine, 4);
      }
    }
    expect(recalls.avx2).toBeGreaterThanOrEqual(0.95);
    expect(recalls.avx2Thread).toBeGreaterThanOrEqual(0.95);
    expect(Math.abs(recalls.avx2 - recalls.baseline)).toBeLessThanOrEqual(0.02);
  }, 120_000);

  it.skipIf(!avx2Built)(`reads a snapshot written by the other build${skipped}`, async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "glimpse-hnsw-build-"));
    try {
      const { vectors, queries } = clusteredVectors({ count: 1500, dimension: DIM, clusters: 8, queries: 20, seed: 5 });
      const written = await VectorIndex.create({ modelId: "m", dimension: DIM, initialCapacity: 256, hnswBuild: "auto" });
      open.push(written);
      vectors.forEach((v, i) => written.upsert(BigInt(i + 1), v));
      await written.writeSnapshot(dir);
      const loaded = (await VectorIndex.loadSnapshot(dir, { modelId: "m", dimension: DIM, hnswBuild: "baseline" }))!;
      open.push(loaded);
      expect(loaded.hnswBuild).toBe("baseline");
      let same = 0;
      for (const query of queries) same += recall(await loaded.searchHnsw(query, K, 64), await written.searchHnsw(query, K, 64)) / queries.length;
      expect(same).toBeGreaterThanOrEqual(0.98);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
