import type { Logger } from "../logging/logger.js";
import type { EmbeddingsRepository } from "../store/embeddings-repository.js";

/** How often a replica takes a pruning step. */
const PRUNE_INTERVAL_MS = 60_000;

/** What pruning needs: the log's repository, where to report, and what it counts. */
export interface LogPruningDeps {
  embeddings: EmbeddingsRepository;
  logger: Logger;
  /** Called with the entries each step deleted. */
  pruned?: (entries: number) => void;
}

/**
 * Prunes `index_log` entries older than `retentionMs`: a step now and every `intervalMs` in
 * the background (EmbeddingsRepository.pruneLog; a step deletes what the previous one chose,
 * so an entry goes one to two intervals after it is old enough). Every replica runs this;
 * their steps take turns on one row. A step still running is not overlapped. The returned
 * function stops the timer and resolves once a running step has ended.
 */
export function startLogPruning(
  deps: LogPruningDeps,
  options: { retentionMs: number; intervalMs?: number; now?: () => number },
): () => Promise<void> {
  const { embeddings, logger } = deps;
  const now = options.now ?? Date.now;
  let running: Promise<void> | undefined;
  let stopped = false;
  const step = () => {
    if (running || stopped) return;
    running = embeddings
      .pruneLog(new Date(now() - options.retentionMs))
      .then(({ deleted, upto }) => {
        deps.pruned?.(deleted);
        if (deleted > 0) logger.info("pruned index_log", { entries: deleted, upto: upto.toString() });
      })
      .catch((error) => {
        if (!stopped) logger.warn("pruning index_log failed", { error });
      })
      .finally(() => {
        running = undefined;
      });
  };
  step();
  const timer = setInterval(step, options.intervalMs ?? PRUNE_INTERVAL_MS);
  timer.unref();
  return async () => {
    stopped = true;
    clearInterval(timer);
    await running;
  };
}
