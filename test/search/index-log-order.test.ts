// The index follows index_log entries in commit order, not sequence order: a transaction that
// took a sequence number first and commits last must still reach the index, the snapshot
// written meanwhile must not claim it, and a replica restarted from that snapshot must find
// it. Real PostgreSQL (the run's server), one keeper, writes through raw connections.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_ACCOUNT_ID } from "../../src/accounts/account-service.js";
import { IndexKeeper, type IndexKeeperDeps } from "../../src/search/index-keeper.js";
import { connect, type Sql } from "../../src/store/db.js";
import { EmbeddingsRepository, vectorToBytes } from "../../src/store/embeddings-repository.js";
import { migrate } from "../../src/store/migrate.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";
import { captureLogger, testLogger } from "../helpers/log.js";

const MODEL = "order-test";
const DIMENSION = 4;

describe("the index follows log entries committed out of sequence order", () => {
  let db: TestDatabase;
  let sql: Sql;
  let root: string;
  let deps: IndexKeeperDeps;
  let keeper: IndexKeeper;
  let nextId = 5_000_000n;

  /** A pending image of the default account (not logged: it has no vector yet). */
  async function pendingImage(): Promise<bigint> {
    const id = nextId++;
    await sql`
      insert into images (id, owner_id, sha256, file_name, media_type, width, height, byte_size, tags, tag_terms, visibility, index_status)
      values (${id.toString()}, ${DEFAULT_ACCOUNT_ID}::uuid, md5(${id.toString()}) || md5('x' || ${id.toString()}),
              ${`o-${id}.png`}, 'image/png', 8, 8, 100, '{order}', '{order}', 1, 1)`;
    return id;
  }

  /** A unit vector along axis `i`. */
  const axis = (i: number) => Float32Array.from({ length: DIMENSION }, (_, j) => (j === i ? 1 : 0));

  /** The writes storeIndexed makes for one image, on a connection of their own. */
  async function indexOn(tx: Sql, id: bigint, vector: Float32Array): Promise<void> {
    await tx`update images set index_status = 2 where id = ${id.toString()}`;
    await tx`insert into embeddings (image_id, model_id, dimension, vector)
             values (${id.toString()}, ${MODEL}, ${DIMENSION}, ${vectorToBytes(vector)})`;
  }

  /** Whether the keeper's index searches the image: its vector and its filter attributes. */
  const searchable = (k: IndexKeeper, id: bigint) => {
    const slot = k.index.slot(id);
    return slot !== undefined && k.filters.readable(slot, { accountId: DEFAULT_ACCOUNT_ID, isAdmin: false } as never);
  };

  const snapshotSeq = async () =>
    BigInt((JSON.parse(await readFile(path.join(root, MODEL, "snapshot.json"), "utf8")) as { lastSeq: string }).lastSeq);

  beforeAll(async () => {
    db = await createTestDatabase();
    const logger = testLogger();
    sql = connect({ url: db.url, max: 6, logger });
    await migrate(sql, logger);
    root = await mkdtemp(path.join(tmpdir(), "glimpse-log-order-"));
    deps = {
      sql,
      embeddings: new EmbeddingsRepository(sql),
      snapshotRoot: root,
      // Snapshots only when the test asks for one.
      policy: { everyChanges: 1_000_000, intervalMs: 3_600_000 },
      logger,
    };
    keeper = await IndexKeeper.open(MODEL, DIMENSION, deps);
  });
  afterAll(async () => {
    await keeper?.close();
    await sql?.end();
    await db?.drop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it("applies an entry whose transaction took its sequence number first and committed after a later one had been read", async () => {
    const first = await pendingImage();
    const second = await pendingImage();
    // T1 logs `first` and stays open.
    const t1 = await sql.reserve();
    let firstSeq: bigint;
    try {
      await t1`begin`;
      await indexOn(t1 as unknown as Sql, first, axis(0));
      [{ seq: firstSeq }] = await t1<{ seq: bigint }[]>`select currval(pg_get_serial_sequence('index_log', 'seq')) as seq`;

      // T2 logs `second` after it, and commits while T1 is open: log writers do not queue
      // behind one another (a lock would make this wait for T1, and time out).
      await sql.begin(async (tx) => {
        await tx`set local lock_timeout = '10s'`;
        await indexOn(tx as unknown as Sql, second, axis(1));
      });
      const [{ seq: secondSeq }] = await sql<{ seq: bigint }[]>`select max(seq) as seq from index_log`;
      expect(secondSeq).toBeGreaterThan(firstSeq);

      // The keeper reads T2's entry; T1's is not committed. Reading again (the gap now has its
      // fence) must not give it up while T1 runs.
      await keeper.catchUp();
      await keeper.catchUp();
      expect(searchable(keeper, second)).toBe(true);
      expect(searchable(keeper, first)).toBe(false);
      // The applied sequence, and a snapshot written now, stop below the entry not yet read.
      expect(keeper.state.appliedSeq).toBe(firstSeq - 1n);
      await keeper.snapshot();
      expect(await snapshotSeq()).toBe(firstSeq - 1n);

      await t1`commit`;
    } finally {
      await t1`rollback`.catch(() => undefined);
      t1.release();
    }

    // Once T1 commits, a catch-up finds its entry in the gap it left.
    await keeper.catchUp();
    expect(searchable(keeper, first)).toBe(true);
    expect(searchable(keeper, second)).toBe(true);
    expect(keeper.state.appliedSeq).toBeGreaterThanOrEqual(firstSeq);

    // A replica restarted from the snapshot written while T1 was open replays from below it.
    const restarted = await IndexKeeper.open(MODEL, DIMENSION, { ...deps, snapshotRoot: root });
    try {
      expect(restarted.source).toBe("snapshot");
      expect(searchable(restarted, first)).toBe(true);
      expect(searchable(restarted, second)).toBe(true);
    } finally {
      // Closing writes its own snapshot: the first keeper's next one replaces it.
      await restarted.close();
    }
  });

  it("gives up a gap left by a rolled-back transaction once it has ended, and not before", async () => {
    const lost = await pendingImage();
    const kept = await pendingImage();
    const t1 = await sql.reserve();
    try {
      await t1`begin`;
      await indexOn(t1 as unknown as Sql, lost, axis(2));
      await sql.begin((tx) => indexOn(tx as unknown as Sql, kept, axis(3)));
      await keeper.catchUp();
      await keeper.catchUp();
      const [{ seq: newest }] = await sql<{ seq: bigint }[]>`select max(seq) as seq from index_log`;
      expect(keeper.state.appliedSeq).toBeLessThan(newest);
      await t1`rollback`;
    } finally {
      t1.release();
    }
    // A catch-up that reads the gap after T1 ended finds nothing and lets it go. The horizon
    // is the server's (all its databases): a transaction of another test on the same server
    // may hold it back for a moment, so catch-ups repeat until then.
    const [{ seq: newest }] = await sql<{ seq: bigint }[]>`select max(seq) as seq from index_log`;
    const until = Date.now() + 30_000;
    await keeper.catchUp();
    while (keeper.state.appliedSeq !== newest && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      await keeper.catchUp();
    }
    expect(keeper.state.appliedSeq).toBe(newest);
    expect(searchable(keeper, kept)).toBe(true);
    expect(searchable(keeper, lost)).toBe(false);
  });

  it("rebuilds from the tables without losing an entry that commits after the rebuild read them", async () => {
    const late = await pendingImage();
    const after = await pendingImage();
    const t1 = await sql.reserve();
    let rebuilt: IndexKeeper | undefined;
    try {
      await t1`begin`;
      await indexOn(t1 as unknown as Sql, late, axis(1));
      await sql.begin((tx) => indexOn(tx as unknown as Sql, after, axis(2)));
      // No snapshot in this directory: the keeper reads the tables while T1 is open, and the
      // newest entry is above T1's.
      rebuilt = await IndexKeeper.open(MODEL, DIMENSION, { ...deps, snapshotRoot: await mkdtemp(path.join(root, "rebuild-")) });
      expect(rebuilt.source).toBe("database");
      expect(searchable(rebuilt, after)).toBe(true);
      expect(searchable(rebuilt, late)).toBe(false);
      await t1`commit`;
    } finally {
      await t1`rollback`.catch(() => undefined);
      t1.release();
    }
    try {
      await rebuilt!.catchUp();
      expect(searchable(rebuilt!, late)).toBe(true);
    } finally {
      await rebuilt!.close();
    }
  });
  it("reports the entries it replayed on opening, when a notification's catch-up applied them first", async () => {
    await keeper.catchUp();
    await keeper.snapshot();
    const fromSeq = await snapshotSeq();
    for (const [i, id] of [await pendingImage(), await pendingImage(), await pendingImage()].entries()) {
      await sql.begin((tx) => indexOn(tx as unknown as Sql, id, axis(i)));
    }
    const [{ n: after }] = await sql<{ n: number }[]>`select count(*)::int as n from index_log where seq > ${fromSeq.toString()}`;
    expect(after).toBeGreaterThanOrEqual(3);
    // A notification parsed in the same read as the LISTEN's answer runs its callback before
    // the code awaiting the LISTEN goes on: its catch-up is queued ahead of the opening replay.
    const early = new Proxy(sql, {
      get(target, prop, receiver) {
        if (prop !== "listen") return Reflect.get(target, prop, receiver);
        return async (channel: string, onNotify: (payload: string) => void) => {
          const listener = await target.listen(channel, onNotify);
          onNotify("");
          return listener;
        };
      },
    });
    const { logger, records } = captureLogger();
    const restarted = await IndexKeeper.open(MODEL, DIMENSION, { ...deps, sql: early, logger });
    try {
      const loads = records.filter((r) => r.msg === "vector index loaded");
      expect(loads).toMatchObject([{ source: "snapshot", fromSeq: fromSeq.toString(), replayed: after }]);
    } finally {
      await restarted.close();
    }
  });
});
