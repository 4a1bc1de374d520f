import { stat } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../logging/logger.js";
import type { EmbeddingsRepository, LogEntry, LogStart } from "../store/embeddings-repository.js";
import type { Sql } from "../store/db.js";
import type { GraphPace, GraphThread } from "../vector/graph.js";
import type { HnswBuildChoice } from "../vector/hnsw-addon.mjs";
import { SnapshotError, VectorIndex, type ScanQuantisation, type VectorIndexOptions } from "../vector/vector-index.js";
import { FilterIndex } from "./filter-index.js";
import { LogGaps } from "./log-gaps.js";
import { detached, walked } from "../observability/call-scope.js";

/** When snapshots are written. */
export interface SnapshotPolicy {
  everyChanges: number;
  intervalMs: number;
}

/** How often the log's tail is read without a notification (a lost NOTIFY waits this long). */
const LOG_POLL_MS = 2000;

/** Log entries read per query. */
const LOG_PAGE = 1000;

export interface IndexKeeperDeps {
  sql: Sql;
  embeddings: EmbeddingsRepository;
  /** Directory of this model's snapshots. */
  snapshotRoot: string;
  policy: SnapshotPolicy;
  logger: Logger;
  /** What the exact scan reads (GLIMPSE_SCAN_QUANTISATION); default float32. */
  scanQuantisation?: ScanQuantisation;
  /** Where the HNSW graph lives; default `worker`, a thread of its own. */
  graphThread?: GraphThread;
  /** Which compiled hnswlib runs the graph (GLIMPSE_HNSW_BUILD). */
  hnswBuild?: HnswBuildChoice;
  /** How busy the process is, for the graph's thread (GraphPace); unknown when absent. */
  pace?: GraphPace;
  /** Told each time the running indexes were rebuilt from the tables (the log pruned past them). */
  rebuilt?: () => void;
}

/** Where the indexes came from at start: a snapshot, or the tables (a rebuild). */
export type IndexSource = "snapshot" | "database";

/**
 * Keeps the in-process vector index equal to the `embeddings` table, and the filter index
 * beside it equal to the attributes of those images: loads the newest
 * snapshot (or rebuilds from the table when there is none, it is corrupt, or it was written
 * for another model), replays `index_log` after the snapshot's sequence, then follows the log
 * (woken by NOTIFY, and every LOG_POLL_MS) so changes made by this or any other replica, or
 * left half-applied by a crash, reach the index. Writes snapshots by the policy and at close.
 *
 * Log entries commit out of sequence order (concurrent transactions take their numbers when
 * they insert and commit when they are done), so the keeper reads the log's tail after the
 * highest number it has read and remembers the numbers it passed without reading them
 * (LogGaps): each catch-up re-reads those too, until their entries appear or PostgreSQL shows
 * that the transactions that held them ended without committing. The index's `lastSeq` is the
 * safe sequence: every entry up to it is applied (below the lowest outstanding gap). Snapshots
 * record it, and a replay after a restart starts there; entries after it that the snapshot
 * already holds are applied again, which changes nothing, since entries carry the current
 * state.
 *
 * Replays and snapshot writes never overlap (they run one at a time, in order), so a
 * snapshot holds every entry up to the sequence it records; searches may run during either,
 * since they only read.
 *
 * The log is pruned (log-pruning.ts): a snapshot older than the pruned bound is not used, and
 * a replica that finds the log pruned past an entry it has not applied builds its indexes
 * again from the tables, refusing searches meanwhile.
 */
export class IndexKeeper {
  private changesSinceSnapshot = 0;
  /** The tail of the queue of replays and snapshot writes. */
  private chain: Promise<unknown> = Promise.resolve();
  /** A replay queued but not started: later notifications are covered by it. */
  private queuedCatchUp: Promise<void> | undefined;
  private snapshotQueued = false;
  private timer: NodeJS.Timeout | undefined;
  private poll: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private closed = false;
  /** When the newest snapshot on disk was written (ms since the epoch); undefined: none yet. */
  private snapshotWrittenAt: number | undefined;
  /** The highest sequence number read; the tail is read after it. */
  private highest: bigint;
  /** Sequence numbers at or below `highest` not read yet. */
  private gaps = new LogGaps();
  /** Log entries applied since the keeper was made, by any replay (the opening one, catch-ups). */
  private appliedEntries = 0;
  /** Set while the indexes are rebuilt from the tables because the log was pruned past them. */
  private rebuildingNow = false;
  /** An index replaced by a rebuild, kept for the searches that still hold it; disposed by the timer. */
  private retired: { index: VectorIndex; timer: NodeJS.Timeout } | undefined;

