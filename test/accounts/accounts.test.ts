import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { ClientError, createClient, Metadata, Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/clock.js";
import {
  AccountServiceDefinition,
  TransactionType,
} from "../../src/gen/glimpse/account/v1/account_service.js";
import { Visibility } from "../../src/gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { HealthCheckResponse_ServingStatus, HealthDefinition } from "../../src/gen/grpc/health/v1/health.js";
import { DEFAULT_ACCOUNT_ID } from "../../src/server/middleware/caller.js";
import { decodeStatusDetails } from "../../src/server/status-details.js";
import { startTestApp, testSecret, withKey, type TestApp } from "../helpers/app.js";
import { createTestDatabase } from "../helpers/database.js";
import { distinctPng } from "../helpers/images.js";

const run = promisify(execFile);

/** The error of a call that must fail, with its status details. */
async function failed(call: (opts: { onTrailer: (t: Metadata) => void }) => Promise<unknown>) {
  let trailer: Metadata | undefined;
  const err = await call({ onTrailer: (t) => (trailer = t) }).then(
    () => undefined,
    (e) => e,
  );
  expect(err).toBeInstanceOf(ClientError);
  const raw = trailer?.get("grpc-status-details-bin") as unknown as Uint8Array | undefined;
  const details = raw ? decodeStatusDetails(raw) : { violations: [], retryAfterMs: undefined };
  return { code: (err as ClientError).code, message: (err as ClientError).details, ...details };
}

describe("API keys", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  it("refuses calls without a key or with an unknown one; health stays open", async () => {
    const anonymous = createClient(ImageServiceDefinition, t.channel);
    const none = await failed((o) => anonymous.listImages({}, o));
    expect(none.code).toBe(Status.UNAUTHENTICATED);
    expect(none.message).toContain("needs an API key");
    const unknown = await failed((o) => anonymous.listImages({}, { ...o, ...withKey(testSecret()) }));
    expect(unknown.code).toBe(Status.UNAUTHENTICATED);
    const malformed = await failed((o) =>
      anonymous.listImages({}, { ...o, metadata: Metadata({ authorization: `Basic ${t.adminKey}` }) }),
    );
    expect(malformed.code).toBe(Status.UNAUTHENTICATED);
    expect(malformed.message).toContain("Bearer");
    const health = createClient(HealthDefinition, t.channel);
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });

  it("accepts the key as a Bearer token or as x-api-key", async () => {
    const anonymous = createClient(AccountServiceDefinition, t.channel);
    const bearer = await anonymous.getAccount({}, withKey(t.adminKey));
    const header = await anonymous.getAccount({}, { metadata: Metadata({ "x-api-key": t.adminKey }) });
    expect(bearer.account!.id).toBe(DEFAULT_ACCOUNT_ID);
    expect(header.account!.id).toBe(DEFAULT_ACCOUNT_ID);
    expect(bearer.account!.isAdmin).toBe(true);
  });

  it("shows a new key's secret once and stores only its hash and prefix", async () => {
    const { key } = await t.newAccount();
    const accounts = t.client(AccountServiceDefinition, key);
    const created = await accounts.createApiKey({ name: "laptop" });
    const secret = created.secret;
    expect(secret).toMatch(/^glk_[0-9A-Za-z]{40,}$/);
    expect(created.apiKey).toMatchObject({ name: "laptop", prefix: secret.slice(0, 12), rateLimitPerMinute: 100_000 });
    expect((await t.client(AccountServiceDefinition, secret).getAccount({})).account!.id).toBe(created.apiKey!.accountId);

    const listed = await accounts.listApiKeys({});
    expect(listed.apiKeys.map((k) => k.name).sort()).toEqual(["default", "laptop"]);
    expect(JSON.stringify(listed)).not.toContain(secret);
    const rows = await t.app.sql`select * from api_keys where id = ${created.apiKey!.id}`;
    expect(JSON.stringify(rows, (_, v) => (typeof v === "bigint" ? String(v) : v))).not.toContain(secret.slice(12));
    expect(rows[0].prefix).toBe(secret.slice(0, 12));
  });

  it("records when a key was last used", async () => {
    const { key } = await t.newAccount();
    const accounts = t.client(AccountServiceDefinition, key);
    // The first call marks the key used, in the background: the call does not wait for it.
    await expect
      .poll(async () => (await accounts.listApiKeys({})).apiKeys[0].lastUsedAt, { timeout: 5000, interval: 20 })
      .toBeInstanceOf(Date);
  });

  it("revokes a key from the next call on, also the key making the call, and idempotently", async () => {
    const { key } = await t.newAccount();
    const accounts = t.client(AccountServiceDefinition, key);
    const spare = await accounts.createApiKey({ name: "spare" });
    const spareClient = t.client(AccountServiceDefinition, spare.secret);
    await spareClient.getAccount({});
    const revoked = await accounts.revokeApiKey({ keyId: spare.apiKey!.id });
    expect(revoked.apiKey!.revokedAt).toBeInstanceOf(Date);
    const refused = await failed((o) => spareClient.getAccount({}, o));
    expect(refused.code).toBe(Status.UNAUTHENTICATED);
    expect(refused.message).toContain("revoked");
    const again = await accounts.revokeApiKey({ keyId: spare.apiKey!.id });
    expect(again.apiKey!.revokedAt).toEqual(revoked.apiKey!.revokedAt);

    expect((await accounts.listApiKeys({})).apiKeys.map((k) => k.name)).toEqual(["default"]);
    expect((await accounts.listApiKeys({ showRevoked: true })).apiKeys.map((k) => k.name)).toEqual(["spare", "default"]);

    // Revoking the key that makes the call: the call succeeds, the next one does not.
    const [own] = (await accounts.listApiKeys({})).apiKeys;
    await accounts.revokeApiKey({ keyId: own.id });
    expect((await failed((o) => accounts.getAccount({}, o))).code).toBe(Status.UNAUTHENTICATED);
  });

  it("answers NOT_FOUND for another account's key and INVALID_ARGUMENT for a malformed id", async () => {
    const mine = await t.newAccount();
    const theirs = await t.newAccount();
    const [theirKey] = (await t.client(AccountServiceDefinition, theirs.key).listApiKeys({})).apiKeys;
    const accounts = t.client(AccountServiceDefinition, mine.key);
    expect((await failed((o) => accounts.revokeApiKey({ keyId: theirKey.id }, o))).code).toBe(Status.NOT_FOUND);
    const bad = await failed((o) => accounts.revokeApiKey({ keyId: "key-1" }, o));
    expect(bad.code).toBe(Status.INVALID_ARGUMENT);
    expect(bad.violations.map((v) => v.field)).toEqual(["key_id"]);
    await t.client(AccountServiceDefinition, theirs.key).getAccount({});
  });

  it("pages keys newest first", async () => {
    const { key } = await t.newAccount();
    const accounts = t.client(AccountServiceDefinition, key);
    for (const name of ["k1", "k2", "k3", "k4"]) await accounts.createApiKey({ name });
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await accounts.listApiKeys({ pageSize: 2, pageToken });
      seen.push(...page.apiKeys.map((k) => k.name));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(seen).toEqual(["k4", "k3", "k2", "k1", "default"]);
    const bad = await failed((o) => accounts.listApiKeys({ pageSize: 101, pageToken: "nonsense" }, o));
    expect(bad.violations.map((v) => v.field).sort()).toEqual(["page_size", "page_token"]);
  });

  it("validates CreateApiKey and keeps limits above the default for admins", async () => {
    const { key } = await t.newAccount();
    const accounts = t.client(AccountServiceDefinition, key);
    const bad = await failed((o) => accounts.createApiKey({ name: " ", rateLimitPerMinute: 0 }, o));
    expect(bad.code).toBe(Status.INVALID_ARGUMENT);
    expect(bad.violations.map((v) => v.field).sort()).toEqual(["name", "rate_limit_per_minute"]);
    const tooLong = await failed((o) => accounts.createApiKey({ name: "x".repeat(101) }, o));
    expect(tooLong.violations.map((v) => v.field)).toEqual(["name"]);
    expect((await accounts.createApiKey({ name: "slow", rateLimitPerMinute: 10 })).apiKey!.rateLimitPerMinute).toBe(10);
  });
});

