import type { AccountRecord, ApiKeyRecord, KeyChange, KeyForAuth } from "../accounts/types.js";
import type { Sql } from "./db.js";
import type { Tx } from "./images-repository.js";

interface AccountRow {
  id: string;
  email: string | null;
  username: string;
  is_admin: boolean;
  credit_balance: bigint;
  reserved_credits: bigint;
  created_at: Date;
}

interface KeyRow {
  id: string;
  seq: bigint;
  account_id: string;
  name: string;
  prefix: string;
  secret_hash: Buffer;
  rate_limit_per_minute: number | null;
  created_at: Date;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

function toAccount(r: AccountRow): AccountRecord {
  return {
    id: r.id,
    email: r.email ?? "",
    username: r.username,
    isAdmin: r.is_admin,
    creditBalance: r.credit_balance,
    reservedCredits: r.reserved_credits,
    createdAt: r.created_at,
  };
}

function toKey(r: KeyRow): ApiKeyRecord {
  return {
    id: r.id,
    accountId: r.account_id,
    name: r.name,
    prefix: r.prefix,
    createdAt: r.created_at,
    lastUsedAt: r.last_used_at,
    revokedAt: r.revoked_at,
    rateLimitPerMinute: r.rate_limit_per_minute,
  };
}

/** A new account's fields. */
export interface NewAccount {
  email: string | null;
  username: string;
  isAdmin: boolean;
  createdAt: Date;
}

/** A new key's stored fields (never the secret). */
export interface NewKey {
  accountId: string;
  name: string;
  prefix: string;
  secretHash: Buffer;
  rateLimitPerMinute: number | null;
  createdAt: Date;
}

/**
 * Channel of the notifications that tell every replica a key's validity or an account's admin
 * flag changed; sent in the transaction that makes the change, so it arrives once committed.
 * Payloads are `key:<id>` and `account:<id>`.
 */
export const KEY_CHANGES_CHANNEL = "glimpse_keys";

/** A notification's payload as a change; anything unreadable stands for any change. */
export function keyChangeOf(payload: string): KeyChange {
  const match = /^(key|account):([0-9a-f-]{36})$/.exec(payload);
  return match ? { kind: match[1] as "key" | "account", id: match[2] } : { kind: "any" };
}

/** Accounts and API keys. */
export class AccountsRepository {
  constructor(private readonly sql: Sql) {}

  async get(id: string, db: Tx = this.sql): Promise<AccountRecord | undefined> {
    const [row] = await db<AccountRow[]>`select * from accounts where id = ${id}`;
    return row ? toAccount(row) : undefined;
  }

  async findByEmail(email: string, db: Tx = this.sql): Promise<AccountRecord | undefined> {
    const [row] = await db<AccountRow[]>`select * from accounts where lower(email) = lower(${email})`;
    return row ? toAccount(row) : undefined;
  }

  /** Inserts an account; a taken email or username surfaces as the unique violation (23505). */
  async insert(account: NewAccount, db: Tx): Promise<AccountRecord> {
    const [row] = await db<AccountRow[]>`
      insert into accounts (email, username, is_admin, created_at)
      values (${account.email}, ${account.username}, ${account.isAdmin}, ${account.createdAt})
      returning *`;
    return toAccount(row);
  }

  /** Sets an account's admin flag and tells every replica (on commit) that its keys changed. */
  async setAdmin(id: string, isAdmin: boolean, db: Tx = this.sql): Promise<void> {
    await db`
      with changed as (update accounts set is_admin = ${isAdmin} where id = ${id} returning id)
      select pg_notify(${KEY_CHANGES_CHANNEL}, 'account:' || changed.id::text) from changed`;
  }

