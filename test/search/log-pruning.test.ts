// index_log is pruned, and nothing a replica needs is lost: entries go only once every
// transaction that could still commit one below them has ended; a replica whose snapshot is
// older than the pruned log, or whose running index fell behind it, builds its index again
// from the tables and ends up equal to them. Real PostgreSQL (the run's server).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_ACCOUNT_ID } from "../../src/accounts/account-service.js";
import { IndexKeeper, type IndexKeeperDeps } from "../../src/search/index-keeper.js";
import { startLogPruning } from "../../src/search/log-pruning.js";
import { connect, type Sql } from "../../src/store/db.js";
import { EmbeddingsRepository, vectorToBytes, type SeqRange } from "../../src/store/embeddings-repository.js";
import { migrate } from "../../src/store/migrate.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";
import { testLogger } from "../helpers/log.js";

const MODEL = "prune-test";
const DIMENSION = 4;
/** A cutoff after every entry's time: everything in the log is old enough to go. */
const FUTURE = () => new Date(Date.now() + 3_600_000);

/** A point where calls wait while it is closed; `reached` resolves when one arrives there. */
class Gate {
  private held: Promise<void> | undefined;
  reached: Promise<void> = new Promise(() => undefined);
  private arrive: () => void = () => undefined;

  /** Closes the gate; the returned function opens it. */
  close(): () => void {
    let open!: () => void;
    this.held = new Promise((resolve) => (open = resolve));
    this.reached = new Promise((resolve) => (this.arrive = resolve));
    return () => {
      this.held = undefined;
      open();
    };
  }

  async pass(): Promise<void> {
    if (!this.held) return;
    this.arrive();
    await this.held;
  }
}

/** The repository with gates before its log reads (a replica that stalls) and its read of the tables. */
class StallingEmbeddings extends EmbeddingsRepository {
  readonly log = new Gate();
  readonly tables = new Gate();

  override async logAfter(seq: bigint, limit?: number) {
    await this.log.pass();
    return super.logAfter(seq, limit);
  }

  override async logWithin(ranges: readonly SeqRange[], limit?: number) {
    await this.log.pass();
    return super.logWithin(ranges, limit);
  }

  override async *allVectors(modelId: string, pageSize?: number) {
    await this.tables.pass();
    yield* super.allVectors(modelId, pageSize);
  }
}

