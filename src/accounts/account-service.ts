import type { Caller } from "../catalogue/types.js";
import { requestIdOf } from "../catalogue/validate.js";
import type { Clock } from "../clock.js";
import { DomainError, notFound, Violations } from "../errors.js";
import type { Logger } from "../logging/logger.js";
import type { AccountsRepository } from "../store/accounts-repository.js";
import type { Tx } from "../store/images-repository.js";
import type { LedgerRepository } from "../store/ledger-repository.js";
import { offsetPage } from "./paging.js";
import { emailOf, usernameOf, uuidField } from "./validate.js";
import type { KeyCache, VerifiedKey } from "./key-cache.js";
import { generateSecret, hashSecret, plausibleSecret, prefixOf, secretMatches } from "./keys.js";
import type { AccountRecord, ApiKeyRecord, KeyChange, LedgerEntry, UsagePage } from "./types.js";

/** The account that owns everything uploaded before keys existed; an admin (migration 0001). */
export const DEFAULT_ACCOUNT_ID = "00000000-0000-4000-8000-000000000001";

/** What the account service is built from. */
export interface AccountDeps {
  accounts: AccountsRepository;
  ledger: LedgerRepository;
  transaction: <T>(fn: (tx: Tx) => Promise<T>) => Promise<T>;
  clock: Clock;
  logger: Logger;
  /** Requests per minute of keys created without their own limit. */
  defaultRateLimit: number;
  /** Keys (not revoked) a non-admin account may hold at once. */
  maxKeysPerAccount: number;
  /**
   * Verified keys kept in memory, so a call with a known key makes no query; without it
   * every call reads its key from the store (the command line, which serves no calls).
   */
  keyCache?: KeyCache;
}

/** A key that authenticated a call. */
export interface Authenticated {
  caller: Caller;
  keyId: string;
  /** The key's requests per minute (its own, or the server default). */
  rateLimitPerMinute: number;
  /**
   * Requests per minute of the key's whole account, shared by all its keys: the server default,
   * or the key's own limit where an admin set it higher.
   */
  accountRateLimitPerMinute: number;
}

/** A new key with its secret, which exists only in this value. */
export interface NewKeyResult {
  key: ApiKeyRecord;
  secret: string;
}

/** CreateAccount's fields, unvalidated. */
export interface CreateAccountInput {
  email: string;
  username: string;
  isAdmin: boolean;
  initialCredits: bigint;
  createApiKey: boolean;
}

const KEY_NAME_MAX = 100;
const RATE_MAX = 100_000;
const CREDITS_MAX = 1_000_000_000n;
const DESCRIPTION_MAX = 200;
const KEY_PAGE_DEFAULT = 50;
const KEY_PAGE_MAX = 100;
/** A key's last use is written when the stored one is older than this. */
const LAST_USED_GRANULARITY_MS = 60_000;

/** PostgreSQL's unique_violation. */
const isUniqueViolation = (err: unknown) => (err as { code?: string } | null)?.code === "23505";

function requireAdmin(caller: Caller, what: string): void {
  if (!caller.isAdmin) throw new DomainError("PERMISSION_DENIED", `${what} needs an admin API key`);
}

/** Accounts, their API keys and their credits. */
export class AccountService {
  constructor(private readonly deps: AccountDeps) {}

