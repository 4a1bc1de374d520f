import type { LedgerEntry, TransactionKind } from "../accounts/types.js";
import type { Sql } from "./db.js";
import type { Tx } from "./images-repository.js";

interface LedgerRow {
  id: string;
  account_id: string;
  amount: bigint;
  kind: number;
  description: string;
  reference_id: string;
  balance_after: bigint;
  created_at: Date;
}

const KINDS: Record<number, TransactionKind> = { 1: "grant", 2: "deduction" };

function toEntry(r: LedgerRow): LedgerEntry {
  return {
    id: r.id,
    accountId: r.account_id,
    amount: r.amount,
    kind: KINDS[r.kind],
    description: r.description,
    referenceId: r.reference_id,
    balanceAfter: r.balance_after,
    createdAt: r.created_at,
  };
}

/** A grant to record. */
export interface NewGrant {
  accountId: string;
  amount: bigint;
  description: string;
  grantedBy: string | null;
  requestId: string | null;
  createdAt: Date;
}

/** Balances after a change: spendable now, and held by running generations. */
export interface Balances {
  creditBalance: bigint;
  reservedCredits: bigint;
}

/**
 * The credit ledger and the balance columns it keeps in step. Every method that changes a
 * balance does so with one guarded UPDATE in the caller's transaction, so concurrent
 * callers queue on the account row and the checks see committed values.
 */
export class LedgerRepository {
  constructor(private readonly sql: Sql) {}

  /** Adds a grant to the balance and the ledger; undefined when the account does not exist. */
  async grant(g: NewGrant, tx: Tx): Promise<{ entry: LedgerEntry; balances: Balances } | undefined> {
    const [acct] = await tx<{ credit_balance: bigint; reserved_credits: bigint }[]>`
      update accounts set credit_balance = credit_balance + ${g.amount.toString()}
      where id = ${g.accountId}
      returning credit_balance, reserved_credits`;
    if (!acct) return undefined;
    const [row] = await tx<LedgerRow[]>`
      insert into ledger (account_id, amount, kind, description, reference_id, balance_after,
                          granted_by, request_id, created_at)
      values (${g.accountId}, ${g.amount.toString()}, 1, ${g.description}, ${g.requestId ?? ""},
              ${(acct.credit_balance + acct.reserved_credits).toString()}, ${g.grantedBy}, ${g.requestId},
              ${g.createdAt})
      returning *`;
    return { entry: toEntry(row), balances: { creditBalance: acct.credit_balance, reservedCredits: acct.reserved_credits } };
  }

  /** The grant an admin made earlier with this request id, if any. */
  async findGrant(grantedBy: string, requestId: string, db: Tx = this.sql): Promise<LedgerEntry | undefined> {
    const [row] = await db<LedgerRow[]>`
      select * from ledger where granted_by = ${grantedBy} and request_id = ${requestId}`;
    return row ? toEntry(row) : undefined;
  }

  /**
   * Moves `cost` from spendable to reserved, only if the account can afford it. Returns the
   * balances after, or undefined when the balance is too low (nothing changes then).
   */
  async reserve(accountId: string, cost: bigint, tx: Tx): Promise<Balances | undefined> {
    const [row] = await tx<{ credit_balance: bigint; reserved_credits: bigint }[]>`
      update accounts
      set credit_balance = credit_balance - ${cost.toString()},
          reserved_credits = reserved_credits + ${cost.toString()}
      where id = ${accountId} and credit_balance >= ${cost.toString()}
      returning credit_balance, reserved_credits`;
    return row ? { creditBalance: row.credit_balance, reservedCredits: row.reserved_credits } : undefined;
  }

  /**
   * Turns a reservation into a charge: the held credits leave the account and a deduction row
   * records them, with `referenceId` (the generation) as its reference.
   */
  async charge(
    accountId: string,
    cost: bigint,
    referenceId: string,
    description: string,
    createdAt: Date,
    tx: Tx,
  ): Promise<{ entry: LedgerEntry | undefined; balances: Balances }> {
    const [acct] = await tx<{ credit_balance: bigint; reserved_credits: bigint }[]>`
      update accounts set reserved_credits = reserved_credits - ${cost.toString()}
      where id = ${accountId}
      returning credit_balance, reserved_credits`;
    const balances = { creditBalance: acct.credit_balance, reservedCredits: acct.reserved_credits };
    if (cost === 0n) return { entry: undefined, balances };
    const [row] = await tx<LedgerRow[]>`
      insert into ledger (account_id, amount, kind, description, reference_id, balance_after, created_at)
      values (${accountId}, ${(-cost).toString()}, 2, ${description}, ${referenceId},
              ${(acct.credit_balance + acct.reserved_credits).toString()}, ${createdAt})
      returning *`;
    return { entry: toEntry(row), balances };
  }

  /** The account's entries, newest first, by limit and offset, with their total count. */
  async list(accountId: string, limit: number, offset: number): Promise<{ entries: LedgerEntry[]; total: number }> {
    const rows = await this.sql<LedgerRow[]>`
      select * from ledger where account_id = ${accountId}
      order by seq desc limit ${limit} offset ${offset}`;
    const [{ n }] = await this.sql<{ n: bigint }[]>`select count(*) as n from ledger where account_id = ${accountId}`;
    return { entries: rows.map(toEntry), total: Number(n) };
  }

  /** The sum of an account's ledger (for checks: it equals credit balance plus reserved credits). */
  async sum(accountId: string): Promise<bigint> {
    const [{ s }] = await this.sql<{ s: bigint }[]>`
      select coalesce(sum(amount), 0)::bigint as s from ledger where account_id = ${accountId}`;
    return s;
  }
}