describe("pruning index_log", () => {
  let db: TestDatabase;
  let sql: Sql;
  let root: string;
  let embeddings: StallingEmbeddings;
  let deps: IndexKeeperDeps;
  let nextId = 7_000_000n;

  /** An indexed image of the default account, public, with a vector along `axis`. */
  async function indexedImage(axis: number, on: Sql = sql): Promise<bigint> {
    const id = nextId++;
    await sql`
      insert into images (id, owner_id, sha256, file_name, media_type, width, height, byte_size, tags, tag_terms, visibility, index_status)
      values (${id.toString()}, ${DEFAULT_ACCOUNT_ID}::uuid, md5(${id.toString()}) || md5('p' || ${id.toString()}),
              ${`p-${id}.png`}, 'image/png', 8, 8, 100, '{prune}', '{prune}', 1, 1)`;
    const vector = Float32Array.from({ length: DIMENSION }, (_, j) => (j === axis % DIMENSION ? 1 : 0.01 * (axis + 1)));
    await on`update images set index_status = 2 where id = ${id.toString()}`;
    await on`insert into embeddings (image_id, model_id, dimension, vector)
             values (${id.toString()}, ${MODEL}, ${DIMENSION}, ${vectorToBytes(vector)})`;
    return id;
  }

  /** The newest sequence number taken (the log may be empty, pruned up to it). */
  const newestSeq = async () =>
    (await sql<{ seq: bigint }[]>`select greatest((select max(seq) from index_log), (select upto from index_log_pruned)) as seq`)[0].seq;
  const entriesUpTo = async (seq: bigint) =>
    Number((await sql<{ n: bigint }[]>`select count(*) as n from index_log where seq <= ${seq.toString()}`)[0].n);

  /**
   * Prune steps until the pruned bound reaches `seq`. The horizon a step waits for is the
   * server's (all its databases): another test's transaction may hold it back for a moment.
   */
  async function pruneThrough(seq: bigint): Promise<number> {
    let deleted = 0;
    const until = Date.now() + 30_000;
    for (;;) {
      const step = await embeddings.pruneLog(FUTURE());
      deleted += step.deleted;
      if (step.upto >= seq) return deleted;
      if (Date.now() > until) throw new Error(`pruned only to ${step.upto}, wanted ${seq}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  const searchable = (k: IndexKeeper, id: bigint) => {
    const slot = k.index.slot(id);
    return slot !== undefined && k.filters.readable(slot, { accountId: DEFAULT_ACCOUNT_ID, isAdmin: false } as never);
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    const logger = testLogger();
    sql = connect({ url: db.url, max: 6, logger });
    await migrate(sql, logger);
    root = await mkdtemp(path.join(tmpdir(), "glimpse-log-prune-"));
    embeddings = new StallingEmbeddings(sql);
    deps = {
      sql,
      embeddings,
      snapshotRoot: root,
      // Snapshots only when the test asks for one (and at close).
      policy: { everyChanges: 1_000_000, intervalMs: 3_600_000 },
      logger,
    };
  });
  afterAll(async () => {
    await sql?.end();
    await db?.drop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it("deletes nothing at or below an entry a transaction still running may commit, and all of it once that ended", async () => {
    await indexedImage(0);
    const t1 = await sql.reserve();
    let bound: bigint;
    try {
      await t1`begin`;
      // T1 takes a sequence number and stays open; a later entry commits above it.
      await indexedImage(1, t1 as unknown as Sql);
      await indexedImage(2);
      bound = await newestSeq();
      // The first step chooses the bound; the next ones may not use it while T1 runs.
      expect((await embeddings.pruneLog(FUTURE())).deleted).toBe(0);
      for (let i = 0; i < 3; i++) {
        const step = await embeddings.pruneLog(FUTURE());
        expect(step.deleted).toBe(0);
        expect(step.upto).toBe(0n);
      }
      expect(await entriesUpTo(bound)).toBe(2);
      await t1`commit`;
    } finally {
      await t1`rollback`.catch(() => undefined);
      t1.release();
    }
    // T1's entry committed below the bound; the step after T1 ended deletes it with the rest.
    expect(await entriesUpTo(bound)).toBe(3);
    expect(await pruneThrough(bound)).toBe(3);
    expect(await entriesUpTo(bound)).toBe(0);
    expect(await embeddings.prunedUpto()).toBe(bound);
    // A build from the tables starts at the bound: no hole below it, the newest number kept.
    const start = await embeddings.logStart();
    expect(start.last).toBe(bound);
    expect(start.holes).toEqual([]);
  });

  it("keeps entries younger than the retention", async () => {
    const before = await embeddings.prunedUpto();
    await indexedImage(3);
    const newest = await newestSeq();
    for (let i = 0; i < 3; i++) {
      const step = await embeddings.pruneLog(new Date(Date.now() - 3_600_000));
      expect(step.deleted).toBe(0);
    }
    expect(await embeddings.prunedUpto()).toBe(before);
    expect(await entriesUpTo(newest)).toBe(1);
  });

  it("rebuilds from the tables when the snapshot is older than the pruned log, and loads a snapshot that is not", async () => {
    const kept = await indexedImage(4);
    const removed = await indexedImage(5);
    const first = await IndexKeeper.open(MODEL, DIMENSION, deps);
    expect(searchable(first, kept)).toBe(true);
    expect(searchable(first, removed)).toBe(true);
    await first.close(); // writes the snapshot

    // While the replica is down: one image deleted, one added, and their entries pruned.
    await sql`delete from images where id = ${removed.toString()}`;
    const added = await indexedImage(6);
    await pruneThrough(await newestSeq());

    const second = await IndexKeeper.open(MODEL, DIMENSION, deps);
    try {
      expect(second.source).toBe("database");
      expect(searchable(second, kept)).toBe(true);
      expect(searchable(second, added)).toBe(true);
      expect(searchable(second, removed)).toBe(false);
      expect(second.index.size).toBe(Number((await sql<{ n: bigint }[]>`select count(*) as n from embeddings`)[0].n));
    } finally {
      await second.close();
    }
    // The snapshot just written is at the pruned bound: it is used, not rebuilt.
    const third = await IndexKeeper.open(MODEL, DIMENSION, deps);
    try {
      expect(third.source).toBe("snapshot");
      expect(searchable(third, added)).toBe(true);
      expect(searchable(third, removed)).toBe(false);
    } finally {
      await third.close();
    }
  });

  it("rebuilds a running index whose log was pruned past it, marked as rebuilding meanwhile (searches are refused), and ends equal to the tables", async () => {
    let rebuilds = 0;
    const keeper = await IndexKeeper.open(MODEL, DIMENSION, { ...deps, rebuilt: () => rebuilds++ });
    try {
      const doomed = await indexedImage(7);
      await keeper.catchUp();
      expect(searchable(keeper, doomed)).toBe(true);
      const before = keeper.index;

      // The replica stalls on its next log read; meanwhile an image goes, one arrives, and
      // the log is pruned past both.
      const release = embeddings.log.close();
      const caughtUp = keeper.catchUp();
      await embeddings.log.reached;
      await sql`delete from images where id = ${doomed.toString()}`;
      const arrived = await indexedImage(8);
      await pruneThrough(await newestSeq());
      const releaseTables = embeddings.tables.close();
      release();
      await embeddings.tables.reached;
      expect(keeper.rebuilding).toBe(true);
      releaseTables();
      await caughtUp;

      expect(keeper.rebuilding).toBe(false);
      expect(rebuilds).toBe(1);
      expect(keeper.source).toBe("database");
      expect(keeper.index).not.toBe(before);
      expect(searchable(keeper, doomed)).toBe(false);
      expect(searchable(keeper, arrived)).toBe(true);
      expect(keeper.state.appliedSeq).toBe(await newestSeq());
      // It follows the log again from there.
      const later = await indexedImage(9);
      await keeper.catchUp();
      expect(searchable(keeper, later)).toBe(true);
      expect(rebuilds).toBe(1);
    } finally {
      await keeper.close();
    }
  });

  it("rebuilds rather than give up a gap whose entry committed and was pruned while the replica stalled", async () => {
    const keeper = await IndexKeeper.open(MODEL, DIMENSION, deps);
    try {
      // T1 logs `late` and stays open; `early` commits after it: the keeper passes T1's
      // number by and fences the gap.
      const t1 = await sql.reserve();
      let late: bigint;
      try {
        await t1`begin`;
        late = await indexedImage(11, t1 as unknown as Sql);
        await indexedImage(12);
        await keeper.catchUp();
        await keeper.catchUp();
        expect(searchable(keeper, late)).toBe(false);
        // The keeper stalls before it reads the gap again; T1 commits and both entries are
        // pruned. Read after the prune, the gap is empty and every transaction that could
        // fill it has ended: without the bound, it would look rolled back.
        const release = embeddings.log.close();
        const caughtUp = keeper.catchUp();
        await embeddings.log.reached;
        await t1`commit`;
        await pruneThrough(await newestSeq());
        release();
        await caughtUp;
      } finally {
        await t1`rollback`.catch(() => undefined);
        t1.release();
      }
      expect(keeper.source).toBe("database");
      expect(searchable(keeper, late)).toBe(true);
      expect(keeper.state.appliedSeq).toBe(await newestSeq());
    } finally {
      await keeper.close();
    }
  });

  it("runs in the background on every replica and stops cleanly", async () => {
    await indexedImage(10);
    const newest = await newestSeq();
    const stop = startLogPruning({ embeddings, logger: testLogger() }, { retentionMs: 0, intervalMs: 20, now: () => Date.now() + 1000 });
    try {
      const until = Date.now() + 30_000;
      while ((await embeddings.prunedUpto()) < newest && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    } finally {
      await stop();
    }
    expect(await embeddings.prunedUpto()).toBeGreaterThanOrEqual(newest);
    expect(await entriesUpTo(newest)).toBe(0);
  });
});