  private constructor(
    private current: { index: VectorIndex; filters: FilterIndex },
    /** Where the indexes in use came from: a snapshot, or the tables. */
    public source: IndexSource,
    private readonly deps: IndexKeeperDeps,
    private readonly dir: string,
    private readonly options: VectorIndexOptions,
  ) {
    this.highest = current.index.lastSeq;
  }

  /** The vector index. A rebuild replaces it: read it once per search, not once per keeper. */
  get index(): VectorIndex {
    return this.current.index;
  }

  /** The attributes searches filter on, keyed by the vector index's slots. */
  get filters(): FilterIndex {
    return this.current.filters;
  }

  /**
   * Whether the indexes are being rebuilt from the tables because the log was pruned past
   * what they had applied (a replica stalled for longer than the retention): they are
   * behind by an unknown amount, so searches are refused until the rebuild ends.
   */
  get rebuilding(): boolean {
    return this.rebuildingNow;
  }

  /** Opens the index for a model; the returned keeper is caught up with the log. */
  static async open(modelId: string, dimension: number, deps: IndexKeeperDeps): Promise<IndexKeeper> {
    const { logger, embeddings } = deps;
    const dir = path.join(deps.snapshotRoot, safeName(modelId));
    const started = performance.now();
    let index: VectorIndex | null = null;
    let filters: FilterIndex | null = null;
    const options: VectorIndexOptions = {
      modelId,
      dimension,
      scanQuantisation: deps.scanQuantisation,
      graphThread: deps.graphThread ?? "worker",
      hnswBuild: deps.hnswBuild,
      pace: deps.pace,
      onWalk: walked,
    };
    try {
      index = await VectorIndex.loadSnapshot(dir, options);
      if (index !== null) filters = await loadFilters(index);
    } catch (err) {
      if (!(err instanceof SnapshotError)) throw err;
      index?.dispose();
      index = null;
      logger.warn("index snapshot unusable; rebuilding from the database", { reason: err.message, dir });
    }
    if (index !== null && filters !== null) {
      // The entries after the snapshot are needed; pruned ones cannot be replayed.
      const upto = await embeddings.prunedUpto();
      if (index.lastSeq < upto) {
        logger.warn("index snapshot is older than the pruned index_log; rebuilding from the database", {
          snapshotSeq: index.lastSeq.toString(),
          prunedUpto: upto.toString(),
          dir,
        });
        index.dispose();
        index = null;
      }
    }
    let keeper: IndexKeeper;
    if (index === null || filters === null) {
      logger.info("rebuilding the vector index from the database", { model: modelId });
      const built = await buildFromTables(options, embeddings);
      keeper = new IndexKeeper(built, "database", deps, dir, options);
      await keeper.startFrom(built.start);
    } else {
      keeper = new IndexKeeper({ index, filters }, "snapshot", deps, dir, options);
      keeper.snapshotWrittenAt = await snapshotTime(dir);
    }
    const fromSeq = keeper.index.lastSeq;
    // Listen before replaying, so nothing committed in between waits for the timer. A
    // notification can arrive with the LISTEN's answer, and its catch-up then runs before the
    // replay below, which finds nothing left: what was replayed is what either applied.
    await keeper.follow();
    await keeper.exclusive(() => keeper.replay());
    const replayed = keeper.appliedEntries;
    logger.info("vector index loaded", {
      model: modelId,
      source: keeper.source,
      vectors: keeper.index.size,
      filtered: keeper.filters.size,
      replayed,
      hnswlib: keeper.index.hnswBuild,
      fromSeq: fromSeq.toString(),
      seq: keeper.index.lastSeq.toString(),
      gaps: keeper.gaps.count.toString(),
      ms: Math.round(performance.now() - started),
    });
    keeper.maybeSnapshot();
    return keeper;
  }

  /**
   * Applies every log entry after the index's sequence; resolves once entries committed
   * before the call are in the index. A snapshot that falls due is written afterwards, in the
   * background.
   */
  catchUp(): Promise<void> {
    this.queuedCatchUp ??= this.exclusive(async () => {
      this.queuedCatchUp = undefined;
      await this.replay();
    });
    const done = this.queuedCatchUp;
    void done.then(() => this.maybeSnapshot(), () => undefined);
    return done;
  }

