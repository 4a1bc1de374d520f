/** The aspect ratios the contract knows, width:height. */
export const ASPECT_RATIOS = ["1:1", "3:2", "2:3", "16:9", "9:16", "4:3", "3:4", "21:9"] as const;
export type AspectRatio = (typeof ASPECT_RATIOS)[number];

export type ProviderId = "openai" | "google" | "local";

/** How hard a model may think first; only models with `supportsThinking` accept one. */
export type ThinkingLevel = "default" | "deep";

/** One model GenerateImage can use. */
export interface ModelSpec {
  /** "<provider>:<model>", as clients name it. */
  id: string;
  provider: ProviderId;
  /** The model's name at its provider. */
  providerModel: string;
  displayName: string;
  /** Credits one generation costs. */
  creditCost: bigint;
  aspectRatios: readonly AspectRatio[];
  supportsThinking: boolean;
  /**
   * The provider's thinking level for each of ours; undefined leaves the provider's default
   * (not sent at all).
   */
  thinking?: Partial<Record<ThinkingLevel, string>>;
}

/**
 * Every model of the registry. Costs follow the providers' relative prices per image at their
 * default size; the local renderer is cheap but not free, so credit limits apply to it too.
 */
export const MODELS: readonly ModelSpec[] = [
  {
    id: "google:gemini-2.5-flash-image",
    provider: "google",
    providerModel: "gemini-2.5-flash-image",
    displayName: "Gemini 2.5 Flash Image",
    creditCost: 3n,
    aspectRatios: ASPECT_RATIOS,
    supportsThinking: false,
  },
  {
    id: "google:gemini-3-pro-image-preview",
    provider: "google",
    providerModel: "gemini-3-pro-image-preview",
    displayName: "Gemini 3 Pro Image (preview)",
    creditCost: 10n,
    aspectRatios: ASPECT_RATIOS,
    supportsThinking: true,
    // The model always thinks; only the deeper level is asked for explicitly.
    thinking: { deep: "high" },
  },
  {
    id: "google:gemini-3.1-flash-image-preview",
    provider: "google",
    providerModel: "gemini-3.1-flash-image-preview",
    displayName: "Gemini 3.1 Flash Image (preview)",
    creditCost: 4n,
    aspectRatios: ASPECT_RATIOS,
    supportsThinking: true,
    thinking: { default: "minimal", deep: "high" },
  },
  {
    id: "local:gradient",
    provider: "local",
    providerModel: "gradient",
    displayName: "Local gradient renderer (offline, not a learned model)",
    creditCost: 1n,
    aspectRatios: ASPECT_RATIOS,
    supportsThinking: false,
  },
  {
    id: "local:shapes",
    provider: "local",
    providerModel: "shapes",
    displayName: "Local shapes renderer (offline, not a learned model)",
    creditCost: 1n,
    aspectRatios: ASPECT_RATIOS,
    supportsThinking: false,
  },
  {
    id: "openai:gpt-image-1.5",
    provider: "openai",
    providerModel: "gpt-image-1.5",
    displayName: "GPT Image 1.5",
    creditCost: 4n,
    aspectRatios: ASPECT_RATIOS,
    supportsThinking: false,
  },
  {
    id: "openai:gpt-image-2",
    provider: "openai",
    providerModel: "gpt-image-2",
    displayName: "GPT Image 2",
    creditCost: 6n,
    aspectRatios: ASPECT_RATIOS,
    supportsThinking: false,
  },
];

/** The model with this id, if the registry has it. */
export function findModel(id: string): ModelSpec | undefined {
  return MODELS.find((m) => m.id === id);
}

/** Width and height of a ratio such as "16:9". */
export function ratioParts(ratio: AspectRatio): [number, number] {
  const [w, h] = ratio.split(":").map(Number);
  return [w, h];
}