describe("accounts and credits", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  it("keeps admin RPCs to admin keys", async () => {
    const user = await t.newAccount();
    const accounts = t.client(AccountServiceDefinition, user.key);
    const create = await failed((o) => accounts.createAccount({ email: "x@example.com" } as never, o));
    expect(create.code).toBe(Status.PERMISSION_DENIED);
    const grant = await failed((o) => accounts.grantCredits({ accountId: user.id, amount: "5" } as never, o));
    expect(grant.code).toBe(Status.PERMISSION_DENIED);
    expect((await accounts.getAccount({})).account!.creditBalance).toBe("0");
  });

  it("lets admins read any account and others only their own", async () => {
    const a = await t.newAccount();
    const b = await t.newAccount();
    const asA = t.client(AccountServiceDefinition, a.key);
    expect((await asA.getAccount({ accountId: a.id })).account!.id).toBe(a.id);
    expect((await failed((o) => asA.getAccount({ accountId: b.id }, o))).code).toBe(Status.PERMISSION_DENIED);
    const admin = t.client(AccountServiceDefinition);
    expect((await admin.getAccount({ accountId: b.id })).account!.id).toBe(b.id);
    expect((await failed((o) => admin.getAccount({ accountId: randomUUID() }, o))).code).toBe(Status.NOT_FOUND);
    const bad = await failed((o) => admin.getAccount({ accountId: "nope" }, o));
    expect(bad.violations.map((v) => v.field)).toEqual(["account_id"]);
  });

  it("creates accounts with starting credits and a first key, refusing bad and taken fields", async () => {
    const admin = t.client(AccountServiceDefinition);
    const created = await admin.createAccount({
      email: "Ada@Example.com",
      username: "ada.l",
      isAdmin: false,
      initialCredits: "25",
      createApiKey: true,
    });
    expect(created.account).toMatchObject({ email: "Ada@Example.com", username: "ada.l", creditBalance: "25", reservedCredits: "0" });
    expect(created.apiKey!.name).toBe("default");
    const usage = await t.client(AccountServiceDefinition, created.apiKeySecret).listUsage({});
    expect(usage.transactions).toHaveLength(1);
    expect(usage.transactions[0]).toMatchObject({
      amount: "25",
      type: TransactionType.TRANSACTION_TYPE_GRANT,
      description: "Initial credits",
      balanceAfter: "25",
    });

    const bad = await failed((o) =>
      admin.createAccount({ email: "no-at-sign", username: "bad name!", isAdmin: false, initialCredits: "-1", createApiKey: false }, o),
    );
    expect(bad.code).toBe(Status.INVALID_ARGUMENT);
    expect(bad.violations.map((v) => v.field).sort()).toEqual(["email", "initial_credits", "username"]);
    const takenEmail = await failed((o) =>
      admin.createAccount({ email: "ada@example.COM", username: "", isAdmin: false, initialCredits: "0", createApiKey: false }, o),
    );
    expect(takenEmail.code).toBe(Status.ALREADY_EXISTS);
    expect(takenEmail.message).toContain("email");
    const takenName = await failed((o) =>
      admin.createAccount({ email: "other@example.com", username: "ADA.L", isAdmin: false, initialCredits: "0", createApiKey: false }, o),
    );
    expect(takenName.code).toBe(Status.ALREADY_EXISTS);
    expect(takenName.message).toContain("username");
  });

  it("grants credits once per request id, also when the retries race, and lists usage newest first", async () => {
    const user = await t.newAccount();
    const admin = t.client(AccountServiceDefinition);
    const requestId = randomUUID();
    const racing = await Promise.all(
      Array.from({ length: 5 }, () => admin.grantCredits({ accountId: user.id, amount: "40", description: "", requestId })),
    );
    expect(new Set(racing.map((r) => r.transaction!.id)).size).toBe(1);
    expect(racing[0].transaction).toMatchObject({ amount: "40", description: "Credit grant", referenceId: requestId, balanceAfter: "40" });
    const second = await admin.grantCredits({ accountId: user.id, amount: "2", description: "bonus", requestId: "" });
    expect(second.account!.creditBalance).toBe("42");
    expect(second.transaction!.balanceAfter).toBe("42");

    const usage = await t.client(AccountServiceDefinition, user.key).listUsage({});
    expect(usage).toMatchObject({ total: "2", limit: 20, offset: 0 });
    expect(usage.transactions.map((x) => x.amount)).toEqual(["2", "40"]);
    const page = await t.client(AccountServiceDefinition, user.key).listUsage({ limit: 1, offset: 1 });
    expect(page.transactions.map((x) => x.amount)).toEqual(["40"]);
    const bad = await failed((o) => t.client(AccountServiceDefinition, user.key).listUsage({ limit: 101, offset: -1 }, o));
    expect(bad.violations.map((v) => v.field).sort()).toEqual(["limit", "offset"]);

    const invalid = await failed((o) =>
      admin.grantCredits({ accountId: "x", amount: "0", description: "d".repeat(201), requestId: "r" }, o),
    );
    expect(invalid.violations.map((v) => v.field).sort()).toEqual(["account_id", "amount", "description", "request_id"]);
    const missing = await failed((o) => admin.grantCredits({ accountId: randomUUID(), amount: "1", description: "", requestId: "" }, o));
    expect(missing.code).toBe(Status.NOT_FOUND);
  });
});

