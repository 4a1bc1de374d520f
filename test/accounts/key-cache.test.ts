import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import postgres from "postgres";
import { ClientError, Status } from "nice-grpc";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AccountService } from "../../src/accounts/account-service.js";
import { KeyCache, type VerifiedKey } from "../../src/accounts/key-cache.js";
import { ManualClock } from "../../src/clock.js";
import { DomainError } from "../../src/errors.js";
import { AccountServiceDefinition } from "../../src/gen/glimpse/account/v1/account_service.js";
import { createLogger, type Logger } from "../../src/logging/logger.js";
import { AccountsRepository } from "../../src/store/accounts-repository.js";
import type { Sql } from "../../src/store/db.js";
import { transaction } from "../../src/store/images-repository.js";
import { LedgerRepository } from "../../src/store/ledger-repository.js";
import { migrate } from "../../src/store/migrate.js";
import { startTestApp, testSecret, type TestApp } from "../helpers/app.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";
import { testLogger } from "../helpers/log.js";

const run = promisify(execFile);

/** The status code a call fails with, or "OK". */
async function codeOf(call: Promise<unknown>): Promise<Status | "OK"> {
  return call.then(
    () => "OK" as const,
    (err) => {
      if (err instanceof ClientError) return err.code;
      throw err;
    },
  );
}

describe("API key cache across replicas", () => {
  let db: TestDatabase;
  let a: TestApp;
  let b: TestApp;
  beforeAll(async () => {
    db = await createTestDatabase();
    // A time-to-live far beyond the test: only the notification can make a replica forget.
    const adminKey = testSecret();
    a = await startTestApp({ keyCacheTtlS: 3600, adminKey }, {}, db);
    b = await startTestApp({ keyCacheTtlS: 3600, adminKey }, {}, db);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await db?.drop();
  });

  it("refuses a key revoked on one replica on the other as soon as the notification arrives", async () => {
    const user = await a.newAccount();
    const spare = await a.client(AccountServiceDefinition, user.key).createApiKey({ name: "spare" });
    const onA = a.client(AccountServiceDefinition, spare.secret);
    const onB = b.client(AccountServiceDefinition, spare.secret);
    // Both replicas now hold the key.
    await onA.getAccount({});
    await onB.getAccount({});
    await onB.getAccount({});

    await a.client(AccountServiceDefinition, user.key).revokeApiKey({ keyId: spare.apiKey!.id });
    const revokedAt = performance.now();
    expect(await codeOf(onA.getAccount({}))).toBe(Status.UNAUTHENTICATED);
    await expect
      .poll(() => codeOf(onB.getAccount({})), { timeout: 10_000, interval: 10 })
      .toBe(Status.UNAUTHENTICATED);
    const ms = performance.now() - revokedAt;
    // Generous: the notification takes milliseconds; the time-to-live is an hour.
    expect(ms).toBeLessThan(10_000);
    // The account's other key is untouched on both.
    expect(await codeOf(b.client(AccountServiceDefinition, user.key).getAccount({}))).toBe("OK");
  });

  it("gives a key admin rights on every replica once glimpse keys create --admin makes its account an admin", async () => {
    const user = await a.newAccount();
    const other = await a.newAccount();
    const onB = b.client(AccountServiceDefinition, user.key);
    const readOther = () => codeOf(onB.getAccount({ accountId: other.id }));
    expect(await readOther()).toBe(Status.PERMISSION_DENIED);
    expect(await codeOf(a.client(AccountServiceDefinition, user.key).getAccount({ accountId: other.id }))).toBe(
      Status.PERMISSION_DENIED,
    );

    const env = { ...process.env, DATABASE_URL: db.url, GLIMPSE_LOG_LEVEL: "silent" };
    await run(process.execPath, ["--import", "tsx", "src/cli/main.ts", "keys", "create", "--account", user.id, "--admin"], {
      env,
    });
    await expect.poll(readOther, { timeout: 10_000, interval: 10 }).toBe("OK");
    await expect
      .poll(() => codeOf(a.client(AccountServiceDefinition, user.key).getAccount({ accountId: other.id })), {
        timeout: 10_000,
        interval: 10,
      })
      .toBe("OK");
  });
});

/** The accounts repository, counting what authentication asks of the store. */
class CountingAccounts extends AccountsRepository {
  lookups = 0;
  touches = 0;
  failTouches = false;
  override async findKeyByPrefix(prefix: string) {
    this.lookups++;
    return super.findKeyByPrefix(prefix);
  }
  override async touchKey(id: string, now: Date, staleBefore: Date) {
    this.touches++;
    if (this.failTouches) throw new Error("the store is away");
    return super.touchKey(id, now, staleBefore);
  }
}

