import { Redis } from "ioredis";
import { DomainError } from "../errors.js";
import type { Logger } from "../logging/logger.js";
import type { Admission, BucketLimit, TokenBuckets } from "./token-bucket.js";

/**
 * One take (or peek) over several buckets, atomically: Redis runs a script alone, so two
 * replicas charging the same key cannot both spend its last token. Each bucket is a hash
 * {tokens, at}; time is Redis's own clock, so replicas with skewed clocks refill alike.
 * A bucket expires once it would be full again (a full bucket and no bucket are the same).
 *
 * KEYS: the buckets. ARGV[1]: "1" to take, "0" to peek; ARGV[1 + i]: KEYS[i]'s size per minute.
 * Returns 0 when admitted (tokens taken if asked), else the longest wait in milliseconds.
 */
const TAKE_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local take = ARGV[1] == '1'
local wait = 0
local state = {}
for i, key in ipairs(KEYS) do
  local per = tonumber(ARGV[i + 1])
  local rate = per / 60000
  local b = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(b[1])
  local at = tonumber(b[2])
  if tokens == nil or at == nil then
    tokens = per
    at = now
  end
  if tokens > per then tokens = per end
  if now > at then
    tokens = math.min(per, tokens + (now - at) * rate)
    at = now
  end
  state[i] = { tokens, at, per, rate }
  if tokens < 1 then
    local w = math.ceil((1 - tokens) / rate)
    if w > wait then wait = w end
  end
end
if wait == 0 and take then
  for i, key in ipairs(KEYS) do
    local s = state[i]
    local left = s[1] - 1
    redis.call('HSET', key, 'tokens', tostring(left), 'at', tostring(s[2]))
    redis.call('PEXPIRE', key, math.ceil((s[3] - left) / s[4]) + 1000)
  end
end
return wait
`;

/** What the Redis buckets need. */
export interface RedisBucketsOptions {
  /** `redis://` or `rediss://` URL. */
  url: string;
  /** Prepended to every bucket's name, so deployments (and tests) sharing a Redis stay apart. */
  prefix?: string;
  /** While Redis does not answer: admit every call (`open`) or refuse it UNAVAILABLE (`closed`). */
  fail: "open" | "closed";
  /** How long one take may wait for Redis before the call is decided without it, in milliseconds. */
  timeoutMs?: number;
  logger: Logger;
  /** Called for every call decided without Redis (a metrics counter, labelled by the fail mode). */
  unavailable?: (fail: "open" | "closed") => void;
}

interface TakeCommand {
  glimpseTakeTokens(numberOfKeys: number, ...args: (string | number)[]): Promise<number>;
}

/**
 * Token buckets in Redis, shared by every replica, so a key gets its limit however many
 * replicas serve it: same sizes and refill as the in-process {@link RateLimiter}, one Lua
 * script per take (EVALSHA, loaded once). A Redis that does not answer does not stop the
 * service: calls are admitted or refused by the fail mode, logged once per outage.
 */
export class RedisRateLimiter implements TokenBuckets {
  private readonly redis: Redis & TakeCommand;
  private readonly prefix: string;
  /** Whether the last take reached Redis; flips log once per outage, not once per call. */
  private answering = true;
  /** Settles at the first connection (or its timeout); takes before it wait for it. */
  private readonly firstConnection: Promise<void>;
  private connected = false;

  constructor(private readonly options: RedisBucketsOptions) {
    this.prefix = options.prefix ?? "glimpse:rate:";
    this.redis = new Redis(options.url, {
      // A call never queues behind a reconnect: without a connection it is decided at once.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: 2000,
      // Reconnects forever, backing off to 2 s; the fail mode answers meanwhile.
      retryStrategy: (times) => Math.min(times * 100, 2000),
    }) as Redis & TakeCommand;
    this.redis.defineCommand("glimpseTakeTokens", { lua: TAKE_SCRIPT });
    const timeoutMs = options.timeoutMs ?? 500;
    this.firstConnection = new Promise<void>((resolve) => {
      // Without a queue, a take sent before the first connection would fail at once: at
      // start, takes wait for it (a little), while later outages answer without waiting.
      const timer = setTimeout(resolve, Math.max(timeoutMs, 2000));
      timer.unref();
      const settle = () => {
        clearTimeout(timer);
        resolve();
      };
      // Ready, or a first attempt that failed (a refused connection: no use waiting).
      this.redis.once("ready", settle);
      this.redis.once("error", settle);
    }).then(() => {
      this.connected = true;
    });
    // Connection errors are reported through the takes that meet them (and logged once).
    this.redis.on("error", () => undefined);
  }

  takeAll(limits: readonly BucketLimit[]): Promise<Admission> {
    return this.run(limits, true);
  }

  wouldAdmit(limits: readonly BucketLimit[]): Promise<Admission> {
    return this.run(limits, false);
  }

  private async run(limits: readonly BucketLimit[], take: boolean): Promise<Admission> {
    let wait: number;
    if (!this.connected) await this.firstConnection;
    try {
      const reply = this.redis.glimpseTakeTokens(
        limits.length,
        ...limits.map((l) => this.prefix + l.key),
        take ? "1" : "0",
        ...limits.map((l) => l.perMinute),
      );
      wait = await answerWithin(reply, this.options.timeoutMs ?? 500);
    } catch (error) {
      return this.withoutRedis(error);
    }
    if (!this.answering) {
      this.answering = true;
      this.options.logger.info("Redis answers again; rate limits are shared once more");
    }
    return wait > 0 ? { allowed: false, retryAfterMs: wait } : { allowed: true };
  }

  private withoutRedis(error: unknown): Admission {
    const { fail, logger } = this.options;
    if (this.answering) {
      this.answering = false;
      logger.error(
        fail === "open"
          ? "Redis does not answer; calls are admitted without rate limits until it does"
          : "Redis does not answer; calls are refused UNAVAILABLE until it does",
        { error },
      );
    }
    this.options.unavailable?.(fail);
    if (fail === "open") return { allowed: true };
    throw new DomainError("UNAVAILABLE", "rate limits cannot be checked right now; retry shortly", { retryAfterMs: 1000 });
  }

  /** Closes the connection. */
  async close(): Promise<void> {
    this.redis.disconnect();
  }
}

/**
 * The reply, or an error once `ms` have passed without one. The timer's verdict waits one
 * turn of the event loop (setImmediate runs after pending I/O): when a busy process's event
 * loop stalls past the timeout, the timer and a reply that arrived meanwhile are handled in
 * the same turn, timers first, and a take that Redis answered (and that took its token) must
 * not be counted as an outage and admitted a second time by the fail mode.
 */
function answerWithin<T>(reply: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const settle = (done: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      done();
    };
    const timer = setTimeout(
      () => setImmediate(() => settle(() => reject(new Error(`Redis did not answer within ${ms} ms`)))),
      ms,
    );
    reply.then(
      (value) => settle(() => resolve(value)),
      (error: unknown) => settle(() => reject(error)),
    );
  });
}
