import { requestIdOf } from "../catalogue/validate.js";
import { Violations } from "../errors.js";
import { ASPECT_RATIOS, findModel, type AspectRatio, type ModelSpec } from "./models.js";
import type { GenerateInput } from "./types.js";

const PROMPT_MAX = 2000;
const STYLE_MAX = 200;

/** A GenerateImage request that passed validation. */
export interface Checked {
  model: ModelSpec;
  prompt: string;
  aspectRatio: AspectRatio;
  style: string;
  thinkingLevel: GenerateInput["thinkingLevel"];
  requestId: string | null;
  visibility: GenerateInput["visibility"];
}

/** Length in Unicode code points, as the contract counts characters. */
const length = (text: string) => [...text].length;

/**
 * Validates a GenerateImage request, reporting every bad field at once (INVALID_ARGUMENT with
 * one violation per field): prompt 1..2000 characters, a registry model, an aspect ratio the
 * model takes (default 1:1), style up to 200 characters, a thinking level only for models that
 * think, and a UUID request id.
 */
export function checkGenerateInput(input: GenerateInput): Checked {
  const v = new Violations();
  const prompt = input.prompt;
  if (v.check(prompt.trim() !== "", "prompt", `is required: 1..${PROMPT_MAX} characters`)) {
    v.check(length(prompt) <= PROMPT_MAX, "prompt", `must be at most ${PROMPT_MAX} characters, got ${length(prompt)}`);
    v.check(!prompt.includes("\u0000"), "prompt", "must not contain NUL characters");
  }
  let model: ModelSpec | undefined;
  if (v.check(input.modelId !== "", "model_id", "is required; ListModels names the models")) {
    model = findModel(input.modelId);
    v.check(model !== undefined, "model_id", `unknown model ${JSON.stringify(input.modelId)}; ListModels names the models`);
  }
  const ratio = (input.aspectRatio === "" ? "1:1" : input.aspectRatio) as AspectRatio;
  if (v.check(ASPECT_RATIOS.includes(ratio), "aspect_ratio", `must be one of ${ASPECT_RATIOS.join(", ")}`) && model) {
    v.check(
      model.aspectRatios.includes(ratio),
      "aspect_ratio",
      `${model.id} supports ${model.aspectRatios.join(", ")}`,
    );
  }
  v.check(length(input.style) <= STYLE_MAX, "style", `must be at most ${STYLE_MAX} characters, got ${length(input.style)}`);
  v.check(!input.style.includes("\u0000"), "style", "must not contain NUL characters");
  if (input.thinkingLevel !== null && model) {
    v.check(
      model.supportsThinking,
      "thinking_level",
      `${model.id} does not support thinking; leave it unspecified or choose a model with supports_thinking`,
    );
  }
  const requestId = requestIdOf(input.requestId, "request_id", v);
  v.throwIfAny();
  return {
    model: model!,
    prompt,
    aspectRatio: ratio,
    style: input.style,
    thinkingLevel: input.thinkingLevel,
    requestId,
    visibility: input.visibility,
  };
}