describe("rate limits", () => {
  let t: TestApp;
  const clock = new ManualClock(new Date("2026-06-15T12:00:00Z"));
  beforeAll(async () => {
    t = await startTestApp({ rateLimitPerMinute: 60 }, { clock });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("limits each key with a token bucket and says when to retry", async () => {
    const { key } = await t.newAccount();
    const accounts = t.client(AccountServiceDefinition, key);
    const slow = (await accounts.createApiKey({ name: "slow", rateLimitPerMinute: 3 })).secret;
    const slowClient = t.client(AccountServiceDefinition, slow);
    for (let i = 0; i < 3; i++) await slowClient.getAccount({});
    const limited = await failed((o) => slowClient.getAccount({}, o));
    expect(limited.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(limited.retryAfterMs).toBe(20_000);
    expect(limited.message).toContain("3 requests per minute");
    // Other keys, even of the same account, have their own buckets.
    await accounts.getAccount({});
    clock.advance(19_000);
    expect((await failed((o) => slowClient.getAccount({}, o))).retryAfterMs).toBe(1000);
    clock.advance(1000);
    await slowClient.getAccount({});
    expect((await failed((o) => slowClient.getAccount({}, o))).code).toBe(Status.RESOURCE_EXHAUSTED);
  });

  it("applies the server default to keys without their own limit, and only admins may exceed it", async () => {
    const { key } = await t.newAccount();
    const accounts = t.client(AccountServiceDefinition, key);
    for (let i = 0; i < 59; i++) await accounts.getAccount({});
    const listed = await accounts.listApiKeys({});
    expect(listed.apiKeys[0].rateLimitPerMinute).toBe(60);
    expect((await failed((o) => accounts.getAccount({}, o))).code).toBe(Status.RESOURCE_EXHAUSTED);
    clock.advance(60_000);
    const denied = await failed((o) => accounts.createApiKey({ name: "fast", rateLimitPerMinute: 61 }, o));
    expect(denied.code).toBe(Status.PERMISSION_DENIED);
    const fast = await t.client(AccountServiceDefinition).createApiKey({ name: "fast", rateLimitPerMinute: 1000 });
    expect(fast.apiKey!.rateLimitPerMinute).toBe(1000);
  });
});

describe("anonymous reads", () => {
  it("are refused by default, and when allowed see public images only and change nothing", async () => {
    const closed = await startTestApp();
    try {
      const anonymous = createClient(ImageServiceDefinition, closed.channel);
      expect((await failed((o) => anonymous.listImages({}, o))).code).toBe(Status.UNAUTHENTICATED);
    } finally {
      await closed.close();
    }

    const t = await startTestApp({ anonymousRead: true });
    try {
      const images = t.client(ImageServiceDefinition);
      const pub = (await images.uploadImage({ content: await distinctPng(1), visibility: Visibility.VISIBILITY_PUBLIC, index: false })).image!;
      const priv = (await images.uploadImage({ content: await distinctPng(2), index: false })).image!;
      const anonymous = createClient(ImageServiceDefinition, t.channel);
      expect((await anonymous.getImage({ id: pub.id })).image!.id).toBe(pub.id);
      expect((await anonymous.getImageContent({ id: pub.id })).contentType).toBe("image/png");
      expect((await failed((o) => anonymous.getImage({ id: priv.id }, o))).code).toBe(Status.NOT_FOUND);
      expect((await anonymous.listImages({})).images.map((i) => i.id)).toEqual([pub.id]);
      expect((await anonymous.listComments({ imageId: pub.id })).comments).toEqual([]);
      const upload = await failed((o) => anonymous.uploadImage({ content: Buffer.from("x") } as never, o));
      expect(upload.code).toBe(Status.UNAUTHENTICATED);
      const react = await failed((o) => anonymous.addReaction({ imageId: pub.id, kind: 1 }, o));
      expect(react.code).toBe(Status.UNAUTHENTICATED);
      // A key that is sent must be valid, even where no key is needed.
      const wrong = await failed((o) => anonymous.getImage({ id: pub.id }, { ...o, ...withKey(testSecret()) }));
      expect(wrong.code).toBe(Status.UNAUTHENTICATED);
    } finally {
      await t.close();
    }
  });
});

describe("bootstrap", () => {
  it("keeps GLIMPSE_ADMIN_KEY's key across restarts, and a revoked one revoked", async () => {
    const db = await createTestDatabase();
    const adminKey = testSecret();
    try {
      const first = await startTestApp({ adminKey }, {}, db);
      const created = await first.client(AccountServiceDefinition).createApiKey({ name: "extra" });
      await first.close();
      const second = await startTestApp({ adminKey }, {}, db);
      try {
        const keys = await second.client(AccountServiceDefinition).listApiKeys({});
        expect(keys.apiKeys.map((k) => k.name)).toEqual(["extra", "GLIMPSE_ADMIN_KEY"]);
        const [own] = keys.apiKeys.filter((k) => k.name === "GLIMPSE_ADMIN_KEY");
        await second.client(AccountServiceDefinition, created.secret).revokeApiKey({ keyId: own.id });
      } finally {
        await second.close();
      }
      const third = await startTestApp({ adminKey }, {}, db);
      try {
        const refused = await failed((o) => third.client(AccountServiceDefinition).getAccount({}, o));
        expect(refused.code).toBe(Status.UNAUTHENTICATED);
      } finally {
        await third.close();
      }
    } finally {
      await db.drop();
    }
  });

  it("glimpse keys create prints a key that works against the running server", async () => {
    const t = await startTestApp();
    try {
      const env = { ...process.env, DATABASE_URL: t.db.url, GLIMPSE_LOG_LEVEL: "silent" };
      const { stdout } = await run(
        process.execPath,
        ["--import", "tsx", "src/cli/main.ts", "keys", "create", "--email", "cli-user@example.com", "--name", "ci"],
        { env },
      );
      const secret = stdout.trim();
      expect(secret).toMatch(/^glk_[0-9A-Za-z]{40,}$/);
      const account = (await t.client(AccountServiceDefinition, secret).getAccount({})).account!;
      expect(account).toMatchObject({ email: "cli-user@example.com", isAdmin: false });

      const admin = await run(process.execPath, ["--import", "tsx", "src/cli/main.ts", "keys", "create", "--admin"], { env });
      const adminAccount = (await t.client(AccountServiceDefinition, admin.stdout.trim()).getAccount({})).account!;
      expect(adminAccount).toMatchObject({ id: DEFAULT_ACCOUNT_ID, isAdmin: true });

      const usage = await run(process.execPath, ["--import", "tsx", "src/cli/main.ts", "keys", "create"], { env }).catch((e) => e);
      expect(usage.code).toBe(2);
      expect(usage.stderr).toContain("--account or --email");
    } finally {
      await t.close();
    }
  });
});
