import type { AccountRecord, ApiKeyRecord, LedgerEntry } from "../../accounts/types.js";
import * as pb from "../../gen/glimpse/account/v1/account_service.js";

/* Domain -> protobuf for the account service. Credits are bigint in the domain, int64 strings here. */

export function accountOut(a: AccountRecord): pb.Account {
  return {
    id: a.id,
    email: a.email,
    username: a.username,
    creditBalance: a.creditBalance.toString(),
    reservedCredits: a.reservedCredits.toString(),
    isAdmin: a.isAdmin,
    createdAt: a.createdAt,
  };
}

/** A key as listings show it; `defaultRate` fills in keys that use the server default. */
export function apiKeyOut(k: ApiKeyRecord, defaultRate: number): pb.ApiKey {
  return {
    id: k.id,
    accountId: k.accountId,
    name: k.name,
    prefix: k.prefix,
    createdAt: k.createdAt,
    lastUsedAt: k.lastUsedAt ?? undefined,
    revokedAt: k.revokedAt ?? undefined,
    rateLimitPerMinute: k.rateLimitPerMinute ?? defaultRate,
  };
}

export function transactionOut(t: LedgerEntry): pb.Transaction {
  return {
    id: t.id,
    amount: t.amount.toString(),
    type: t.kind === "grant" ? pb.TransactionType.TRANSACTION_TYPE_GRANT : pb.TransactionType.TRANSACTION_TYPE_DEDUCTION,
    description: t.description,
    referenceId: t.referenceId,
    createdAt: t.createdAt,
    balanceAfter: t.balanceAfter.toString(),
  };
}
