/**
 * AccountService.authenticate in process, over a real PostgreSQL: with no key cache (every
 * call reads its key, as before), and with the key cache (a known key makes no query), one
 * call at a time and 16 at once; an unknown key (never cached: one query). Then how long a
 * revocation made by another "replica" (its own service and connection pool) takes to reach a
 * replica holding the key: from the revoking call's return to the first refused call here.
 *
 *   node --import tsx bench/auth.ts     (about 1 min on 2 cores)
 */
import { randomBytes } from "node:crypto";
import os from "node:os";
import postgres from "postgres";
import { AccountService, type AccountDeps } from "../src/accounts/account-service.js";
import { KeyCache } from "../src/accounts/key-cache.js";
import { systemClock } from "../src/clock.js";
import { createLogger } from "../src/logging/logger.js";
import { AccountsRepository } from "../src/store/accounts-repository.js";
import type { Sql } from "../src/store/db.js";
import { transaction } from "../src/store/images-repository.js";
import { LedgerRepository } from "../src/store/ledger-repository.js";
import { migrate } from "../src/store/migrate.js";
import {
  createTempDatabase,
  environmentMarkdown,
  markdownTable,
  percentile,
  round,
  runBenchmark,
  runEnvironment,
  runPool,
  startTimer,
  summarise,
  writeResults,
  type LatencySummary,
} from "./lib.js";

/** Distinct keys the calls cycle through. */
const KEYS = 200;
/** Calls per series. */
const CALLS = 20_000;
const CONCURRENCY = 16;
/** Revocations timed across replicas. */
const REVOCATIONS = 50;

const logger = createLogger("silent");

function service(sql: Sql, keyCache?: KeyCache): AccountService {
  const deps: AccountDeps = {
    accounts: new AccountsRepository(sql),
    ledger: new LedgerRepository(sql),
    transaction: (fn) => transaction(sql, fn),
    clock: systemClock,
    logger,
    defaultRateLimit: 60,
    maxKeysPerAccount: 1000,
    keyCache,
  };
  return new AccountService(deps);
}

function pool(url: string): Sql {
  return postgres(url, { max: 10, onnotice: () => {}, types: { bigint: postgres.BigInt } }) as unknown as Sql;
}

async function series(secrets: string[], authenticate: (s: string) => Promise<unknown>, concurrency: number) {
  // Warm-up: JIT, connections, and (for the cached service) every key once.
  await runPool(secrets.length * 2, concurrency, (i) => authenticate(secrets[i % secrets.length]).then(() => {}));
  const { latenciesMs, wallMs } = await runPool(CALLS, concurrency, (i) =>
    authenticate(secrets[i % secrets.length]).then(() => {}),
  );
  return {
    latency: summarise(latenciesMs),
    // A cached call takes microseconds, below summarise's 0.01 ms rounding.
    p50_us: round(percentile(latenciesMs, 50) * 1000, 1),
    p99_us: round(percentile(latenciesMs, 99) * 1000, 1),
    calls_per_s: Math.round((CALLS / wallMs) * 1000),
  };
}

await runBenchmark("auth", async (cleanup) => {
  const env = await runEnvironment();
  const loadAtStart = os.loadavg()[0];
  const db = await createTempDatabase();
  cleanup.add(`drop database ${db.name}`, () => db.drop());
  const sql = pool(db.url);
  cleanup.add("close pool", () => sql.end({ timeout: 5 }));
  const other = pool(db.url);
  cleanup.add("close second pool", () => other.end({ timeout: 5 }));
  await migrate(sql, logger);

  const uncached = service(sql);
  const cache = new KeyCache({ ttlMs: 30_000, maxEntries: 10_000, clock: systemClock });
  const cached = service(sql, cache);
  const stopFollowing = await cached.followKeyChanges();
  cleanup.add("stop following", stopFollowing);
  const elsewhere = service(other);

  const account = await uncached.createKeyFor({ email: "bench@example.com", admin: false, name: "k0" });
  const secrets = [account.secret];
  for (let i = 1; i < KEYS; i++) {
    secrets.push((await uncached.createKeyFor({ accountId: account.account.id, admin: false, name: `k${i}` })).secret);
  }
  const unknown = Array.from({ length: KEYS }, () => `glk_${randomBytes(30).toString("base64url")}`);
  const refused = (s: string) => uncached.authenticate(s).then(
    () => {
      throw new Error("an unknown key authenticated");
    },
    () => undefined,
  );

  const results: Record<string, { latency: LatencySummary; p50_us: number; p99_us: number; calls_per_s: number }> = {};
  for (const c of [1, CONCURRENCY]) {
    results[`uncached_c${c}`] = await series(secrets, (s) => uncached.authenticate(s), c);
    results[`cached_c${c}`] = await series(secrets, (s) => cached.authenticate(s), c);
    results[`unknown_key_c${c}`] = await series(unknown, refused, c);
  }

  // Revocation reaching a replica that holds the key, through NOTIFY on another connection.
  const propagationMs: number[] = [];
  const caller = { accountId: account.account.id, isAdmin: false };
  for (let i = 0; i < REVOCATIONS; i++) {
    const key = await cached.createApiKey(caller, `revoked-${i}`, undefined);
    await cached.authenticate(key.secret);
    await elsewhere.revokeApiKey(caller, key.key.id);
    const elapsed = startTimer();
    for (;;) {
      const still = await cached.authenticate(key.secret).then(
        () => true,
        () => false,
      );
      if (!still) break;
      if (elapsed() > 10_000) throw new Error("a revocation did not arrive within 10 s");
      await new Promise((resolve) => setImmediate(resolve));
    }
    propagationMs.push(elapsed());
  }
  const propagation = summarise(propagationMs);

  const json = {
    env,
    load_average_1m_at_start: round(loadAtStart, 1),
    keys: KEYS,
    calls_per_series: CALLS,
    cache: { ttl_s: 30, max_entries: 10_000, entries_after: cache.size },
    series: results,
    revocation_to_other_replica: propagation,
  };
  const rows = Object.entries(results).map(([name, r]) => [
    name,
    r.p50_us,
    r.p99_us,
    r.latency.max_ms,
    r.calls_per_s,
  ]);
  const markdown = [
    "# AccountService.authenticate, in process",
    "",
    environmentMarkdown(env),
    "",
    `${KEYS} keys cycled, ${CALLS} calls per series after a warm-up; c = calls in flight. Load average at the start: ${loadAtStart.toFixed(1)} on ${os.cpus().length} cores.`,
    "",
    markdownTable(["series", "p50 µs", "p99 µs", "max ms", "calls/s"], rows),
    "",
    `Revocation on another service and pool until refused here (${REVOCATIONS} keys): p50 ${propagation.p50_ms} ms, p99 ${propagation.p99_ms} ms, max ${propagation.max_ms} ms.`,
  ].join("\n");
  for (const file of await writeResults("auth", json, markdown)) console.log(`wrote ${file}`);
  console.log(markdown);
});
