import type { BlobStore } from "../blobs/blob-store.js";
import { systemClock, type Clock } from "../clock.js";
import type { Logger } from "../logging/logger.js";
import { lockContent, type ImagesRepository, type Tx } from "../store/images-repository.js";

/** What removing blobs needs: the rows that reference them and the files themselves. */
export interface BlobReferences {
  images: ImagesRepository;
  transaction: <T>(fn: (tx: Tx) => Promise<T>) => Promise<T>;
  blobs: BlobStore;
}

/** What one sweep removed. */
export interface SweepResult {
  /** Blob files no image referenced. */
  blobs: number;
  /** Partial writes left in the temp directory. */
  temp: number;
}

/** How a sweep judges age and when it stops. */
export interface SweepOptions {
  /** Files younger than this are kept whatever references them, in milliseconds. */
  graceMs: number;
  /** Stops the sweep between batches (shutdown). */
  signal?: AbortSignal;
  /** Compared with file modification times, so the real clock by default. */
  clock?: Clock;
  /** Blobs checked against the images table per query. Default 500. */
  batchSize?: number;
}

/**
 * Removes the blob unless an image references it; returns whether it did. The check and the
 * unlink run under the content lock that every upload holds from storing the blob until its
 * row commits, so no upload can re-reference the blob between them. Callers remove rows
 * first and commit, then call this: a crash in between leaves an orphan file, which a sweep
 * removes, never a row whose bytes are gone.
 */
export async function releaseBlob(deps: BlobReferences, sha256: string): Promise<boolean> {
  return deps.transaction(async (tx) => {
    await lockContent(sha256, tx);
    if ((await deps.images.countByContent(sha256, tx)) > 0) return false;
    await deps.blobs.delete(sha256);
    return true;
  });
}

/**
 * Removes blob files that no image references and that are older than the grace period,
 * then stale temp files. Blobs are walked a directory at a time and checked against the
 * images table in batches; each candidate is then released under its content lock, so an
 * upload storing the same bytes meanwhile keeps them.
 */
export async function sweepOrphans(deps: BlobReferences, options: SweepOptions): Promise<SweepResult> {
  const { graceMs, signal } = options;
  const clock = options.clock ?? systemClock;
  const batchSize = options.batchSize ?? 500;
  const cutoff = clock.now().getTime() - graceMs;
  let removed = 0;
  let batch: string[] = [];
  const flush = async () => {
    const referenced = await deps.images.referencedContent(batch);
    for (const sha256 of batch) {
      signal?.throwIfAborted();
      if (!referenced.has(sha256) && (await releaseBlob(deps, sha256))) removed++;
    }
    batch = [];
  };
  for await (const entry of deps.blobs.entries()) {
    signal?.throwIfAborted();
    if (entry.modifiedAt.getTime() >= cutoff) continue;
    batch.push(entry.sha256);
    if (batch.length >= batchSize) await flush();
  }
  if (batch.length > 0) await flush();
  signal?.throwIfAborted();
  const temp = await deps.blobs.sweepTemp(graceMs);
  return { blobs: removed, temp };
}

/**
 * Sweeps now and every `intervalMs` in the background (a sweep still running is not
 * overlapped). The returned function stops the timer, aborts a running sweep between
 * batches and resolves once it has ended.
 */
export function startOrphanSweeping(
  deps: BlobReferences & { logger: Logger },
  options: { intervalMs: number; graceMs: number },
): () => Promise<void> {
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  const sweep = () => {
    if (running) return;
    running = sweepOrphans(deps, { graceMs: options.graceMs, signal: stop.signal })
      .then((result) => {
        if (result.blobs + result.temp > 0) deps.logger.info("removed unreferenced blob files", { ...result });
      })
      .catch((error) => {
        if (!stop.signal.aborted) deps.logger.warn("sweeping unreferenced blob files failed", { error });
      })
      .finally(() => {
        running = undefined;
      });
  };
  sweep();
  const timer = setInterval(sweep, options.intervalMs);
  timer.unref();
  return async () => {
    clearInterval(timer);
    stop.abort();
    await running;
  };
}