  /** Writes a snapshot (no-op when nothing changed since the last one), after any queued replay. */
  snapshot(): Promise<void> {
    return this.exclusive(async () => {
      const changes = this.changesSinceSnapshot;
      if (changes === 0) return;
      const started = performance.now();
      await this.index.writeSnapshot(this.dir, { filters: this.filters.serialize(this.index.slots) });
      this.changesSinceSnapshot -= changes;
      this.snapshotWrittenAt = Date.now();
      this.deps.logger.info("index snapshot written", {
        vectors: this.index.size,
        seq: this.index.lastSeq.toString(),
        ms: Math.round(performance.now() - started),
      });
    });
  }

  /** What the metrics report of the index: its size, its free slots, and how far its snapshot lags. */
  get state(): { size: number; deleted: number; snapshotAt: number | undefined; unsnapshotted: number; appliedSeq: bigint } {
    return {
      size: this.index.size,
      deleted: this.index.slots - this.index.size,
      snapshotAt: this.snapshotWrittenAt,
      unsnapshotted: this.changesSinceSnapshot,
      appliedSeq: this.index.lastSeq,
    };
  }

  /** Stops following the log and writes a final snapshot. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    clearInterval(this.poll);
    await this.unlisten?.().catch(() => undefined);
    await this.snapshot().catch((error) => this.deps.logger.error("final index snapshot failed", { error }));
    // The graph's thread finishes what it was sent before the process may exit around it.
    await this.index.graphSettled().catch(() => undefined);
    this.index.dispose();
    this.disposeRetired();
  }

  /** Runs `work` after everything queued before it, alone. */
  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.chain.then(work);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Every entry up to this sequence is applied: the highest read, or below the lowest gap. */
  private get safeSeq(): bigint {
    const lowest = this.gaps.lowest();
    return lowest === undefined ? this.highest : lowest - 1n;
  }

  /**
   * Applies what was committed to the log since the last replay: entries in the gaps it left,
   * then the tail after the highest sequence read. Every entry committed before the call is
   * applied when it resolves. New gaps get their fence (a transaction id) afterwards, so that
   * a later replay can tell when they will stay empty. When the log has been pruned past an
   * entry not yet applied, nothing can replay it: the indexes are built again from the tables.
   */
  private async replay(): Promise<void> {
    try {
      await this.readLog();
    } catch (error) {
      if (!(error instanceof PrunedPast)) throw error;
      await this.rebuild(error.upto);
      await this.readLog();
    }
  }

  /** The replay itself; PrunedPast when the log no longer holds an entry it needs. */
  private async readLog(): Promise<void> {
    const { embeddings } = this.deps;
    if (!this.gaps.isEmpty) await this.rereadGaps();
    for (;;) {
      const { entries, prunedUpto } = await embeddings.logAfter(this.highest, LOG_PAGE);
      // Read in one snapshot with the entries: a bound above the highest number read means
      // entries after it may be gone.
      if (prunedUpto > this.highest) throw new PrunedPast(prunedUpto);
      if (entries.length === 0) break;
      let next = this.highest + 1n;
      for (const e of entries) {
        if (e.seq > next) this.gaps.add(next, e.seq - 1n);
        next = e.seq + 1n;
      }
      this.highest = entries[entries.length - 1].seq;
      await this.applyAll(entries);
      this.index.lastSeq = this.safeSeq;
    }
    if (this.gaps.unfenced) this.gaps.fence(await embeddings.fence());
    this.index.lastSeq = this.safeSeq;
  }

  /**
   * Follows the log from where a build from the tables started: after its newest entry, and
   * in the holes below it (entries whose transactions had not committed).
   */
  private async startFrom(start: LogStart): Promise<void> {
    this.highest = start.last;
    this.gaps = new LogGaps();
    for (const hole of start.holes) this.gaps.add(hole.from, hole.to);
    if (this.gaps.unfenced) this.gaps.fence(await this.deps.embeddings.fence());
    this.index.lastSeq = this.safeSeq;
    // Nothing of a build from the tables is on disk yet.
    if (this.index.size > 0) this.changesSinceSnapshot = this.deps.policy.everyChanges;
  }