  /** Stores a key; a prefix already taken surfaces as the unique violation (23505). */
  async insertKey(key: NewKey, db: Tx = this.sql): Promise<ApiKeyRecord> {
    const [row] = await db<KeyRow[]>`
      insert into api_keys (account_id, name, prefix, secret_hash, rate_limit_per_minute, created_at)
      values (${key.accountId}, ${key.name}, ${key.prefix}, ${key.secretHash},
              ${key.rateLimitPerMinute}, ${key.createdAt})
      returning *`;
    return toKey(row);
  }

  /**
   * The number of an account's keys that are not revoked, counted under a lock on the account
   * row, so concurrent key creations for one account are counted one after the other.
   */
  async countActiveKeysLocked(accountId: string, db: Tx): Promise<number> {
    await db`select 1 from accounts where id = ${accountId} for update`;
    const [row] = await db<{ n: number }[]>`
      select count(*)::int as n from api_keys where account_id = ${accountId} and revoked_at is null`;
    return row.n;
  }

  /** The key with this prefix and its account's admin flag, revoked or not. */
  async findKeyByPrefix(prefix: string): Promise<KeyForAuth | undefined> {
    const [row] = await this.sql<(KeyRow & { is_admin: boolean })[]>`
      select k.*, a.is_admin from api_keys k join accounts a on a.id = k.account_id
      where k.prefix = ${prefix}`;
    return row ? { ...toKey(row), secretHash: row.secret_hash, isAdmin: row.is_admin } : undefined;
  }

  /** The key whose secret has this hash, if any (bootstrap of a configured key). */
  async findKeyByHash(hash: Buffer): Promise<ApiKeyRecord | undefined> {
    const [row] = await this.sql<KeyRow[]>`select * from api_keys where secret_hash = ${hash}`;
    return row ? toKey(row) : undefined;
  }

  /** Records use of a key, at most about once a minute per key (older marks only). */
  async touchKey(id: string, now: Date, staleBefore: Date): Promise<void> {
    await this.sql`
      update api_keys set last_used_at = ${now}
      where id = ${id} and (last_used_at is null or last_used_at < ${staleBefore})`;
  }

  /** One page of an account's keys, newest first, after the key with sequence `before`. */
  async listKeys(
    accountId: string,
    options: { before: bigint | null; limit: number; showRevoked: boolean },
  ): Promise<{ keys: ApiKeyRecord[]; next: bigint | null }> {
    const sql = this.sql;
    const rows = await sql<KeyRow[]>`
      select * from api_keys
      where account_id = ${accountId}
        and ${options.before === null ? sql`true` : sql`seq < ${options.before.toString()}`}
        and ${options.showRevoked ? sql`true` : sql`revoked_at is null`}
      order by seq desc
      limit ${options.limit + 1}`;
    const page = rows.slice(0, options.limit);
    return { keys: page.map(toKey), next: rows.length > options.limit ? page[page.length - 1].seq : null };
  }

  /**
   * Marks the account's key revoked (keeping an earlier revocation time) and, in the same
   * statement, tells every replica; undefined if the account has no such key.
   */
  async revokeKey(accountId: string, keyId: string, now: Date): Promise<ApiKeyRecord | undefined> {
    const [row] = await this.sql<KeyRow[]>`
      with revoked as (
        update api_keys set revoked_at = coalesce(revoked_at, ${now})
        where id = ${keyId} and account_id = ${accountId}
        returning *)
      select revoked.*, pg_notify(${KEY_CHANGES_CHANNEL}, 'key:' || revoked.id::text) from revoked`;
    return row ? toKey(row) : undefined;
  }

  /**
   * Follows key changes made by any replica (this one included). `onListen` runs each time
   * the listening connection is (re)established: notifications sent while it was down are
   * lost, so whatever was learnt before must be treated as stale. Resolves once listening,
   * with the function that stops it.
   */
  async listenKeyChanges(onChange: (change: KeyChange) => void, onListen: () => void): Promise<() => Promise<void>> {
    const listener = await this.sql.listen(KEY_CHANGES_CHANNEL, (payload) => onChange(keyChangeOf(payload)), onListen);
    return async () => {
      await listener.unlisten();
    };
  }
}