  /**
   * The account a secret belongs to. A key verified recently is answered from memory (see
   * {@link KeyCache}); otherwise, and for unknown or revoked keys always, from the store. A
   * revocation made through any replica reaches this one with its notification (see
   * {@link followKeyChanges}), one made here at once. The key's last use is written at most
   * about once a minute, in the background.
   * @throws UNAUTHENTICATED for an unknown or revoked key.
   */
  async authenticate(secret: string): Promise<Authenticated> {
    const unknown = () => new DomainError("UNAUTHENTICATED", "unknown API key");
    if (!plausibleSecret(secret)) throw unknown();
    const cache = this.deps.keyCache;
    // Held by the secret's SHA-256, never the secret; a lookup's timing can only tell
    // something about the hash, which reveals nothing of the secret.
    const hash = hashSecret(secret).toString("base64");
    const now = this.deps.clock.now();
    let verified = cache?.get(hash);
    if (verified) {
      if (cache!.useIsDue(hash, now, LAST_USED_GRANULARITY_MS)) this.recordUse(verified.keyId, now);
    } else {
      const epoch = cache?.epoch() ?? 0;
      const key = await this.deps.accounts.findKeyByPrefix(prefixOf(secret));
      if (!key || !secretMatches(secret, key.secretHash)) throw unknown();
      if (key.revokedAt) throw new DomainError("UNAUTHENTICATED", `API key ${key.prefix}… was revoked`);
      verified = {
        keyId: key.id,
        accountId: key.accountId,
        prefix: key.prefix,
        isAdmin: key.isAdmin,
        rateLimitPerMinute: key.rateLimitPerMinute,
      };
      let lastUsedAt = key.lastUsedAt;
      if (!lastUsedAt || now.getTime() - lastUsedAt.getTime() >= LAST_USED_GRANULARITY_MS) {
        this.recordUse(key.id, now);
        lastUsedAt = now;
      }
      cache?.set(hash, verified, lastUsedAt, epoch);
    }
    return this.authenticated(verified);
  }

  private authenticated(key: VerifiedKey): Authenticated {
    const rate = key.rateLimitPerMinute ?? this.deps.defaultRateLimit;
    return {
      caller: { accountId: key.accountId, isAdmin: key.isAdmin },
      keyId: key.keyId,
      rateLimitPerMinute: rate,
      accountRateLimitPerMinute: Math.max(rate, this.deps.defaultRateLimit),
    };
  }

  /**
   * Writes a key's last use without holding up the call; a failure is only logged. Uses wait
   * in a map and are written one at a time, so a burst of calls from many keys is a short
   * queue of small updates beside the calls' own queries, not one more query per call.
   */
  private recordUse(keyId: string, now: Date): void {
    this.pendingUses.set(keyId, now);
    if (this.writingUses) return;
    this.writingUses = true;
    void (async () => {
      while (this.pendingUses.size > 0) {
        const [id, at] = this.pendingUses.entries().next().value as [string, Date];
        this.pendingUses.delete(id);
        const staleBefore = new Date(at.getTime() - LAST_USED_GRANULARITY_MS);
        await this.deps.accounts
          .touchKey(id, at, staleBefore)
          .catch((error) => this.deps.logger.warn("recording an API key's last use failed", { keyId: id, error }));
      }
      this.writingUses = false;
    })();
  }

  /** Key uses not yet written, by key id, and whether the writer is running. */
  private readonly pendingUses = new Map<string, Date>();
  private writingUses = false;

  /**
   * Keeps the key cache in step with changes made by every replica: each notification drops
   * what it names, and every (re)connection of the listening connection drops everything,
   * since notifications sent while it was down are lost. Resolves once listening, with the
   * function that stops it. Without a cache there is nothing to follow.
   */
  async followKeyChanges(): Promise<() => Promise<void>> {
    const cache = this.deps.keyCache;
    if (!cache?.enabled) return async () => {};
    return this.deps.accounts.listenKeyChanges(
      (change) => this.forget(change),
      () => cache.clear(),
    );
  }

  /** Drops from the key cache what a change makes stale. */
  private forget(change: KeyChange): void {
    const cache = this.deps.keyCache;
    if (!cache) return;
    if (change.kind === "key") cache.forgetKey(change.id);
    else if (change.kind === "account") cache.forgetAccount(change.id);
    else cache.clear();
  }