describe("AccountService.authenticate with a key cache", () => {
  const TTL_MS = 30_000;
  let db: TestDatabase;
  let sql: Sql;
  let clock: ManualClock;
  let accounts: CountingAccounts;
  let cache: KeyCache;
  let service: AccountService;
  let warnings: string[];
  let stopFollowing: () => Promise<void>;

  const logger = (): Logger => {
    const inner = testLogger();
    return { ...inner, warn: (msg, fields) => (warnings.push(msg), inner.warn(msg, fields)) };
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    // A name of its own, so the test can find (and cut) this client's listening connection.
    sql = postgres(db.url, {
      max: 4,
      connection: { application_name: "key-cache-test" },
      types: { bigint: postgres.BigInt },
      onnotice: () => {},
    }) as unknown as Sql;
    await migrate(sql, createLogger("silent"));
  });
  afterAll(async () => {
    await stopFollowing?.();
    await sql?.end({ timeout: 5 });
    await db?.drop();
  });
  beforeEach(async () => {
    await stopFollowing?.();
    warnings = [];
    clock = new ManualClock(new Date("2026-06-15T12:00:00Z"));
    accounts = new CountingAccounts(sql);
    cache = new KeyCache({ ttlMs: TTL_MS, maxEntries: 10_000, clock });
    service = new AccountService({
      accounts,
      ledger: new LedgerRepository(sql),
      transaction: (fn) => transaction(sql, fn),
      clock,
      logger: logger(),
      defaultRateLimit: 60,
      maxKeysPerAccount: 20,
      keyCache: cache,
    });
    stopFollowing = await service.followKeyChanges();
  });

  const newKey = async () => {
    const email = `cache-${randomBytes(4).toString("hex")}@example.com`;
    return service.createKeyFor({ email, admin: false, name: "test" });
  };

  it("makes no query for a cached key: 100 calls, one lookup", async () => {
    const { secret, key, account } = await newKey();
    for (let i = 0; i < 100; i++) {
      const who = await service.authenticate(secret);
      expect(who).toMatchObject({ keyId: key.id, caller: { accountId: account.id, isAdmin: false } });
    }
    expect(accounts.lookups).toBe(1);
    expect(cache.size).toBe(1);
  });

  it("keeps no unknown or revoked key: 10,000 unknown keys leave the cache empty", async () => {
    const unknown = Array.from({ length: 10_000 }, () => `glk_${randomBytes(30).toString("base64url")}`);
    for (let i = 0; i < unknown.length; i += 200) {
      const refused = await Promise.allSettled(unknown.slice(i, i + 200).map((s) => service.authenticate(s)));
      for (const r of refused) {
        expect(r.status).toBe("rejected");
        expect((r as PromiseRejectedResult).reason).toMatchObject({ code: "UNAUTHENTICATED" });
      }
    }
    expect(cache.size).toBe(0);
    expect(accounts.lookups).toBe(10_000);

    // A key of someone else's prefix with the wrong rest is not kept either.
    const { secret, key, account } = await newKey();
    const forged = secret.slice(0, 12) + "x".repeat(secret.length - 12);
    await expect(service.authenticate(forged)).rejects.toMatchObject({ code: "UNAUTHENTICATED" });
    expect(cache.size).toBe(0);
    await service.revokeApiKey({ accountId: account.id, isAdmin: false }, key.id);
    await expect(service.authenticate(secret)).rejects.toMatchObject({ code: "UNAUTHENTICATED" });
    await expect(service.authenticate(secret)).rejects.toMatchObject({ code: "UNAUTHENTICATED" });
    expect(cache.size).toBe(0);
  });

  it("reads the key again once its time-to-live passes, so a change made behind glimpse's back lasts at most that long", async () => {
    const { secret, key } = await newKey();
    await service.authenticate(secret);
    clock.advance(TTL_MS - 1);
    await service.authenticate(secret);
    expect(accounts.lookups).toBe(1);
    clock.advance(1);
    await service.authenticate(secret);
    expect(accounts.lookups).toBe(2);

    // Revoked in SQL, without the notification: trusted until the entry expires, then refused.
    await sql`update api_keys set revoked_at = now() where id = ${key.id}`;
    await service.authenticate(secret);
    clock.advance(TTL_MS);
    await expect(service.authenticate(secret)).rejects.toThrow(/revoked/);
    expect(accounts.lookups).toBe(3);
  });

  it("refuses a key revoked here from the very next call, and one revoked elsewhere once notified", async () => {
    const first = await newKey();
    await service.authenticate(first.secret);
    await service.revokeApiKey({ accountId: first.account.id, isAdmin: false }, first.key.id);
    await expect(service.authenticate(first.secret)).rejects.toThrow(/revoked/);

    // Another replica: its own service and cache over the same database.
    const second = await newKey();
    await service.authenticate(second.secret);
    const elsewhere = new AccountService({
      accounts: new AccountsRepository(sql),
      ledger: new LedgerRepository(sql),
      transaction: (fn) => transaction(sql, fn),
      clock,
      logger: testLogger(),
      defaultRateLimit: 60,
      maxKeysPerAccount: 20,
    });
    await elsewhere.revokeApiKey({ accountId: second.account.id, isAdmin: false }, second.key.id);
    await expect.poll(() => cache.size, { timeout: 10_000, interval: 5 }).toBe(0);
    await expect(service.authenticate(second.secret)).rejects.toThrow(/revoked/);
  });

  it("takes an account's new admin flag from the notification", async () => {
    const { secret, account } = await newKey();
    expect((await service.authenticate(secret)).caller.isAdmin).toBe(false);
    await accounts.setAdmin(account.id, true);
    await expect.poll(() => cache.size, { timeout: 10_000, interval: 5 }).toBe(0);
    expect((await service.authenticate(secret)).caller.isAdmin).toBe(true);
    expect(accounts.lookups).toBe(2);
  });

  it("forgets everything when the listening connection comes back, since notifications may have been lost", async () => {
    const { secret, account } = await newKey();
    await service.authenticate(secret);
    expect(cache.size).toBe(1);
    const cut = await sql`
      select pg_terminate_backend(pid) from pg_stat_activity
      where datname = current_database() and application_name = 'key-cache-test' and query ilike 'listen%'`;
    expect(cut.length).toBe(1);
    await expect.poll(() => cache.size, { timeout: 10_000, interval: 10 }).toBe(0);
    await service.authenticate(secret);
    expect(accounts.lookups).toBe(2);
    expect(cache.size).toBe(1);
    // Listening again: notifications arrive as before.
    await accounts.setAdmin(account.id, true);
    await expect.poll(() => cache.size, { timeout: 10_000, interval: 5 }).toBe(0);
  });

  it("writes a key's last use at most once a minute, without waiting for it, and only logs a failure", async () => {
    const { secret, key, account } = await newKey();
    const stamped = async () => (await service.listApiKeys({ accountId: account.id, isAdmin: false }, 0, "", false)).keys[0];
    const landed = () =>
      expect.poll(async () => (await stamped()).lastUsedAt?.getTime(), { timeout: 5000, interval: 10 }).toBe(clock.now().getTime());
    await service.authenticate(secret);
    expect(accounts.touches).toBe(1);
    await landed();
    expect((await stamped()).id).toBe(key.id);
    for (let i = 0; i < 10; i++) await service.authenticate(secret);
    // Past the time-to-live: read again from the store, whose mark is 59 s old.
    clock.advance(59_000);
    await service.authenticate(secret);
    expect(accounts.touches).toBe(1);
    clock.advance(1_001);
    await service.authenticate(secret);
    expect(accounts.touches).toBe(2);
    await landed();

    accounts.failTouches = true;
    clock.advance(60_000);
    await service.authenticate(secret);
    expect(accounts.touches).toBe(3);
    await expect.poll(() => warnings, { timeout: 5000, interval: 5 }).toContain("recording an API key's last use failed");
  });

  it("is not fooled by an unknown secret that shares a cached key's prefix", async () => {
    const { secret } = await newKey();
    await service.authenticate(secret);
    const sibling = secret.slice(0, -1) + (secret.endsWith("a") ? "b" : "a");
    await expect(service.authenticate(sibling)).rejects.toBeInstanceOf(DomainError);
    expect(cache.size).toBe(1);
  });
});

