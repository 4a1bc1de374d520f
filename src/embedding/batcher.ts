// Dynamic batching: single requests from many callers grouped into model runs, so a run pays
// its fixed cost once for many inputs while a lone request waits at most maxWaitMs.
import { DomainError } from "../errors.js";

/** The clock and timer functions the batcher uses; tests may pass their own. */
export interface BatcherTimers {
  /** Milliseconds on a monotonic clock. */
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const globalTimers: BatcherTimers = {
  // Looked up at each call, so fake timers installed after construction still apply.
  now: () => performance.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** Limits and the function that runs one batch. */
export interface BatcherOptions<I, O> {
  /** Most items per run; a run starts at once when this many are queued. At least 1. */
  maxBatchSize: number;
  /** How long the first queued item waits for others before its batch runs, in ms. At least 0. */
  maxWaitMs: number;
  /** Items allowed to wait (running ones not counted); past it submit fails with RESOURCE_EXHAUSTED. */
  maxQueue: number;
  /** Runs one batch; must return one output per item, in the same order. */
  run(items: I[]): Promise<O[]>;
  /** Clock and timer seam; default performance.now and the global setTimeout/clearTimeout. */
  timers?: BatcherTimers;
  /** Told of every run (the metrics); never changes what the batcher does. */
  observer?: BatchObserver;
}

/** Receives each finished model run: how many items it held and how long it took. */
export interface BatchObserver {
  ran(items: number, ms: number): void;
}

interface Entry<I, O> {
  item: I;
  queuedAt: number;
  resolve(output: O): void;
  reject(error: unknown): void;
}

/** Suggested wait before retrying a submit that found the queue full, at the least. */
const MIN_RETRY_AFTER_MS = 100;

/**
 * Groups submitted items into batches: a batch starts when maxBatchSize items are queued or
 * maxWaitMs after the first of them was, whichever is sooner. One batch runs at a time; the
 * next one forms meanwhile and starts as soon as the running one ends, if it is due by then.
 * Outputs go back to their callers in submission order; a failed run fails each of its items.
 */
export class Batcher<I, O> {
  private readonly queue: Entry<I, O>[] = [];
  private readonly timers: BatcherTimers;
  private timer: unknown;
  /** The wait of the batch now forming has run out. */
  private due = false;
  private running: Promise<void> | undefined;
  private closed = false;
  /** Moving average of a run's duration, for the retry hint. */
  private averageRunMs = 0;

  constructor(private readonly options: BatcherOptions<I, O>) {
    const { maxBatchSize, maxWaitMs, maxQueue } = options;
    for (const [name, value] of Object.entries({ maxBatchSize, maxQueue })) {
      if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be an integer >= 1, got ${value}`);
    }
    if (!(maxWaitMs >= 0)) throw new Error(`maxWaitMs must be >= 0, got ${maxWaitMs}`);
    this.timers = options.timers ?? globalTimers;
  }

  /** Items waiting for a batch (not counting those in the running one). */
  get queued(): number {
    return this.queue.length;
  }

  /**
   * Queues `item` and resolves with its output. Fails at once with RESOURCE_EXHAUSTED (with a
   * retry hint) when maxQueue items are already waiting, and with UNAVAILABLE after close().
   * When `signal` aborts, the promise rejects with the signal's reason: a queued item leaves
   * the queue; an item already in a running batch is run but its output dropped.
   */
  submit(item: I, signal?: AbortSignal): Promise<O> {
    if (this.closed) return Promise.reject(new DomainError("UNAVAILABLE", "the embedding queue is shutting down"));
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.queue.length >= this.options.maxQueue) {
      return Promise.reject(
        new DomainError("RESOURCE_EXHAUSTED", "too many embedding requests are waiting; retry later", {
          retryAfterMs: this.retryAfterMs(),
        }),
      );
    }
    return new Promise<O>((resolve, reject) => {
      const entry: Entry<I, O> = {
        item,
        queuedAt: this.timers.now(),
        resolve: (output) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(output);
        },
        reject: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        const at = this.queue.indexOf(entry);
        if (at >= 0) {
          this.queue.splice(at, 1);
          if (this.queue.length === 0) this.resetWait();
        }
        // In a running batch the entry stays in it; its output then goes nowhere.
        entry.resolve = () => undefined;
        entry.reject = () => undefined;
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.queue.push(entry);
      if (this.timer === undefined && !this.due) this.startWait(this.options.maxWaitMs);
      this.schedule();
    });
  }

  /** Fails every queued item with UNAVAILABLE, refuses new ones, and waits for the running batch. */
  async close(): Promise<void> {
    this.closed = true;
    this.resetWait();
    const waiting = this.queue.splice(0);
    const error = new DomainError("UNAVAILABLE", "the embedding queue is shutting down");
    for (const entry of waiting) entry.reject(error);
    await this.running;
  }

  private startWait(ms: number): void {
    this.timer = this.timers.setTimeout(() => {
      this.timer = undefined;
      this.due = true;
      this.schedule();
    }, ms);
  }

  private resetWait(): void {
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
    this.due = false;
  }

  /** Starts the next batch if none is running and one is full or due. */
  private schedule(): void {
    if (this.running !== undefined || this.queue.length === 0) return;
    if (!this.due && this.queue.length < this.options.maxBatchSize) return;
    const batch = this.queue.splice(0, this.options.maxBatchSize);
    this.resetWait();
    // What is left forms the next batch, due maxWaitMs after its first item was queued.
    if (this.queue.length > 0) {
      const left = this.queue[0].queuedAt + this.options.maxWaitMs - this.timers.now();
      if (left > 0) this.startWait(left);
      else this.due = true;
    }
    this.running = this.runBatch(batch).finally(() => {
      this.running = undefined;
      this.schedule();
    });
  }

  private async runBatch(batch: Entry<I, O>[]): Promise<void> {
    const started = performance.now();
    try {
      const outputs = await this.options.run(batch.map((e) => e.item));
      if (outputs.length !== batch.length) {
        throw new DomainError("INTERNAL", `a batch of ${batch.length} items gave ${outputs.length} outputs`);
      }
      batch.forEach((entry, i) => entry.resolve(outputs[i]));
    } catch (error) {
      for (const entry of batch) entry.reject(error);
    } finally {
      const took = performance.now() - started;
      this.averageRunMs = this.averageRunMs === 0 ? took : 0.8 * this.averageRunMs + 0.2 * took;
      this.options.observer?.ran(batch.length, took);
    }
  }

  /** Roughly when the queue will have room: the batches ahead of a new item, run one by one. */
  private retryAfterMs(): number {
    const batchesAhead = Math.ceil(this.queue.length / this.options.maxBatchSize);
    return Math.max(MIN_RETRY_AFTER_MS, Math.ceil(this.options.maxWaitMs + batchesAhead * this.averageRunMs));
  }
}
