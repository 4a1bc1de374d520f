import { randomUUID } from "node:crypto";
import type { BlobStore } from "../blobs/blob-store.js";
import type { Embedder } from "../embedding/embedder.js";
import type { Logger } from "../logging/logger.js";
import { DomainError } from "../errors.js";
import type { EmbeddingsRepository } from "../store/embeddings-repository.js";
import type { IndexClaimsRepository } from "../store/index-claims-repository.js";

export interface IndexerDeps {
  embeddings: EmbeddingsRepository;
  /** Claims on pending images, so replicas on one database embed each image once. */
  claims: IndexClaimsRepository;
  blobs: BlobStore;
  logger: Logger;
  /** Images embedded per round; the batcher groups them into model runs. */
  batchSize: number;
  /**
   * Brings this replica's index up to the log: after each stored round, and before waiters
   * for images indexed elsewhere are told, so they are told once the image is searchable here.
   */
  afterStore: () => Promise<void>;
  /** How often to look for pending images nobody announced (other replicas' uploads). */
  pollMs?: number;
  /**
   * How long a claimed batch is this indexer's alone, in milliseconds (default two minutes):
   * longer than a batch takes to embed, and how long the images of a replica that died
   * mid-batch wait before another takes them.
   */
  claimLeaseMs?: number;
}

/** Default lease of a claimed batch. */
export const DEFAULT_CLAIM_LEASE_MS = 120_000;

/**
 * Embeds pending images in the background: claims them oldest first, a round at a time (a
 * batch another replica has claimed is left to it; its claim lapses if it dies), reuses the vector of identical bytes already embedded by this model, stores vectors and
 * statuses in one transaction (the index follows through `index_log`), and marks images that
 * cannot be embedded as failed with the reason. Uploads waiting for their image are told when
 * it is done.
 */
export class Indexer {
  private embedder: Embedder | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly waiters = new Map<bigint, (() => void)[]>();
  /** Failed tries of images still pending (transient errors only). */
  private readonly attempts = new Map<bigint, number>();
  /** Names this indexer's claims. */
  private readonly claimant = `${process.pid}-${randomUUID()}`;

  constructor(private readonly deps: IndexerDeps) {}

  /** Starts working with this model's embedder (when it becomes ready). */
  start(embedder: Embedder): void {
    this.embedder = embedder;
    this.timer = setInterval(() => this.notify(), this.deps.pollMs ?? 5000);
    this.timer.unref();
    this.notify();
  }

  /** Something may be pending: run a round soon. */
  notify(): void {
    if (this.closed || !this.embedder) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.drain()
      .catch((error) => this.deps.logger.error("indexing round failed", { error }))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.notify();
        }
      });
  }

  /**
   * Resolves once the image is no longer pending (indexed or failed), or rejects when the
   * signal aborts. The caller re-reads the image for its status.
   */
  waitFor(imageId: bigint, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = () => {
        const list = this.waiters.get(imageId);
        if (list) {
          const i = list.indexOf(done);
          if (i >= 0) list.splice(i, 1);
          if (list.length === 0) this.waiters.delete(imageId);
        }
        reject(signal!.reason);
      };
      if (signal?.aborted) return reject(signal.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      const list = this.waiters.get(imageId) ?? [];
      list.push(done);
      this.waiters.set(imageId, list);
      // It may already be done (indexed before we registered, or not pending at all).
      this.deps.embeddings
        .pendingAmong([imageId])
        .then((pending) => (pending.length > 0 ? this.notify() : this.deps.afterStore().then(() => this.release([imageId]))))
        .catch(() => this.notify());
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.running;
  }

  private async drain(): Promise<void> {
    const { embeddings, blobs, batchSize, logger } = this.deps;
    const embedder = this.embedder!;
    for (;;) {
      if (this.closed) return;
      const pending = await this.deps.claims.claim(this.claimant, batchSize, this.deps.claimLeaseMs ?? DEFAULT_CLAIM_LEASE_MS);
      if (pending.length === 0) {
        await this.releaseSettled();
        return;
      }
      const done: { imageId: bigint; vector: Float32Array }[] = [];
      const failed: { imageId: bigint; error: string }[] = [];
      let transient = 0;
      await Promise.all(
        pending.map(async (image) => {
          try {
            const reused = await embeddings.vectorForContent(image.sha256, embedder.modelId);
            const vector = reused ?? (await embedder.embedImage(await blobs.get(image.sha256)));
            done.push({ imageId: image.id, vector });
          } catch (err) {
            // A busy or restarting model, a database or disk hiccup is not the image's fault:
            // it stays pending for the next round, up to a few tries.
            const tries = (this.attempts.get(image.id) ?? 0) + 1;
            if (!isPermanent(err) && tries < MAX_TRIES) {
              this.attempts.set(image.id, tries);
              transient++;
            } else {
              this.attempts.delete(image.id);
              failed.push({ imageId: image.id, error: (err as Error).message });
            }
          }
        }),
      );
      await embeddings.storeIndexed(embedder.modelId, done);
      if (failed.length > 0) {
        logger.warn("images could not be indexed", { count: failed.length, first: failed[0].error });
        await embeddings.markFailed(failed);
      }
      // Every claim of the round goes: stored and failed images are no longer pending, and
      // one to retry may be taken by any replica.
      await this.deps.claims.release(this.claimant, pending.map((p) => p.id));
      await this.deps.afterStore();
      this.release([...done.map((d) => d.imageId), ...failed.map((f) => f.imageId)]);
      if (transient > 0) return; // the poll timer tries again
    }
  }

  /**
   * Releases waiters whose image is no longer pending (deleted, or indexed by another
   * replica), once this replica's index has applied what that replica committed, so a waiting
   * upload answers when it is searchable here, as one indexed here does.
   */
  private async releaseSettled(): Promise<void> {
    if (this.waiters.size === 0) return;
    const waiting = [...this.waiters.keys()];
    const stillPending = new Set(await this.deps.embeddings.pendingAmong(waiting));
    const settled = waiting.filter((id) => !stillPending.has(id));
    if (settled.length === 0) return;
    await this.deps.afterStore();
    this.release(settled);
  }

  private release(ids: bigint[]): void {
    for (const id of ids) {
      const list = this.waiters.get(id);
      if (!list) continue;
      this.waiters.delete(id);
      for (const done of list) done();
    }
  }
}

/** Tries an image gets before it is marked failed, when the errors look transient. */
const MAX_TRIES = 3;

/** Errors that trying again cannot fix: bytes that do not decode, a blob that is gone. */
function isPermanent(err: unknown): boolean {
  if (err instanceof DomainError) return err.code === "INVALID_ARGUMENT" || err.code === "NOT_FOUND";
  return (err as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}
