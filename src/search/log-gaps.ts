import type { SeqRange } from "../store/embeddings-repository.js";

/** A run of missing sequence numbers and the transaction id that bounds whoever may hold them. */
interface Gap extends SeqRange {
  /**
   * A transaction id assigned after the gap was seen (EmbeddingsRepository.fence): every
   * transaction that may still commit an entry in the gap has a smaller id. Undefined until
   * the reader has taken one.
   */
  fence: bigint | undefined;
}

/**
 * The sequence numbers an `index_log` reader has passed without reading them. `seq` comes
 * from a sequence, taken when an entry is inserted, but transactions commit in their own
 * order: a reader that finds 101 may find 100 later, when the transaction holding it
 * commits, or never, when it rolls back. Each gap is re-read until its entries appear or
 * until PostgreSQL shows that every transaction that could hold them has ended (a snapshot
 * horizon past the gap's fence); no timeout is involved, so a transaction however long never
 * loses its entries. Pure bookkeeping: IndexKeeper does the reading.
 */
export class LogGaps {
  /** Ascending, disjoint. */
  private gaps: Gap[] = [];

  /** Whether no sequence number is outstanding. */
  get isEmpty(): boolean {
    return this.gaps.length === 0;
  }

  /** How many sequence numbers are outstanding. */
  get count(): bigint {
    return this.gaps.reduce((n, g) => n + g.to - g.from + 1n, 0n);
  }

  /** The outstanding runs, ascending. */
  ranges(): SeqRange[] {
    return this.gaps.map(({ from, to }) => ({ from, to }));
  }

  /** The lowest outstanding sequence number, if any. */
  lowest(): bigint | undefined {
    return this.gaps[0]?.from;
  }

  /** Whether some gap still waits for its fence. */
  get unfenced(): boolean {
    return this.gaps.some((g) => g.fence === undefined);
  }

  /** Records a run the reader passed; it must lie above every outstanding one. */
  add(from: bigint, to: bigint): void {
    if (from > to) return;
    const last = this.gaps.at(-1);
    if (last && from <= last.to) throw new RangeError(`gap ${from}..${to} overlaps ${last.from}..${last.to}`);
    this.gaps.push({ from, to, fence: undefined });
  }

  /** Gives every gap without a fence this one (a transaction id taken after those gaps were seen). */
  fence(xid: bigint): void {
    for (const g of this.gaps) g.fence ??= xid;
  }

  /**
   * The outcome of one re-read of the gaps: `found` are the sequence numbers that came back
   * (ascending), and every outstanding number up to `checkedTo` was looked for in a snapshot
   * whose horizon (the oldest transaction still running) was `horizon`. Found numbers leave;
   * numbers looked for and not found leave too once the horizon has passed their fence: the
   * transactions that held them ended without committing them (rolled back).
   */
  settle(found: readonly bigint[], checkedTo: bigint, horizon: bigint): void {
    const next: Gap[] = [];
    let i = 0;
    for (const g of this.gaps) {
      let from = g.from;
      while (i < found.length && found[i] < from) i++;
      while (i < found.length && found[i] <= g.to) {
        this.keep(next, { from, to: found[i] - 1n, fence: g.fence }, checkedTo, horizon);
        from = found[i] + 1n;
        i++;
      }
      this.keep(next, { from, to: g.to, fence: g.fence }, checkedTo, horizon);
    }
    this.gaps = next;
  }

  /** Appends what is left of `g` (nothing when it is empty or known to stay empty). */
  private keep(into: Gap[], g: Gap, checkedTo: bigint, horizon: bigint): void {
    if (g.from > g.to) return;
    const ended = g.fence !== undefined && horizon > g.fence;
    if (ended) {
      // Looked for after every transaction that could commit it ended: it never will.
      if (g.to <= checkedTo) return;
      if (g.from <= checkedTo) g = { ...g, from: checkedTo + 1n };
    }
    into.push(g);
  }
}