  /**
   * Builds the indexes again from the tables and puts them in place of the current ones
   * (runs inside a replay, so alone). Searches are refused meanwhile; the replaced index is
   * disposed a while later, once searches that took it before have finished with it.
   */
  private async rebuild(upto: bigint): Promise<void> {
    const { logger, embeddings } = this.deps;
    const started = performance.now();
    logger.warn("index_log was pruned past entries this replica had not applied; rebuilding the index from the database", {
      model: this.options.modelId,
      appliedSeq: this.safeSeq.toString(),
      prunedUpto: upto.toString(),
    });
    this.rebuildingNow = true;
    try {
      const built = await buildFromTables(this.options, embeddings);
      const old = this.current.index;
      this.current = { index: built.index, filters: built.filters };
      this.source = "database";
      await this.startFrom(built.start);
      this.retire(old);
      this.deps.rebuilt?.();
    } finally {
      this.rebuildingNow = false;
    }
    logger.info("vector index rebuilt from the database", {
      model: this.options.modelId,
      vectors: this.index.size,
      seq: this.index.lastSeq.toString(),
      ms: Math.round(performance.now() - started),
    });
  }

  /** Disposes a replaced index after RETIRED_GRACE_MS (a search may hold it between awaits). */
  private retire(index: VectorIndex): void {
    this.disposeRetired();
    const timer = setTimeout(() => {
      index.dispose();
      if (this.retired?.index === index) this.retired = undefined;
    }, RETIRED_GRACE_MS);
    timer.unref();
    this.retired = { index, timer };
  }

  /** Disposes the replaced index now, if one is kept. */
  private disposeRetired(): void {
    if (!this.retired) return;
    clearTimeout(this.retired.timer);
    this.retired.index.dispose();
    this.retired = undefined;
  }

  /** Reads the gaps' entries that committed since, and drops the gaps that will stay empty. */
  private async rereadGaps(): Promise<void> {
    for (;;) {
      const ranges = this.gaps.ranges();
      const { entries, horizon, prunedUpto } = await this.deps.embeddings.logWithin(ranges, LOG_PAGE);
      // A gap at or below the bound may have held an entry that committed and was pruned: it
      // cannot be told from one that stayed empty.
      if (prunedUpto >= ranges[0].from) throw new PrunedPast(prunedUpto);
      // A full page looked for everything up to its last entry, not beyond.
      const full = entries.length === LOG_PAGE;
      const checkedTo = full ? entries[entries.length - 1].seq : ranges[ranges.length - 1].to;
      this.gaps.settle(
        entries.map((e) => e.seq),
        checkedTo,
        horizon,
      );
      await this.applyAll(entries);
      if (!full || this.gaps.isEmpty) return;
    }
  }

  /**
   * Applies entries in order. An entry that cannot be applied (a vector of the wrong size,
   * say) is logged and skipped, so one bad row never stops the index from following the log.
   */
  private async applyAll(entries: LogEntry[]): Promise<void> {
    const { index } = this;
    let sliceStart = performance.now();
    for (const e of entries) {
      // A long log (a replica far behind) is applied in slices too; searches in between
      // see the index as of some sequence, as they would between pages.
      if (performance.now() - sliceStart >= REBUILD_SLICE_MS) {
        await yieldToEventLoop();
        sliceStart = performance.now();
      }
      if (e.modelId === index.modelId || e.op === "attributes") {
        try {
          this.apply(e);
          this.appliedEntries++;
        } catch (error) {
          this.deps.logger.error("index log entry skipped", { seq: e.seq.toString(), imageId: e.imageId.toString(), error });
        }
      }
      await keepUp(index);
    }
    this.changesSinceSnapshot += entries.length;
  }

  /**
   * One log entry. Entries carry the current vector and attributes, not those of their
   * time: an upsert whose vector (or image) is gone was superseded by a later entry, which
   * follows, so applying the current state converges on the tables.
   */
  private apply(e: LogEntry): void {
    const { index, filters } = this;
    if (e.op === "upsert") {
      if (e.vector === null || e.attributes === null) return;
      index.upsert(e.imageId, e.vector);
      filters.set(index.slot(e.imageId)!, e.attributes);
    } else if (e.op === "delete") {
      const slot = index.slot(e.imageId);
      if (slot === undefined) return;
      index.remove(e.imageId);
      filters.clear(slot);
    } else {
      const slot = index.slot(e.imageId);
      if (slot !== undefined && e.attributes !== null) filters.set(slot, e.attributes);
    }
  }

