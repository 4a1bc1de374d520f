import { Status } from "nice-grpc-common";
import type { GlimpseError } from "./errors.js";

/** When and how often a failed call is tried again. */
export interface RetryPolicy {
  /** Attempts in all, the first included; 1 turns retries off. Default 5. */
  maxAttempts: number;
  /** Wait before the first retry when the server gave no RetryInfo, in milliseconds. Default 250. */
  initialBackoffMs: number;
  /** Longest wait between two attempts, RetryInfo included, in milliseconds. Default 30000. */
  maxBackoffMs: number;
  /** Growth of the wait from one retry to the next. Default 2. */
  multiplier: number;
  /** Status codes that are retried. Default UNAVAILABLE and RESOURCE_EXHAUSTED. */
  codes: readonly Status[];
}

/** The policy used when neither the client nor the call sets one. */
export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 5,
  initialBackoffMs: 250,
  maxBackoffMs: 30_000,
  multiplier: 2,
  codes: [Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED],
};

/** What a retry is about to do; passed to `onRetry`. */
export interface RetryEvent {
  /** The method's path, such as `/glimpse.image.v1.ImageService/UploadImage`. */
  path: string;
  /** The attempt that failed (1 for the first). */
  attempt: number;
  /** Its error. */
  error: GlimpseError;
  /** How long the client waits before the next attempt, in milliseconds. */
  delayMs: number;
}

/**
 * How long to wait before attempt `attempt + 1`, or undefined to give up: the server's
 * RetryInfo delay when it sent one (a rate limit knows when a token is back), otherwise an
 * exponential backoff with jitter; never a wait that ends past `deadline`.
 */
export function retryDelay(policy: RetryPolicy, error: GlimpseError, attempt: number, deadline: Date | undefined): number | undefined {
  if (attempt >= policy.maxAttempts || !policy.codes.includes(error.code)) return undefined;
  let delay: number;
  if (error.retryAfterMs !== undefined) {
    // A little over the server's delay, so the retry does not arrive a hair too early.
    delay = error.retryAfterMs + Math.floor(Math.random() * 50);
  } else {
    const base = policy.initialBackoffMs * policy.multiplier ** (attempt - 1);
    delay = base / 2 + Math.random() * (base / 2);
  }
  delay = Math.min(Math.ceil(delay), policy.maxBackoffMs);
  if (deadline && Date.now() + delay >= deadline.getTime()) return undefined;
  return delay;
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