  /**
   * Makes sure `secret` (GLIMPSE_ADMIN_KEY) is a key of an admin account: the first start
   * stores it for the default account, which is an admin. A key revoked since stays revoked.
   */
  async ensureAdminKey(secret: string): Promise<void> {
    const { accounts, logger, clock } = this.deps;
    const hash = hashSecret(secret);
    const existing = await accounts.findKeyByHash(hash);
    if (existing) {
      if (existing.revokedAt) logger.warn("GLIMPSE_ADMIN_KEY was revoked and does not authenticate", { prefix: existing.prefix });
      return;
    }
    try {
      await this.deps.transaction(async (tx) => {
        await accounts.setAdmin(DEFAULT_ACCOUNT_ID, true, tx);
        await accounts.insertKey(
          {
            accountId: DEFAULT_ACCOUNT_ID,
            name: "GLIMPSE_ADMIN_KEY",
            prefix: prefixOf(secret),
            secretHash: hash,
            rateLimitPerMinute: null,
            createdAt: clock.now(),
          },
          tx,
        );
      });
      this.forget({ kind: "account", id: DEFAULT_ACCOUNT_ID });
      logger.info("admin API key from GLIMPSE_ADMIN_KEY stored", { prefix: prefixOf(secret) });
    } catch (err) {
      // Another replica starting at the same time stored it first.
      if (isUniqueViolation(err) && (await accounts.findKeyByHash(hash))) return;
      if (isUniqueViolation(err)) {
        throw new Error("GLIMPSE_ADMIN_KEY starts like an existing key; choose another secret", { cause: err });
      }
      throw err;
    }
  }

  /** The caller's account, or (admins only) another one. */
  async get(caller: Caller, accountIdText: string): Promise<AccountRecord> {
    const v = new Violations();
    const id = uuidField(accountIdText, "account_id", v, false) ?? caller.accountId;
    v.throwIfAny();
    if (id !== caller.accountId) requireAdmin(caller, "reading another account");
    const account = await this.deps.accounts.get(id);
    if (!account) throw notFound("account", id);
    return account;
  }

  /** The caller's ledger, newest first. */
  async listUsage(caller: Caller, limit: number, offset: number): Promise<UsagePage> {
    const page = offsetPage(limit, offset);
    const { entries, total } = await this.deps.ledger.list(caller.accountId, page.limit, page.offset);
    return { transactions: entries, total, ...page };
  }

  private checkKeyFields(caller: Caller, name: string, rate: number | undefined): string {
    const v = new Violations();
    const clean = name.trim();
    v.check(clean.length >= 1 && clean.length <= KEY_NAME_MAX, "name", `is required: 1..${KEY_NAME_MAX} characters`);
    v.check(!clean.includes("\u0000"), "name", "must not contain NUL characters");
    if (rate !== undefined) {
      v.check(Number.isInteger(rate) && rate >= 1 && rate <= RATE_MAX, "rate_limit_per_minute", `must be between 1 and ${RATE_MAX}`);
    }
    v.throwIfAny();
    if (rate !== undefined && rate > this.deps.defaultRateLimit && !caller.isAdmin) {
      throw new DomainError(
        "PERMISSION_DENIED",
        `only admins may set a rate limit above the server default of ${this.deps.defaultRateLimit} per minute`,
      );
    }
    return clean;
  }

  /** Stores a new key for an account, retrying the (unlikely) clash of a random prefix. */
  private async issueKey(accountId: string, name: string, rate: number | null, tx?: Tx): Promise<NewKeyResult> {
    for (let attempt = 0; ; attempt++) {
      const secret = generateSecret();
      try {
        const key = await this.deps.accounts.insertKey(
          {
            accountId,
            name,
            prefix: prefixOf(secret),
            secretHash: hashSecret(secret),
            rateLimitPerMinute: rate,
            createdAt: this.deps.clock.now(),
          },
          tx,
        );
        return { key, secret };
      } catch (err) {
        // Inside a transaction a failed statement aborts it; only retry outside one.
        if (!isUniqueViolation(err) || tx !== undefined || attempt >= 3) throw err;
      }
    }
  }

