/** Plain domain types of accounts, keys and the ledger; the transport maps protobuf to and from these. */

/** An account with its credits. Credits are whole numbers, kept as bigint (int64 in the contract). */
export interface AccountRecord {
  id: string;
  /** Empty when the account has no email (the default account). */
  email: string;
  /** Empty when unset. */
  username: string;
  isAdmin: boolean;
  /** Spendable now: the ledger sum minus reservedCredits. */
  creditBalance: bigint;
  /** Held by generations still running. */
  reservedCredits: bigint;
  createdAt: Date;
}

/** An API key's metadata; the secret itself is never stored. */
export interface ApiKeyRecord {
  id: string;
  accountId: string;
  name: string;
  prefix: string;
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
  /** The key's own limit; null means the server default. */
  rateLimitPerMinute: number | null;
}

/** A key found by its prefix, with what authentication needs. */
export interface KeyForAuth extends ApiKeyRecord {
  secretHash: Buffer;
  isAdmin: boolean;
}

export type TransactionKind = "grant" | "deduction";

/** One ledger row; rows are never changed or deleted. */
export interface LedgerEntry {
  id: string;
  accountId: string;
  /** Positive for a grant, negative for a charge. */
  amount: bigint;
  kind: TransactionKind;
  description: string;
  referenceId: string;
  /** creditBalance + reservedCredits right after this entry. */
  balanceAfter: bigint;
  createdAt: Date;
}

/** A page of ledger entries by limit and offset. */
export interface UsagePage {
  transactions: LedgerEntry[];
  total: number;
  limit: number;
  offset: number;
}

/**
 * A change to what authentication knows of keys, announced to every replica: one key's
 * validity, every key of one account (its admin flag), or, when the announcement cannot be
 * read, anything.
 */
export type KeyChange = { kind: "key"; id: string } | { kind: "account"; id: string } | { kind: "any" };
