// A replica on a busy machine: its event loop stalls past the Redis take's timeout while
// Redis has answered. Found by the three-replicas test (8 calls admitted for a limit of 6
// while the machine was overloaded, each with "Redis does not answer ... Command timed out"
// in a replica's log): a reply that arrived during the stall must win over the timer.
import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { RedisRateLimiter } from "../../src/accounts/redis-buckets.js";
import { testLogger } from "../helpers/log.js";

const REDIS_URL = process.env.GLIMPSE_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

describe("Redis rate limits in a process whose event loop stalls", () => {
  const limiter = new RedisRateLimiter({
    url: REDIS_URL,
    prefix: `glimpse:test:${process.pid}:${randomBytes(4).toString("hex")}:`,
    fail: "open",
    timeoutMs: 100,
    logger: testLogger(),
    unavailable: () => void unanswered++,
  });
  let unanswered = 0;
  afterAll(() => limiter.close());

  it("uses Redis's answers that arrived while the loop was blocked past the timeout, admitting no call past the limit", async () => {
    const bucket = [{ key: "stalled", perMinute: 3 }];
    // Connected, and one token of three spent.
    expect(await limiter.takeAll(bucket)).toEqual({ allowed: true });
    const takes = Array.from({ length: 4 }, () => limiter.takeAll(bucket));
    // Block the loop three times the timeout: Redis answers meanwhile, the timers fall due too.
    const until = Date.now() + 300;
    while (Date.now() < until);
    const admitted = (await Promise.all(takes)).filter((a) => a.allowed).length;
    expect(unanswered).toBe(0);
    expect(admitted).toBe(2);
  });
});