  /** A new key for the caller's own account; the secret is returned once. */
  async createApiKey(caller: Caller, name: string, rate: number | undefined): Promise<NewKeyResult> {
    const clean = this.checkKeyFields(caller, name, rate);
    if (caller.isAdmin) return this.issueKey(caller.accountId, clean, rate ?? null);
    // Keys share their account's rate limit, and an account holds a bounded number of them.
    return this.deps.transaction(async (tx) => {
      const held = await this.deps.accounts.countActiveKeysLocked(caller.accountId, tx);
      if (held >= this.deps.maxKeysPerAccount) {
        throw new DomainError(
          "FAILED_PRECONDITION",
          `this account already holds ${held} API keys, the most allowed (${this.deps.maxKeysPerAccount}); revoke one first`,
        );
      }
      return this.issueKey(caller.accountId, clean, rate ?? null, tx);
    });
  }

  /** A page of the caller's keys, newest first; never secrets. */
  async listApiKeys(
    caller: Caller,
    pageSize: number,
    pageToken: string,
    showRevoked: boolean,
  ): Promise<{ keys: ApiKeyRecord[]; nextPageToken: string }> {
    const v = new Violations();
    v.check(pageSize >= 0 && pageSize <= KEY_PAGE_MAX, "page_size", `must be between 0 and ${KEY_PAGE_MAX}`);
    let before: bigint | null = null;
    if (pageToken !== "") {
      const text = Buffer.from(pageToken, "base64url").toString();
      const valid = /^k\d{1,19}$/.test(text) && BigInt(text.slice(1)) <= 9_223_372_036_854_775_807n;
      if (v.check(valid, "page_token", "is not a token returned by ListApiKeys")) {
        before = BigInt(text.slice(1));
      }
    }
    v.throwIfAny();
    const { keys, next } = await this.deps.accounts.listKeys(caller.accountId, {
      before,
      limit: pageSize === 0 ? KEY_PAGE_DEFAULT : pageSize,
      showRevoked,
    });
    return { keys, nextPageToken: next === null ? "" : Buffer.from(`k${next}`).toString("base64url") };
  }

  /** Revokes one of the caller's keys; revoking again returns it unchanged. */
  async revokeApiKey(caller: Caller, keyIdText: string): Promise<ApiKeyRecord> {
    const v = new Violations();
    const keyId = uuidField(keyIdText, "key_id", v);
    v.throwIfAny();
    const key = await this.deps.accounts.revokeKey(caller.accountId, keyId!, this.deps.clock.now());
    if (!key) throw notFound("API key", keyId!);
    // The notification reaches this replica too, but the very next call here must see it.
    this.forget({ kind: "key", id: key.id });
    return key;
  }

  /** Admin only: a new account, with starting credits and a first key when asked. */
  async createAccount(
    caller: Caller,
    input: CreateAccountInput,
  ): Promise<{ account: AccountRecord; key?: NewKeyResult }> {
    requireAdmin(caller, "CreateAccount");
    const v = new Violations();
    const email = emailOf(input.email, "email", v);
    const username = usernameOf(input.username, "username", v);
    v.check(
      input.initialCredits >= 0n && input.initialCredits <= CREDITS_MAX,
      "initial_credits",
      `must be between 0 and ${CREDITS_MAX}`,
    );
    v.throwIfAny();
    try {
      return await this.deps.transaction(async (tx) => {
        const now = this.deps.clock.now();
        let account = await this.deps.accounts.insert({ email, username, isAdmin: input.isAdmin, createdAt: now }, tx);
        if (input.initialCredits > 0n) {
          const granted = await this.deps.ledger.grant(
            {
              accountId: account.id,
              amount: input.initialCredits,
              description: "Initial credits",
              grantedBy: caller.accountId,
              requestId: null,
              createdAt: now,
            },
            tx,
          );
          account = { ...account, creditBalance: granted!.balances.creditBalance };
        }
        const key = input.createApiKey ? await this.issueKey(account.id, "default", null, tx) : undefined;
        return { account, key };
      });
    } catch (err) {
      if (isUniqueViolation(err)) {
        const detail = String((err as { constraint_name?: string }).constraint_name ?? "");
        const what = detail.includes("username") ? `username ${JSON.stringify(username)}` : `email ${JSON.stringify(email)}`;
        throw new DomainError("ALREADY_EXISTS", `an account with ${what} already exists`);
      }
      throw err;
    }
  }

