/**
 * Rate-limit buckets in this process against buckets in Redis (GLIMPSE_REDIS_URL): the cost of
 * one call's take (a key's and its account's buckets), one at a time and 64 at once, measured
 * side by side in one run (rounds alternate between the two). Needs Redis at REDIS_URL
 * (default redis://127.0.0.1:6379).
 *
 *   npm run bench:rate-limit
 */
import { randomBytes } from "node:crypto";
import os from "node:os";
import { RedisRateLimiter } from "../src/accounts/redis-buckets.js";
import { RateLimiter, type TokenBuckets } from "../src/accounts/token-bucket.js";
import { systemClock } from "../src/clock.js";
import { createLogger } from "../src/logging/logger.js";
import { environmentMarkdown, markdownTable, percentile, round, runBenchmark, runEnvironment, startTimer, writeResults } from "./lib.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const ROUNDS = 6;
const SEQUENTIAL_TAKES = 2000;
const CONCURRENT_TAKES = 20_000;
const CONCURRENCY = 64;
/** Keys spread over this many accounts, with limits high enough that every take is admitted. */
const KEYS = 1000;

const limitsOf = (i: number) => [
  { key: `key ${i % KEYS}`, perMinute: 1_000_000_000 },
  { key: `account ${i % 100}`, perMinute: 1_000_000_000 },
];

async function sequential(buckets: TokenBuckets): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < SEQUENTIAL_TAKES; i++) {
    const elapsed = startTimer();
    await buckets.takeAll(limitsOf(i));
    samples.push(elapsed());
  }
  return samples;
}

async function concurrent(buckets: TokenBuckets): Promise<number> {
  const elapsed = startTimer();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < CONCURRENT_TAKES) await buckets.takeAll(limitsOf(next++));
    }),
  );
  return CONCURRENT_TAKES / (elapsed() / 1000);
}

await runBenchmark("rate-limit", async (cleanup) => {
  const env = await runEnvironment();
  const loadBefore = os.loadavg().map((x) => round(x, 2));
  const redis = new RedisRateLimiter({
    url: REDIS_URL,
    prefix: `glimpse:bench:${randomBytes(4).toString("hex")}:`,
    fail: "closed", // a bench against a Redis that does not answer should fail, not measure nothing
    logger: createLogger("warn"),
  });
  cleanup.add("redis connection", () => redis.close());
  const stores: [string, TokenBuckets][] = [
    ["in process", new RateLimiter(systemClock)],
    ["Redis (one Lua script per take)", redis],
  ];
  const latency = new Map<string, number[]>(stores.map(([name]) => [name, []]));
  const throughput = new Map<string, number[]>(stores.map(([name]) => [name, []]));
  await sequential(redis); // loads the script, warms the connection
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, buckets] of round % 2 === 0 ? stores : [...stores].reverse()) {
      latency.get(name)!.push(...(await sequential(buckets)));
      throughput.get(name)!.push(await concurrent(buckets));
    }
  }
  const rows = stores.map(([name]) => {
    const samples = latency.get(name)!;
    const t = throughput.get(name)!.sort((a, b) => a - b);
    return {
      name,
      p50_ms: round(percentile(samples, 50), 4),
      p99_ms: round(percentile(samples, 99), 4),
      takes_per_s_median: Math.round(t[Math.floor(t.length / 2)]),
    };
  });
  const loadAfter = os.loadavg().map((x) => round(x, 2));
  const markdown = [
    "# Rate-limit buckets: in process vs Redis",
    "",
    environmentMarkdown(env),
    `- Redis ${REDIS_URL} on the same machine; each take charges a key's and its account's bucket (${KEYS} keys, 100 accounts)`,
    `- load average (1, 5, 15 min) before ${loadBefore.join(" ")}, after ${loadAfter.join(" ")} (other work shared the 2 cores)`,
    `- ${ROUNDS} rounds alternating the two; per round ${SEQUENTIAL_TAKES} takes one at a time, then ${CONCURRENT_TAKES} takes ${CONCURRENCY} at once`,
    "",
    markdownTable(
      ["buckets", "take p50 ms", "take p99 ms", "takes/s, 64 at once (median round)"],
      rows.map((r) => [r.name, r.p50_ms, r.p99_ms, r.takes_per_s_median]),
    ),
  ].join("\n");
  console.log(markdown);
  const written = await writeResults("rate-limit", { env, loadBefore, loadAfter, rows }, markdown);
  console.log(`wrote ${written.join(", ")}`);
});