describe("KeyCache", () => {
  const key = (n: number): VerifiedKey => ({
    keyId: `k${n}`,
    accountId: `a${n % 2}`,
    prefix: `glk_${n}`,
    isAdmin: false,
    rateLimitPerMinute: null,
  });

  it("holds at most its bound, dropping the least recently used", () => {
    const cache = new KeyCache({ ttlMs: 1000, maxEntries: 3, clock: new ManualClock() });
    for (let n = 1; n <= 3; n++) cache.set(`h${n}`, key(n), null, cache.epoch());
    expect(cache.get("h1")?.keyId).toBe("k1");
    cache.set("h4", key(4), null, cache.epoch());
    expect(cache.size).toBe(3);
    expect(cache.get("h2")).toBeUndefined();
    expect(cache.get("h1")?.keyId).toBe("k1");
    for (let n = 5; n < 10_000; n++) cache.set(`h${n}`, key(n), null, cache.epoch());
    expect(cache.size).toBe(3);
  });

  it("does not keep a read that an invalidation overtook", () => {
    const cache = new KeyCache({ ttlMs: 1000, maxEntries: 10, clock: new ManualClock() });
    const epoch = cache.epoch();
    cache.forgetKey("k1");
    cache.set("h1", key(1), null, epoch);
    expect(cache.size).toBe(0);
  });

  it("forgets by key, by account, or everything; keeps nothing with a time-to-live of 0", () => {
    const cache = new KeyCache({ ttlMs: 1000, maxEntries: 10, clock: new ManualClock() });
    for (let n = 1; n <= 4; n++) cache.set(`h${n}`, key(n), null, cache.epoch());
    cache.forgetKey("k1");
    expect(cache.size).toBe(3);
    cache.forgetAccount("a0");
    expect(cache.size).toBe(1);
    expect(cache.get("h3")?.keyId).toBe("k3");
    cache.clear();
    expect(cache.size).toBe(0);
    const off = new KeyCache({ ttlMs: 0, maxEntries: 10, clock: new ManualClock() });
    off.set("h1", key(1), null, off.epoch());
    expect(off.size).toBe(0);
  });
});
