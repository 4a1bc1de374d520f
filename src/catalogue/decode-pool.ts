import { DomainError } from "../errors.js";

/** How many image decodes run at once and how many may wait for a turn. */
export interface DecodePoolOptions {
  /** Decodes running at once; at least 1. */
  concurrency: number;
  /** Decodes allowed to wait for a running one to finish; 0 refuses whatever cannot start at once. */
  maxQueue: number;
}

/** Shortest retry delay suggested to a refused caller, in milliseconds. */
const MIN_RETRY_AFTER_MS = 100;

interface Waiter {
  /** Hands the waiter a running slot. */
  start(): void;
}

/**
 * A bounded semaphore for CPU-heavy image decodes. At most `concurrency` run; up to
 * `maxQueue` more wait, first come first served; beyond that a decode is refused at once
 * with RESOURCE_EXHAUSTED and a retry hint. So a burst of large uploads from one caller
 * cannot occupy every core (and every libuv thread blob reads need), and waiting work, which
 * holds its upload's bytes, stays bounded.
 */
export class DecodePool {
  private running = 0;
  private readonly waiting: Waiter[] = [];
  /** Moving average of a decode's duration, for the retry hint. */
  private averageRunMs = 0;

  constructor(private readonly options: DecodePoolOptions) {
    const { concurrency, maxQueue } = options;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new Error(`concurrency must be an integer >= 1, got ${concurrency}`);
    }
    if (!Number.isInteger(maxQueue) || maxQueue < 0) throw new Error(`maxQueue must be an integer >= 0, got ${maxQueue}`);
  }

  /** Decodes running now. */
  get active(): number {
    return this.running;
  }

  /** Decodes waiting for a slot. */
  get queued(): number {
    return this.waiting.length;
  }

  /**
   * Runs `task` once a slot is free. Rejects at once with RESOURCE_EXHAUSTED when the queue
   * is full; when `signal` aborts while the task waits, it leaves the queue and the promise
   * rejects with the signal's reason. A task that has started runs to its end. `queueAlways`
   * waits even past a full queue: for work already admitted and paid for (an image a
   * generation produced), which a caller cannot multiply.
   */
  async run<T>(task: () => Promise<T>, signal?: AbortSignal, options: { queueAlways?: boolean } = {}): Promise<T> {
    await this.acquire(signal, options.queueAlways ?? false);
    const started = performance.now();
    try {
      return await task();
    } finally {
      const took = performance.now() - started;
      this.averageRunMs = this.averageRunMs === 0 ? took : 0.8 * this.averageRunMs + 0.2 * took;
      this.release();
    }
  }

  private acquire(signal: AbortSignal | undefined, queueAlways: boolean): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.running < this.options.concurrency) {
      this.running++;
      return Promise.resolve();
    }
    if (this.waiting.length >= this.options.maxQueue && !queueAlways) {
      return Promise.reject(
        new DomainError("RESOURCE_EXHAUSTED", "too many images are being decoded; retry later", {
          retryAfterMs: this.retryAfterMs(),
        }),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        start: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        const at = this.waiting.indexOf(waiter);
        if (at >= 0) this.waiting.splice(at, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  /** Passes the finished task's slot to the first waiter, or frees it. */
  private release(): void {
    const next = this.waiting.shift();
    if (next) next.start();
    else this.running--;
  }

  /** Roughly when a slot in the queue frees up: the waiting decodes, `concurrency` at a time. */
  private retryAfterMs(): number {
    const rounds = Math.ceil((this.waiting.length + 1) / this.options.concurrency);
    return Math.max(MIN_RETRY_AFTER_MS, Math.ceil(rounds * this.averageRunMs));
  }
}
