import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_ACCOUNT_ID } from "../../src/accounts/account-service.js";
import type { BlobStore } from "../../src/blobs/blob-store.js";
import type { Embedder } from "../../src/embedding/embedder.js";
import { ModelManager } from "../../src/embedding/model-manager.js";
import { Indexer } from "../../src/search/indexer.js";
import { connect, type Sql } from "../../src/store/db.js";
import { EmbeddingsRepository } from "../../src/store/embeddings-repository.js";
import { IndexClaimsRepository } from "../../src/store/index-claims-repository.js";
import { migrate } from "../../src/store/migrate.js";
import { writeClipTestModel } from "../fixtures/clip-test-model.js";
import { testBlobStore } from "../helpers/blobs.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";
import { distinctPng } from "../helpers/images.js";
import { testLogger } from "../helpers/log.js";

const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** Two replicas' indexers on one database: each pending image is embedded by one of them, once. */
describe("indexers of several replicas on one database", () => {
  let db: TestDatabase;
  let modelDir: string;
  let models: ModelManager;
  let embedder: Embedder;
  let blobs: { store: BlobStore; dispose(): Promise<void> };
  const pools: Sql[] = [];
  let sql: Sql;
  let nextId = 1n;
  let nextPng = 0;

  /** Stores `count` distinct images as pending uploads would, returning their ids. */
  async function pendingImages(count: number): Promise<bigint[]> {
    const ids: bigint[] = [];
    for (let i = 0; i < count; i++) {
      const bytes = await distinctPng(nextPng++);
      const sha256 = await blobs.store.put(bytes);
      const id = nextId++;
      await sql`
        insert into images (id, owner_id, sha256, media_type, width, height, byte_size, index_status)
        values (${id.toString()}, ${DEFAULT_ACCOUNT_ID}, ${sha256}, 'image/png', 8, 8, ${bytes.length}, 1)`;
      ids.push(id);
    }
    return ids;
  }

  /** The model, counting each image it embeds by the replica that asked. */
  function countingEmbedder(replica: string, embeds: { replica: string; sha256: string; at: number }[]): Embedder {
    return new Proxy(embedder, {
      get(target, property) {
        if (property === "embedImage") {
          return async (bytes: Uint8Array) => {
            embeds.push({ replica, sha256: sha(bytes), at: Date.now() });
            return target.embedImage(bytes);
          };
        }
        const value = Reflect.get(target, property) as unknown;
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  }

  /** One replica's indexer over a connection pool of its own. */
  function replicaIndexer(claimLeaseMs: number): Indexer {
    const pool = connect({ url: db.url, max: 4, logger: testLogger() });
    pools.push(pool);
    return new Indexer({
      embeddings: new EmbeddingsRepository(pool),
      claims: new IndexClaimsRepository(pool),
      blobs: blobs.store,
      logger: testLogger(),
      batchSize: 4,
      afterStore: async () => {},
      pollMs: 100,
      claimLeaseMs,
    });
  }

  beforeAll(async () => {
    db = await createTestDatabase();
    sql = connect({ url: db.url, max: 4, logger: testLogger() });
    await migrate(sql, testLogger());
    blobs = await testBlobStore();
    modelDir = await mkdtemp(path.join(tmpdir(), "glimpse-test-model-"));
    await writeClipTestModel(modelDir);
    models = new ModelManager({
      model: modelDir,
      cacheDir: modelDir,
      autoPull: false,
      baseUrl: "http://127.0.0.1:1",
      runtime: { intraOpThreads: 1, executionProvider: "cpu" },
      batching: { maxBatchSize: 8, maxWaitMs: 2, maxQueue: 256 },
      logger: testLogger(),
    });
    models.start();
    embedder = await models.ready();
  });

  afterAll(async () => {
    await models?.close();
    await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
    await sql?.end({ timeout: 5 });
    await blobs?.dispose();
    await db?.drop();
    await rm(modelDir, { recursive: true, force: true });
  });

  it("embeds each pending image exactly once between two replicas, and the batch of a dead one after its lease", async () => {
    const ids = await pendingImages(36);
    // A replica that claimed the four oldest and died before storing them.
    const leaseMs = 1500;
    const dead = await new IndexClaimsRepository(sql).claim("replica that died", 4, leaseMs);
    expect(dead.map((d) => d.id)).toEqual(ids.slice(0, 4));
    const [{ until }] = await sql<{ until: Date }[]>`select max(claimed_until) as until from index_claims`;

    const embeds: { replica: string; sha256: string; at: number }[] = [];
    const first = replicaIndexer(leaseMs);
    const second = replicaIndexer(leaseMs);
    first.start(countingEmbedder("first", embeds));
    second.start(countingEmbedder("second", embeds));
    try {
      await Promise.all(ids.map((id) => first.waitFor(id)));
      await Promise.all(ids.map((id) => second.waitFor(id)));
    } finally {
      await first.close();
      await second.close();
    }

    const statuses = await sql<{ status: number; n: number }[]>`
      select index_status as status, count(*)::int as n from images group by index_status`;
    expect(statuses).toEqual([{ status: 2, n: 36 }]);
    const [{ n: vectors }] = await sql<{ n: number }[]>`select count(*)::int as n from embeddings`;
    expect(vectors).toBe(36);

    // Each image went through the model once, whichever replica took it.
    const perImage = new Map<string, number>();
    for (const e of embeds) perImage.set(e.sha256, (perImage.get(e.sha256) ?? 0) + 1);
    expect(perImage.size).toBe(36);
    expect([...perImage.values()].every((n) => n === 1)).toBe(true);

    // The dead replica's batch waited for its lease to lapse (database and test share a clock).
    const deadShas = new Set(dead.map((d) => d.sha256));
    for (const e of embeds.filter((x) => deadShas.has(x.sha256))) expect(e.at).toBeGreaterThanOrEqual(until.getTime() - 50);
    // Nothing is left claimed.
    expect(await sql`select 1 from index_claims`).toHaveLength(0);
  });

  it("lets concurrent claims share out the pending images without overlap", async () => {
    const ids = await pendingImages(20);
    const claims = new IndexClaimsRepository(sql);
    const rounds = await Promise.all(
      Array.from({ length: 8 }, (_, i) => claims.claim(`claimant ${i}`, 4, 60_000)),
    );
    const claimed = rounds.flat().map((p) => p.id);
    expect(new Set(claimed).size).toBe(claimed.length); // no image handed to two claimants
    expect(claimed.length).toBeGreaterThanOrEqual(4);
    expect([...claimed].sort((a, b) => Number(a - b)).every((id) => ids.includes(id))).toBe(true);
    // A claimant may take its own claims again (a retry); nobody else may before the lease ends.
    const mine = rounds.find((r) => r.length > 0)!;
    const owner = `claimant ${rounds.indexOf(mine)}`;
    const again = await claims.claim(owner, 20, 60_000);
    expect(mine.every((p) => again.some((a) => a.id === p.id))).toBe(true);
    await claims.release(owner, again.map((p) => p.id));
    await sql`delete from index_claims`;
    await sql`update images set index_status = 2`;
  });
});
