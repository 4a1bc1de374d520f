import type { Visibility } from "../catalogue/types.js";
import type { AspectRatio, ProviderId, ThinkingLevel } from "./models.js";

/** A GenerateImage request as the transport hands it over (still unvalidated). */
export interface GenerateInput {
  prompt: string;
  modelId: string;
  /** Empty: "1:1". */
  aspectRatio: string;
  style: string;
  thinkingLevel: ThinkingLevel | null;
  /** Empty: no idempotency. */
  requestId: string;
  visibility: Visibility;
}

/** A completed generation. */
export interface GenerationRecord {
  id: string;
  accountId: string;
  prompt: string;
  modelId: string;
  providerId: ProviderId;
  aspectRatio: AspectRatio;
  style: string;
  thinkingLevel: ThinkingLevel | null;
  mediaType: string;
  /** The catalogue image holding the result; null once that image was deleted. */
  imageId: bigint | null;
  creditCost: bigint;
  /** When it completed. */
  createdAt: Date;
}

/** What GenerateImage answers. */
export interface GenerateResult {
  generation: GenerationRecord;
  /** The image bytes; undefined only when a replayed generation's image has since been deleted. */
  content: Buffer | undefined;
  /** Credits this generation cost (repeated on a replay, although nothing new was charged). */
  charged: bigint;
  /** The account's spendable credits after the call. */
  remaining: bigint;
}

/** A page of generations by limit and offset. */
export interface GenerationPage {
  generations: GenerationRecord[];
  total: number;
  limit: number;
  offset: number;
}

/** A registry model as ListModels shows it, with whether it can be used now. */
export interface ModelInfo {
  id: string;
  providerId: ProviderId;
  displayName: string;
  creditCost: bigint;
  aspectRatios: AspectRatio[];
  supportsThinking: boolean;
  available: boolean;
  unavailableReason: string;
  local: boolean;
}