  /** Admin only: adds credits as one grant; a retry with the same request id returns the first grant. */
  async grantCredits(
    caller: Caller,
    input: { accountId: string; amount: bigint; description: string; requestId: string },
  ): Promise<{ account: AccountRecord; transaction: LedgerEntry }> {
    requireAdmin(caller, "GrantCredits");
    const v = new Violations();
    const accountId = uuidField(input.accountId, "account_id", v);
    v.check(input.amount >= 1n && input.amount <= CREDITS_MAX, "amount", `must be between 1 and ${CREDITS_MAX}`);
    v.check([...input.description].length <= DESCRIPTION_MAX, "description", `must be at most ${DESCRIPTION_MAX} characters`);
    v.check(!input.description.includes("\u0000"), "description", "must not contain NUL characters");
    const requestId = requestIdOf(input.requestId, "request_id", v);
    v.throwIfAny();
    const { accounts, ledger } = this.deps;
    const transaction = await this.deps.transaction(async (tx) => {
      if (requestId) {
        await tx`select pg_advisory_xact_lock(hashtextextended(${`grant/${caller.accountId}/${requestId}`}, 13))`;
        const earlier = await ledger.findGrant(caller.accountId, requestId, tx);
        if (earlier) return earlier;
      }
      const granted = await ledger.grant(
        {
          accountId: accountId!,
          amount: input.amount,
          description: input.description.trim() || "Credit grant",
          grantedBy: caller.accountId,
          requestId,
          createdAt: this.deps.clock.now(),
        },
        tx,
      );
      if (!granted) throw notFound("account", accountId!);
      return granted.entry;
    });
    const account = await accounts.get(transaction.accountId);
    return { account: account!, transaction };
  }

  /**
   * A new key from the command line (`glimpse keys create`), for no caller: for the account
   * with `accountId`, or with `email` (created when missing), or the default admin account.
   * `admin` makes the account an admin.
   */
  async createKeyFor(target: {
    accountId?: string;
    email?: string;
    admin: boolean;
    name: string;
  }): Promise<NewKeyResult & { account: AccountRecord }> {
    const { accounts } = this.deps;
    const v = new Violations();
    const name = target.name.trim();
    v.check(name.length >= 1 && name.length <= KEY_NAME_MAX, "--name", `must be 1..${KEY_NAME_MAX} characters`);
    const accountId = target.accountId === undefined ? undefined : uuidField(target.accountId, "--account", v);
    const email = target.email === undefined ? undefined : emailOf(target.email, "--email", v);
    v.throwIfAny();
    const issued = await this.deps.transaction(async (tx) => {
      let account: AccountRecord | undefined;
      if (accountId) {
        account = await accounts.get(accountId, tx);
        if (!account) throw notFound("account", accountId);
      } else if (email !== undefined) {
        account =
          (await accounts.findByEmail(email, tx)) ??
          (await accounts.insert({ email, username: "", isAdmin: target.admin, createdAt: this.deps.clock.now() }, tx));
      } else {
        account = await accounts.get(DEFAULT_ACCOUNT_ID, tx);
        if (!account) throw notFound("account", DEFAULT_ACCOUNT_ID);
      }
      if (target.admin && !account.isAdmin) {
        await accounts.setAdmin(account.id, true, tx);
        account = { ...account, isAdmin: true };
      }
      const issued = await this.issueKey(account.id, name, null, tx);
      return { ...issued, account };
    });
    if (target.admin) this.forget({ kind: "account", id: issued.account.id });
    return issued;
  }
}
