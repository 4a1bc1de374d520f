import { DomainError } from "../../errors.js";
import type { AspectRatio } from "../models.js";
import { postJson, type HttpPolicy, type ProviderApi } from "./http.js";
import {
  promptWithStyle,
  sniffMediaType,
  type ImageProvider,
  type ProviderImage,
  type ProviderRequest,
} from "./types.js";

/** Where and how to reach the OpenAI Images API. */
export interface OpenAIConfig {
  /** API root without the version, e.g. https://api.openai.com. */
  baseUrl: string;
  /** Undefined: the provider is unavailable. */
  apiKey: string | undefined;
  http: HttpPolicy;
}

/**
 * GPT Image models draw at three sizes only. Each ratio maps to the nearest: square, landscape
 * 3:2 (for 3:2, 4:3, 16:9, 21:9) or portrait 2:3 (for 2:3, 3:4, 9:16); the stored image has
 * the size the model drew, while the generation records the ratio that was asked for.
 */
export const OPENAI_SIZES: Record<AspectRatio, string> = {
  "1:1": "1024x1024",
  "3:2": "1536x1024",
  "4:3": "1536x1024",
  "16:9": "1536x1024",
  "21:9": "1536x1024",
  "2:3": "1024x1536",
  "3:4": "1024x1536",
  "9:16": "1024x1536",
};

interface OpenAIError {
  error?: { message?: string; code?: string | null; type?: string };
}

const api: ProviderApi = {
  name: "OpenAI",
  keyOption: "GLIMPSE_OPENAI_API_KEY",
  errorMessage: (body) => (body as OpenAIError | undefined)?.error?.message,
  isRefusal(body) {
    const code = (body as OpenAIError | undefined)?.error?.code ?? "";
    return code === "moderation_blocked" || code === "content_policy_violation";
  },
};

/** The OpenAI Images API: POST {base}/v1/images/generations, answered with base64 image data. */
export class OpenAIProvider implements ImageProvider {
  readonly id = "openai" as const;

  constructor(private readonly config: OpenAIConfig) {}

  unavailableReason(): string | undefined {
    return this.config.apiKey ? undefined : "OpenAI models need an API key: set GLIMPSE_OPENAI_API_KEY";
  }

  async generate(request: ProviderRequest): Promise<ProviderImage> {
    const key = this.config.apiKey;
    if (!key) throw new DomainError("FAILED_PRECONDITION", this.unavailableReason()!);
    const json = (await postJson(
      {
        url: `${this.config.baseUrl}/v1/images/generations`,
        headers: { authorization: `Bearer ${key}` },
        body: {
          model: request.model,
          prompt: promptWithStyle(request.prompt, request.style),
          n: 1,
          size: OPENAI_SIZES[request.aspectRatio],
        },
        signal: request.signal,
        deadline: request.deadline,
      },
      api,
      this.config.http,
    )) as { data?: { b64_json?: unknown }[] };
    const b64 = json?.data?.[0]?.b64_json;
    if (typeof b64 !== "string" || b64 === "") {
      throw new DomainError("UNAVAILABLE", "the OpenAI API answered without image data; nothing was charged, retry later");
    }
    const bytes = Buffer.from(b64, "base64");
    return { bytes, mediaType: sniffMediaType(bytes) };
  }
}
