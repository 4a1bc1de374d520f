import {
  TransactionType,
  transactionTypeToJSON,
  type Account,
  type Transaction,
} from "../../gen/glimpse/account/v1/account_service.js";
import { ThinkingLevel, type Generation } from "../../gen/glimpse/generation/v1/generation_service.js";

/* glimpse's messages in getimages' response shapes (camelCase, credits as numbers, null for "none"). */

/** An image as getimages describes it; which optional parts appear depends on the endpoint. */
export interface SeedImage {
  id: string;
  prompt: string;
  modelId: string;
  providerId: string;
  aspectRatio: string;
  style: string | null;
  thinkingLevel: "default" | "deep" | null;
  mediaType: string;
  creditCost?: number;
  b64_json?: string;
  createdAt: string | null;
}

function thinkingOut(level: ThinkingLevel): SeedImage["thinkingLevel"] {
  if (level === ThinkingLevel.THINKING_LEVEL_DEFAULT) return "default";
  if (level === ThinkingLevel.THINKING_LEVEL_DEEP) return "deep";
  return null;
}

/**
 * One generation as an image. `creditCost` is in listings and single reads (the generate
 * response reports the charge in `credits` instead); `b64_json` only when the bytes are wanted.
 */
export function imageOut(g: Generation, parts: { creditCost: boolean; bytes: boolean }): SeedImage {
  return {
    id: g.id,
    prompt: g.prompt,
    modelId: g.modelId,
    providerId: g.providerId,
    aspectRatio: g.aspectRatio,
    style: g.style === "" ? null : g.style,
    thinkingLevel: thinkingOut(g.thinkingLevel),
    mediaType: g.mediaType,
    ...(parts.creditCost ? { creditCost: Number(g.creditCost) } : {}),
    ...(parts.bytes ? { b64_json: Buffer.from(g.content ?? new Uint8Array()).toString("base64") } : {}),
    createdAt: g.createdAt?.toISOString() ?? null,
  };
}

/** The account summary: who the key acts for and what it can spend. */
export function accountOut(a: Account): { userId: string; email: string; creditBalance: number } {
  return { userId: a.id, email: a.email, creditBalance: Number(a.creditBalance) };
}

/** `TRANSACTION_TYPE_DEDUCTION` -> `deduction`; a kind added later keeps its lower-case name. */
function typeOut(type: TransactionType): string {
  return transactionTypeToJSON(type).replace(/^TRANSACTION_TYPE_/, "").toLowerCase();
}

/** One ledger row of the usage listing. */
export function transactionOut(t: Transaction) {
  return {
    id: t.id,
    amount: Number(t.amount),
    type: typeOut(t.type),
    description: t.description,
    referenceId: t.referenceId === "" ? null : t.referenceId,
    createdAt: t.createdAt?.toISOString() ?? null,
  };
}
