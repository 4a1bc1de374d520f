import type { ThinkingLevel } from "../../generation/models.js";
import type { GenerationRecord, ModelInfo } from "../../generation/types.js";
import { invalidArgument } from "../../errors.js";
import * as pb from "../../gen/glimpse/generation/v1/generation_service.js";

/* Protobuf <-> domain for the generation service. */

const THINKING_IN: Record<number, ThinkingLevel | null> = {
  [pb.ThinkingLevel.THINKING_LEVEL_UNSPECIFIED]: null,
  [pb.ThinkingLevel.THINKING_LEVEL_DEFAULT]: "default",
  [pb.ThinkingLevel.THINKING_LEVEL_DEEP]: "deep",
};

/** The request's thinking level; a number outside the enum (a newer client) is INVALID_ARGUMENT. */
export function thinkingIn(value: pb.ThinkingLevel): ThinkingLevel | null {
  const level = THINKING_IN[value];
  if (level === undefined) throw invalidArgument({ field: "thinking_level", description: `unknown value ${value}` });
  return level;
}

function thinkingOut(level: ThinkingLevel | null): pb.ThinkingLevel {
  if (level === "default") return pb.ThinkingLevel.THINKING_LEVEL_DEFAULT;
  if (level === "deep") return pb.ThinkingLevel.THINKING_LEVEL_DEEP;
  return pb.ThinkingLevel.THINKING_LEVEL_UNSPECIFIED;
}

export function generationOut(g: GenerationRecord, content?: Buffer): pb.Generation {
  return {
    id: g.id,
    prompt: g.prompt,
    modelId: g.modelId,
    providerId: g.providerId,
    aspectRatio: g.aspectRatio,
    style: g.style,
    thinkingLevel: thinkingOut(g.thinkingLevel),
    mediaType: g.mediaType,
    content,
    imageId: g.imageId === null ? "0" : g.imageId.toString(),
    creditCost: g.creditCost.toString(),
    createdAt: g.createdAt,
  };
}

export function modelOut(m: ModelInfo): pb.Model {
  return {
    id: m.id,
    providerId: m.providerId,
    displayName: m.displayName,
    creditCost: m.creditCost.toString(),
    aspectRatios: m.aspectRatios,
    supportsThinking: m.supportsThinking,
    available: m.available,
    unavailableReason: m.unavailableReason,
    local: m.local,
  };
}