  private async follow(): Promise<void> {
    const { sql, policy, logger } = this.deps;
    const listener = await sql.listen("glimpse_index_log", () => {
      if (!this.closed) this.catchUp().catch((error) => logger.error("index catch-up failed", { error }));
    });
    this.unlisten = () => listener.unlisten();
    // On a timer: writes what changed since the last snapshot.
    this.timer = setInterval(() => {
      if (!this.closed) this.snapshot().catch((error) => logger.error("index snapshot failed", { error }));
    }, policy.intervalMs);
    this.timer.unref();
    // And a short poll of the log's tail (one indexed query), so an entry whose notification
    // did not arrive (the listening connection reconnecting, say) waits seconds, even when
    // nothing follows it.
    this.poll = setInterval(() => {
      if (!this.closed) this.catchUp().catch((error) => logger.error("index catch-up failed", { error }));
    }, LOG_POLL_MS);
    this.poll.unref();
  }

  /** Queues a snapshot when enough changed; never waited for by callers. */
  private maybeSnapshot(): void {
    if (this.closed || this.snapshotQueued || this.changesSinceSnapshot < this.deps.policy.everyChanges) return;
    this.snapshotQueued = true;
    // Written in the background, outside the call whose change made it due.
    detached(() => this.snapshot())
      .catch((error) => this.deps.logger.error("index snapshot failed", { error }))
      .finally(() => (this.snapshotQueued = false));
  }
}

/** When the snapshot in `dir` was written: its manifest's modification time. */
async function snapshotTime(dir: string): Promise<number | undefined> {
  return (await stat(path.join(dir, "snapshot.json")).catch(() => undefined))?.mtimeMs;
}

/** The log was pruned past an entry the index has not applied: only the tables have it now. */
class PrunedPast extends Error {
  constructor(readonly upto: bigint) {
    super(`index_log is pruned up to ${upto}`);
  }
}

/**
 * The indexes built from the tables, and where the log is followed from afterwards: every
 * entry committed before the build read the tables is in them; later ones replay, and so do
 * those held by transactions still running (holes below the newest).
 */
async function buildFromTables(
  options: VectorIndexOptions,
  embeddings: EmbeddingsRepository,
): Promise<{ index: VectorIndex; filters: FilterIndex; start: LogStart }> {
  const { modelId, dimension } = options;
  const index = await VectorIndex.create(options);
  const filters = new FilterIndex();
  try {
    const start = await embeddings.logStart();
    index.lastSeq = start.last;
    // Graph inserts cost up to a millisecond each: hand the event loop back every
    // REBUILD_SLICE_MS, so health checks and catalogue calls keep answering meanwhile.
    let sliceStart = performance.now();
    for await (const page of embeddings.allVectors(modelId)) {
      for (const e of page) {
        if (e.vector.length !== dimension) continue;
        index.upsert(e.imageId, e.vector);
        filters.set(index.slot(e.imageId)!, e.attributes);
        if (performance.now() - sliceStart >= REBUILD_SLICE_MS) {
          await yieldToEventLoop();
          sliceStart = performance.now();
        }
      }
      await keepUp(index);
    }
    // Ready means searchable at full speed: the graph thread has built what it was sent.
    await index.graphSettled();
    return { index, filters, start };
  } catch (error) {
    index.dispose();
    throw error;
  }
}

/** How long an index replaced by a rebuild is kept for searches that took it before. */
const RETIRED_GRACE_MS = 30_000;

/** The longest the rebuild from the tables runs before letting other work on the event loop. */
export const REBUILD_SLICE_MS = 10;

/**
 * Graph changes posted to the graph thread and not yet applied, beyond which a rebuild or a
 * replay waits for it: bounds the vectors queued between the threads (2 KiB each at 512
 * dimensions) and the time a search waits behind them (an insert takes up to a millisecond,
 * and a search runs after every change made before it).
 */
const MAX_GRAPH_BACKLOG = 64;

/** Waits for the graph thread when it is MAX_GRAPH_BACKLOG changes behind. */
async function keepUp(index: VectorIndex): Promise<void> {
  if (index.graphBacklog >= MAX_GRAPH_BACKLOG) await index.graphSettled();
}

/** Resolves after pending I/O callbacks (incoming calls among them) have run. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A model id as a directory name. */
function safeName(modelId: string): string {
  return modelId.replace(/[^A-Za-z0-9._-]/g, "_");
}

/** The filter index a loaded snapshot carries; SnapshotError when it has none or it is malformed. */
async function loadFilters(index: VectorIndex): Promise<FilterIndex> {
  const bytes = index.attachments.get("filters");
  index.attachments.clear();
  if (!bytes) throw new SnapshotError("snapshot has no filter index");
  try {
    return await FilterIndex.deserialize(bytes, index.slots);
  } catch (err) {
    throw new SnapshotError(`snapshot's filter index is unusable: ${(err as Error).message}`);
  }
}
