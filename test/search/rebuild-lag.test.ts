import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "nice-grpc";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_ACCOUNT_ID } from "../../src/accounts/account-service.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { HealthCheckResponse_ServingStatus, HealthDefinition } from "../../src/gen/grpc/health/v1/health.js";
import { createLogger } from "../../src/logging/logger.js";
import { clusteredVectors } from "../../bench/vectors.js";
import { writeClipTestModel } from "../fixtures/clip-test-model.js";
import { startTestApp, type TestApp } from "../helpers/app.js";

/**
 * Enough vectors that the rebuild takes seconds (a graph insert at this width is most of a
 * millisecond), in three of the rebuild's 2,000-row pages: a rebuild that let other work run
 * only between pages would answer a handful of health checks meanwhile, not dozens.
 */
const COUNT = 6_000;
const DIMENSION = 256;
const MODEL_ID = "rebuild-256";

/** Writes `vectors` as indexed public images of the default account with their embeddings. */
async function seed(url: string, vectors: Float32Array[]): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    for (let start = 0; start < vectors.length; start += 2000) {
      const batch = vectors.slice(start, start + 2000);
      const ids = batch.map((_, i) => String(1_000_000 + start + i));
      const blob = new Float32Array(batch.length * DIMENSION);
      batch.forEach((v, i) => blob.set(v, i * DIMENSION));
      await sql.begin(async (tx) => {
        await tx`
          insert into images (id, owner_id, sha256, file_name, media_type, width, height, byte_size,
                              tags, tag_terms, visibility, index_status)
          select u.id, ${DEFAULT_ACCOUNT_ID}::uuid, md5(u.id::text) || md5('x' || u.id::text),
                 'r-' || u.id || '.jpg', 'image/jpeg', 64, 64, 1000, '{}', '{}', 1, 2
          from unnest(${ids}::bigint[]) as u(id)`;
        await tx`
          insert into embeddings (image_id, model_id, dimension, vector)
          select u.id, ${MODEL_ID}, ${DIMENSION},
                 substring(${Buffer.from(blob.buffer)}::bytea from ((u.n - 1) * ${DIMENSION * 4} + 1)::int for ${DIMENSION * 4})
          from unnest(${ids}::bigint[]) with ordinality as u(id, n)`;
      });
    }
  } finally {
    await sql.end();
  }
}

describe("rebuilding the index from the tables", () => {
  let modelDir: string;
  let first: TestApp;

  beforeAll(async () => {
    modelDir = await mkdtemp(path.join(tmpdir(), "glimpse-rebuild-model-"));
    await writeClipTestModel(modelDir, { dimension: DIMENSION });
    await writeFile(path.join(modelDir, "glimpse-model.json"), JSON.stringify({ id: MODEL_ID }));
    // The first start migrates the database; the images go in behind its back, and with no
    // snapshot the next start rebuilds from the tables.
    first = await startTestApp({ model: modelDir });
    await first.app.searchReady;
    await first.app.stop();
    first.channel.close();
    const { vectors } = clusteredVectors({ count: COUNT, dimension: DIMENSION, clusters: 30, queries: 0, seed: 3 });
    await seed(first.db.url, vectors);
  }, 120_000);
  afterAll(async () => {
    await first?.close().catch(() => undefined);
    await rm(modelDir, { recursive: true, force: true });
  });

  it("keeps health checks and catalogue calls answering while it runs", async () => {
    const records: Record<string, unknown>[] = [];
    const logger = createLogger("info", (line) => records.push(JSON.parse(line) as Record<string, unknown>));
    const t = await startTestApp({ model: modelDir }, { logger }, first.db);
    try {
      let ready = false;
      void t.app.searchReady.then(() => (ready = true));
      const health = createClient(HealthDefinition, t.channel);
      const images = t.client(ImageServiceDefinition);
      let answeredWhileRebuilding = 0;
      let listedWhileRebuilding = false;
      while (!ready) {
        const rebuilding = records.some((r) => r.msg === "rebuilding the vector index from the database");
        const { status } = await health.check({ service: "" });
        expect(status).toBe(HealthCheckResponse_ServingStatus.SERVING);
        if (!ready && rebuilding) {
          answeredWhileRebuilding++;
          if (!listedWhileRebuilding) {
            const listed = await images.listImages({ pageSize: 5 });
            listedWhileRebuilding = !ready && listed.images.length === 5;
          }
        }
      }
      const loaded = records.find((r) => r.msg === "vector index loaded");
      expect(loaded).toMatchObject({ source: "database", vectors: COUNT, filtered: COUNT });
      // Health answered all along the rebuild (one call after another: dozens while it ran),
      // and a catalogue call too.
      expect(answeredWhileRebuilding).toBeGreaterThanOrEqual(30);
      expect(listedWhileRebuilding).toBe(true);
    } finally {
      await t.app.stop();
      t.channel.close();
      await rm(t.dataDir, { recursive: true, force: true });
    }
  }, 300_000);

  it("refuses searches UNAVAILABLE while a running replica rebuilds because the log was pruned past it, then answers from the tables' state", async () => {
    const records: Record<string, unknown>[] = [];
    const logger = createLogger("info", (line) => records.push(JSON.parse(line) as Record<string, unknown>));
    const t = await startTestApp({ model: modelDir }, { logger }, first.db);
    const sql = postgres(first.db.url, { max: 1, onnotice: () => {} });
    try {
      await t.app.searchReady;
      const images = t.client(ImageServiceDefinition);
      const query = { query: { $case: "likeImageId" as const, value: "1000001" }, limit: 20 };
      const before = await images.searchImages(query);
      const gone = before.results[0].id;
      // While the replica cannot read the log (the lock), an image is deleted and the log
      // pruned past its entry: what pruning steps do, taken at once.
      await sql.begin(async (tx) => {
        await tx`lock table index_log in access exclusive mode`;
        await tx`delete from images where id = ${gone}`;
        await tx`delete from index_log`;
        await tx`update index_log_pruned set upto = (select last_value from index_log_seq_seq)`;
      });
      const codes = new Map<string, number>();
      let refusal = "";
      for (const until = Date.now() + 120_000; Date.now() < until; ) {
        try {
          const after = await images.searchImages(query);
          codes.set("OK", (codes.get("OK") ?? 0) + 1);
          if (records.some((r) => r.msg === "vector index rebuilt from the database")) {
            expect(after.results.map((r) => r.id)).not.toContain(gone);
            expect(after.results).toHaveLength(20);
            break;
          }
        } catch (error) {
          const { code, details } = error as { code: number; details: string };
          codes.set(String(code), (codes.get(String(code)) ?? 0) + 1);
          refusal = details;
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(records.some((r) => r.msg === "vector index rebuilt from the database")).toBe(true);
      // Status 14 is UNAVAILABLE; nothing else was answered meanwhile.
      expect([...codes.keys()].sort(), JSON.stringify([...codes])).toEqual(["14", "OK"]);
      expect(refusal).toMatch(/being rebuilt from the database/);
    } finally {
      await sql.end();
      await t.app.stop();
      t.channel.close();
      await rm(t.dataDir, { recursive: true, force: true });
    }
  }, 300_000);
});
