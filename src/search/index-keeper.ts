import path from "node:path";
import type { Logger } from "../logging/logger.js";
import type { EmbeddingsRepository } from "../store/embeddings-repository.js";
import type { Sql } from "../store/db.js";
import { SnapshotError, VectorIndex } from "../vector/vector-index.js";

/** When snapshots are written. */
export interface SnapshotPolicy {
  everyChanges: number;
  intervalMs: number;
}

export interface IndexKeeperDeps {
  sql: Sql;
  embeddings: EmbeddingsRepository;
  /** Directory of this model's snapshots. */
  snapshotRoot: string;
  policy: SnapshotPolicy;
  logger: Logger;
}

/**
 * Keeps the in-process vector index equal to the `embeddings` table: loads the newest
 * snapshot (or rebuilds from the table when there is none, it is corrupt, or it was written
 * for another model), replays `index_log` after the snapshot's sequence, then follows the log
 * (woken by NOTIFY, exact by sequence) so changes made by this or any other replica, or left
 * half-applied by a crash, reach the index. Writes snapshots by the policy and at close.
 */
export class IndexKeeper {
  private changesSinceSnapshot = 0;
  private catching: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private snapshotting: Promise<void> | undefined;
  private closed = false;

  private constructor(
    readonly index: VectorIndex,
    private readonly deps: IndexKeeperDeps,
    private readonly dir: string,
  ) {}

  /** Opens the index for a model; the returned keeper is caught up with the log. */
  static async open(modelId: string, dimension: number, deps: IndexKeeperDeps): Promise<IndexKeeper> {
    const { logger, embeddings } = deps;
    const dir = path.join(deps.snapshotRoot, safeName(modelId));
    const started = performance.now();
    let index: VectorIndex | null = null;
    let source = "snapshot";
    try {
      index = await VectorIndex.loadSnapshot(dir, { modelId, dimension });
    } catch (err) {
      if (!(err instanceof SnapshotError)) throw err;
      logger.warn("index snapshot unusable; rebuilding from the database", { reason: err.message, dir });
    }
    if (index === null) {
      source = "database";
      index = await VectorIndex.create({ modelId, dimension });
      // Everything logged up to here is in the table we are about to read; later entries replay.
      index.lastSeq = await embeddings.lastSeq();
      for await (const page of embeddings.allVectors(modelId)) {
        for (const e of page) index.upsert(e.imageId, e.vector);
      }
    }
    const keeper = new IndexKeeper(index, deps, dir);
    const fromSeq = index.lastSeq;
    const replayed = await keeper.replay();
    logger.info("vector index loaded", {
      model: modelId,
      source,
      vectors: index.size,
      replayed,
      fromSeq: fromSeq.toString(),
      ms: Math.round(performance.now() - started),
    });
    if (source === "database" && index.size > 0) keeper.changesSinceSnapshot = deps.policy.everyChanges;
    await keeper.follow();
    return keeper;
  }

  /** Applies every log entry after the index's sequence; safe to call at any time. */
  catchUp(): Promise<void> {
    if (this.catching) {
      this.again = true;
      return this.catching;
    }
    this.catching = (async () => {
      try {
        do {
          this.again = false;
          await this.replay();
        } while (this.again);
      } finally {
        this.catching = undefined;
      }
      await this.maybeSnapshot();
    })();
    return this.catching;
  }

  /** Writes a snapshot now (no-op when nothing changed since the last one). */
  async snapshot(force = false): Promise<void> {
    if (!force && this.changesSinceSnapshot === 0) return;
    if (this.snapshotting) return this.snapshotting;
    const changes = this.changesSinceSnapshot;
    this.snapshotting = (async () => {
      const started = performance.now();
      await this.index.writeSnapshot(this.dir);
      this.changesSinceSnapshot -= changes;
      this.deps.logger.info("index snapshot written", {
        vectors: this.index.size,
        seq: this.index.lastSeq.toString(),
        ms: Math.round(performance.now() - started),
      });
    })().finally(() => (this.snapshotting = undefined));
    return this.snapshotting;
  }

  /** Stops following the log and writes a final snapshot. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.unlisten?.().catch(() => undefined);
    await this.catching?.catch(() => undefined);
    await this.snapshot().catch((error) => this.deps.logger.error("final index snapshot failed", { error }));
    this.index.dispose();
  }

  private async replay(): Promise<number> {
    const { embeddings } = this.deps;
    const index = this.index;
    let applied = 0;
    for (;;) {
      const entries = await embeddings.logAfter(index.lastSeq);
      if (entries.length === 0) return applied;
      for (const e of entries) {
        if (e.modelId === index.modelId) {
          // An upsert whose vector is gone was superseded by a later entry, which follows.
          if (e.op === "upsert" && e.vector !== null) index.upsert(e.imageId, e.vector);
          else if (e.op === "delete") index.remove(e.imageId);
          applied++;
        }
        index.lastSeq = e.seq;
      }
      this.changesSinceSnapshot += entries.length;
    }
  }

  private async follow(): Promise<void> {
    const { sql, policy, logger } = this.deps;
    const listener = await sql.listen("glimpse_index_log", () => {
      if (!this.closed) this.catchUp().catch((error) => logger.error("index catch-up failed", { error }));
    });
    this.unlisten = () => listener.unlisten();
    // Also on a timer: covers a notification lost while the listening connection reconnected.
    this.timer = setInterval(() => {
      if (this.closed) return;
      this.catchUp()
        .then(() => (this.changesSinceSnapshot > 0 ? this.snapshot() : undefined))
        .catch((error) => logger.error("index upkeep failed", { error }));
    }, policy.intervalMs);
    this.timer.unref();
  }

  private async maybeSnapshot(): Promise<void> {
    if (this.changesSinceSnapshot >= this.deps.policy.everyChanges) {
      await this.snapshot().catch((error) => this.deps.logger.error("index snapshot failed", { error }));
    }
  }
}

/** A model id as a directory name. */
function safeName(modelId: string): string {
  return modelId.replace(/[^A-Za-z0-9._-]/g, "_");
}
