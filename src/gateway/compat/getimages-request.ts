import { ThinkingLevel } from "../../gen/glimpse/generation/v1/generation_service.js";
import { ASPECT_RATIOS } from "../../generation/models.js";
import { SeedError, type SeedIssue } from "./getimages-errors.js";

/*
 * The getimages request schema, checked the way its own server reports problems (zod's issue
 * codes and messages), before anything reaches glimpse. Only what the API documents is checked
 * here: types, required fields, lengths and the documented value lists. What depends on
 * glimpse's registry (an unknown model, a ratio or thinking level the model does not take) is
 * left to GenerateImage, whose field violations come back in the same shape.
 */

export const PROMPT_MAX = 2000;
export const THINKING_LEVELS = ["default", "deep"] as const;
const PAGE_DEFAULT = 20;
const PAGE_MAX = 100;

/** A generate request that passed the documented checks. */
export interface GenerateBody {
  prompt: string;
  modelId: string;
  aspectRatio: string;
  style: string;
  thinkingLevel: ThinkingLevel;
}

/** zod's name for a value's type, as its messages print it. */
function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number" && Number.isNaN(value)) return "NaN";
  return typeof value;
}

const invalidType = (path: string, expected: string, value: unknown): SeedIssue => ({
  path,
  message: `Invalid input: expected ${expected}, received ${typeName(value)}`,
  code: "invalid_type",
});

const invalidOption = (path: string, options: readonly string[]): SeedIssue => ({
  path,
  message: `Invalid option: expected one of ${options.map((o) => JSON.stringify(o)).join("|")}`,
  code: "invalid_value",
});

/** Length in Unicode code points, as glimpse counts characters. */
const length = (text: string) => [...text].length;

/** An optional field: absent and null both mean "not given". */
const given = (value: unknown) => value !== undefined && value !== null;

/**
 * Parses and checks the body of POST /api/v1/images/generate. Malformed JSON is a 400 without
 * details; every bad field is one detail of a single 400. Unknown fields are ignored.
 */
export function parseGenerateBody(raw: Buffer): GenerateBody {
  let body: unknown;
  try {
    body = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new SeedError(400, "Invalid JSON body.");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new SeedError(400, "Invalid request body.", [invalidType("", "object", body)]);
  }
  const fields = body as Record<string, unknown>;
  const issues: SeedIssue[] = [];
  const { prompt, modelId, aspectRatio, style, thinkingLevel } = fields;
  if (typeof prompt !== "string") issues.push(invalidType("prompt", "string", prompt));
  else if (length(prompt) < 1) {
    issues.push({ path: "prompt", message: "Too small: expected string to have >=1 characters", code: "too_small" });
  } else if (length(prompt) > PROMPT_MAX) {
    issues.push({ path: "prompt", message: `Too big: expected string to have <=${PROMPT_MAX} characters`, code: "too_big" });
  }
  if (typeof modelId !== "string") issues.push(invalidType("modelId", "string", modelId));
  if (given(aspectRatio) && !(ASPECT_RATIOS as readonly unknown[]).includes(aspectRatio)) {
    issues.push(invalidOption("aspectRatio", ASPECT_RATIOS));
  }
  if (given(style) && typeof style !== "string") issues.push(invalidType("style", "string", style));
  if (given(thinkingLevel) && !(THINKING_LEVELS as readonly unknown[]).includes(thinkingLevel)) {
    issues.push(invalidOption("thinkingLevel", THINKING_LEVELS));
  }
  if (issues.length > 0) throw new SeedError(400, "Invalid request body.", issues);
  return {
    prompt: prompt as string,
    modelId: modelId as string,
    aspectRatio: given(aspectRatio) ? (aspectRatio as string) : "",
    style: given(style) ? (style as string) : "",
    thinkingLevel:
      thinkingLevel === "deep"
        ? ThinkingLevel.THINKING_LEVEL_DEEP
        : thinkingLevel === "default"
          ? ThinkingLevel.THINKING_LEVEL_DEFAULT
          : ThinkingLevel.THINKING_LEVEL_UNSPECIFIED,
  };
}

/** One integer query parameter, coerced as `z.coerce.number().int().min(min).max(max)` would. */
function integerParam(url: URL, name: string, fallback: number, min: number, max: number, issues: SeedIssue[]): number {
  const text = url.searchParams.get(name);
  if (text === null) return fallback;
  const value = Number(text);
  if (Number.isNaN(value)) issues.push(invalidType(name, "number", value));
  else if (!Number.isInteger(value)) issues.push(invalidType(name, "int", value));
  else if (value < min) issues.push({ path: name, message: `Too small: expected number to be >=${min}`, code: "too_small" });
  else if (value > max) issues.push({ path: name, message: `Too big: expected number to be <=${max}`, code: "too_big" });
  else return value;
  return fallback;
}

/** `limit` (1..100, default 20) and `offset` (>= 0, default 0) of the list endpoints. */
export function parsePaging(url: URL): { limit: number; offset: number } {
  const issues: SeedIssue[] = [];
  const limit = integerParam(url, "limit", PAGE_DEFAULT, 1, PAGE_MAX, issues);
  const offset = integerParam(url, "offset", 0, 0, 2 ** 31 - 1, issues);
  if (issues.length > 0) throw new SeedError(400, "Invalid query parameters.", issues);
  return { limit, offset };
}

/** Whether GET /api/v1/images/{id} leaves the bytes out (`format=metadata`). */
export function metadataOnly(url: URL): boolean {
  const format = url.searchParams.get("format");
  if (format === null) return false;
  if (format !== "metadata") throw new SeedError(400, "Invalid query parameters.", [invalidOption("format", ["metadata"])]);
  return true;
}
