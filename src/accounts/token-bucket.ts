import type { Clock } from "../clock.js";

/** The outcome of asking for one request's worth of tokens. */
export type Admission = { allowed: true } | { allowed: false; retryAfterMs: number };

/** One bucket a call is charged to: its name and its size (and refill) per minute. */
export interface BucketLimit {
  key: string;
  perMinute: number;
}

/**
 * Where token buckets live: in this process ({@link RateLimiter}) or in Redis, shared by
 * every replica (RedisRateLimiter). Both take from several buckets at once, or from none.
 */
export interface TokenBuckets {
  /** Takes one token from each bucket, or none when any is empty (then: the longest wait). */
  takeAll(limits: readonly BucketLimit[]): Admission | Promise<Admission>;
  /** Whether {@link takeAll} would admit now, without taking anything. */
  wouldAdmit(limits: readonly BucketLimit[]): Admission | Promise<Admission>;
}

interface Bucket {
  tokens: number;
  /** Clock time (ms) at which `tokens` was last brought up to date. */
  at: number;
  perMinute: number;
}

/** Buckets checked between sweeps of idle ones. */
const SWEEP_EVERY = 1000;

/**
 * Token buckets, one per key (an API key, an account, a client address): each holds at most `perMinute` tokens and refills continuously
 * at `perMinute` per minute; a request takes one. Time comes from the injected clock, so
 * tests move it instead of sleeping. Buckets live in this process only: with several
 * replicas each enforces the limit on the calls it serves (GLIMPSE_REDIS_URL shares them).
 */
export class RateLimiter implements TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private checks = 0;

  constructor(private readonly clock: Clock) {}

  /** Takes one token from `key`'s bucket, whose size is `perMinute`; says how long to wait if empty. */
  take(key: string, perMinute: number): Admission {
    return this.takeAll([{ key, perMinute }]);
  }

  /**
   * Takes one token from each of several buckets (a key's and its account's), or from none:
   * when any is empty nothing is taken and the answer is the longest wait among them.
   */
  takeAll(limits: readonly { key: string; perMinute: number }[]): Admission {
    return this.admit(limits, true);
  }

  /** Whether {@link takeAll} would admit now, without taking anything. */
  wouldAdmit(limits: readonly { key: string; perMinute: number }[]): Admission {
    return this.admit(limits, false);
  }

  private admit(limits: readonly { key: string; perMinute: number }[], take: boolean): Admission {
    const now = this.clock.now().getTime();
    if (++this.checks % SWEEP_EVERY === 0) this.sweep(now);
    const buckets = limits.map(({ key, perMinute }) => this.refilled(key, perMinute, now));
    let retryAfterMs = 0;
    for (const bucket of buckets) {
      if (bucket.tokens < 1) {
        retryAfterMs = Math.max(retryAfterMs, Math.ceil((1 - bucket.tokens) / (bucket.perMinute / 60_000)));
      }
    }
    if (retryAfterMs > 0) return { allowed: false, retryAfterMs };
    if (take) for (const bucket of buckets) bucket.tokens -= 1;
    return { allowed: true };
  }

  /** `key`'s bucket, brought up to `now`. */
  private refilled(key: string, perMinute: number, now: number): Bucket {
    let bucket = this.buckets.get(key);
    if (!bucket) {
      bucket = { tokens: perMinute, at: now, perMinute };
      this.buckets.set(key, bucket);
    }
    if (bucket.perMinute !== perMinute) {
      // The limit changed (a new server default): keep the tokens, within the new size.
      bucket.perMinute = perMinute;
      bucket.tokens = Math.min(bucket.tokens, perMinute);
    }
    const perMs = perMinute / 60_000;
    bucket.tokens = Math.min(perMinute, bucket.tokens + Math.max(0, now - bucket.at) * perMs);
    bucket.at = Math.max(bucket.at, now);
    return bucket;
  }

  /** Forgets buckets that have refilled completely: they behave exactly like new ones. */
  private sweep(now: number): void {
    for (const [key, b] of this.buckets) {
      if (b.tokens + (now - b.at) * (b.perMinute / 60_000) >= b.perMinute) this.buckets.delete(key);
    }
  }

  /** Number of buckets held (for tests of the sweep). */
  get size(): number {
    return this.buckets.size;
  }
}
