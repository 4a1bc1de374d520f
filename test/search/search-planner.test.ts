import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CatalogueService } from "../../src/catalogue/catalogue-service.js";
import { systemClock } from "../../src/clock.js";
import type { Embedder } from "../../src/embedding/embedder.js";
import { FilterIndex } from "../../src/search/filter-index.js";
import type { IndexKeeper } from "../../src/search/index-keeper.js";
import { SearchService, type SearchInput } from "../../src/search/search-service.js";
import type { EmbeddingsRepository } from "../../src/store/embeddings-repository.js";
import { IdList } from "../../src/vector/id-list.js";
import { VectorIndex } from "../../src/vector/vector-index.js";
import { clusteredVectors } from "../../bench/vectors.js";

const N = 5000;
const DIM = 32;

/** An object every method of which fails the test, recording the call. */
function forbidden<T>(name: string, calls: string[], allow: Record<string, (...args: never[]) => unknown> = {}): T {
  return new Proxy({}, {
    get: (_, prop) => (...args: never[]) => {
      calls.push(`${name}.${String(prop)}`);
      const allowed = allow[String(prop)];
      if (allowed) return allowed(...args);
      throw new Error(`${name}.${String(prop)} called on a path that must stay in memory`);
    },
  }) as T;
}

describe("the search planner on the filter index", () => {
  let index: VectorIndex;
  const filters = new FilterIndex();
  const calls: string[] = [];
  let service: SearchService;
  let query: Float32Array;
  const ids: bigint[] = [];
  const owner = (i: number) => (i % 10 === 0 ? "alice" : "bob");
  const isPublic = (i: number) => i % 3 !== 0;
  const tagged = (i: number) => i % 100 === 7; // 1%

  beforeAll(async () => {
    const { vectors, queries } = clusteredVectors({ count: N, dimension: DIM, clusters: 20, queries: 1, seed: 3 });
    query = queries[0];
    index = await VectorIndex.create({ modelId: "m", dimension: DIM });
    vectors.forEach((v, i) => {
      const id = 7_000_000_000_000_000_000n + BigInt(i);
      ids.push(id);
      index.upsert(id, v);
      filters.set(index.slot(id)!, {
        ownerId: owner(i),
        isPublic: isPublic(i),
        indexed: true,
        tagTerms: tagged(i) ? ["rare"] : ["common"],
        nsfwLevel: 0,
        postId: null,
        modelId: null,
        modelVersionId: null,
        username: "",
        classNames: [],
        createdMs: 1_700_000_000_000 + i,
        fileName: `${i}.png`,
        tags: tagged(i) ? ["rare"] : ["common"],
      });
    });
    const keeper = { index, filters } as unknown as IndexKeeper;
    const embedder = { modelId: "m", embedText: async () => query } as unknown as Embedder;
    service = new SearchService({
      embeddings: forbidden<EmbeddingsRepository>("embeddings", calls, {
        candidateIds: () => IdList.fromBigInts(ids.filter((_, i) => isPublic(i) && i % 2 === 0)),
      }),
      catalogue: forbidden<CatalogueService>("catalogue", calls),
      clock: systemClock,
      engine: () => ({ embedder, keeper }),
      analyse: forbidden("analyse", calls),
      limits: { maxBytes: 1, maxPixels: 1 },
      ef: 64,
      exactMax: 20_000,
    });
  });
  afterAll(() => index?.dispose());

  const input = (extra: Partial<SearchInput> = {}): SearchInput => ({
    query: { kind: "prompt", text: "q" },
    threshold: 0,
    offset: 0,
    limit: 20,
    filter: {},
    fields: [],
    ef: 0,
    hybrid: false,
    ...extra,
  });
  const bob = { accountId: "bob", isAdmin: false };

  it("answers an ordinary key from memory, unfiltered and filtered, with exact totals and only readable images", async () => {
    calls.length = 0;
    const readable = (i: number) => isPublic(i) || owner(i) === "bob";
    const all = await service.search(bob, input({ fields: ["id", "created", "owner", "url", "name", "tags"] }));
    expect(all.total).toBe(ids.filter((_, i) => readable(i)).length);
    // About 97% of the index is readable to bob: plain HNSW over-fetches, the bitmap trims.
    expect(all.plan).toBe("hnsw_overfetch");
    expect(all.hits).toHaveLength(20);
    for (const hit of all.hits) {
      const i = ids.indexOf(hit.id);
      expect(readable(i)).toBe(true);
      expect(hit.owner).toBe(owner(i));
      expect(hit.name).toBe(`${i}.png`);
      expect(hit.tags).toEqual(tagged(i) ? ["rare"] : ["common"]);
      expect(hit.created).toEqual(new Date(1_700_000_000_000 + i));
    }
    const rare = await service.search(bob, input({ filter: { tags: ["rare"] } }));
    expect(rare.plan).toBe("exact");
    expect(rare.total).toBe(ids.filter((_, i) => readable(i) && tagged(i)).length);
    for (const hit of rare.hits) expect(tagged(ids.indexOf(hit.id))).toBe(true);
    const admin = await service.search({ accountId: "root", isAdmin: true }, input());
    expect(admin.plan).toBe("hnsw");
    expect(admin.total).toBe(N);
    expect(calls).toEqual([]);
  });

  it("asks PostgreSQL only for meta filters and for fields not held in memory", async () => {
    calls.length = 0;
    const meta = await service.search(bob, input({ filter: { metaEquals: { split: "train" } } as never }));
    expect(calls).toEqual(["embeddings.candidateIds"]);
    expect(meta.total).toBe(ids.filter((_, i) => isPublic(i) && i % 2 === 0).length);
    calls.length = 0;
    await expect(service.search(bob, input({ fields: ["id", "labels"] }))).rejects.toThrow(/must stay in memory/);
    expect(calls).toEqual(["embeddings.images"]);
  });
});
