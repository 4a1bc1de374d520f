import { DomainError } from "../../errors.js";
import { postJson, type HttpPolicy, type ProviderApi } from "./http.js";
import {
  promptWithStyle,
  sniffMediaType,
  type ImageProvider,
  type ProviderImage,
  type ProviderRequest,
} from "./types.js";

/** Where and how to reach the Gemini API. */
export interface GoogleConfig {
  /** API root without the version, e.g. https://generativelanguage.googleapis.com. */
  baseUrl: string;
  /** Undefined: the provider is unavailable. */
  apiKey: string | undefined;
  http: HttpPolicy;
}

interface GoogleError {
  error?: { message?: string; status?: string; details?: { "@type"?: string; retryDelay?: string }[] };
}

/**
 * Gemini says how long to wait in the body, as google.rpc.RetryInfo (`"retryDelay": "27s"`),
 * not in a Retry-After header.
 */
function retryDelayMs(body: unknown): number | undefined {
  const details = (body as GoogleError | undefined)?.error?.details ?? [];
  for (const detail of details) {
    if (!detail["@type"]?.endsWith("google.rpc.RetryInfo")) continue;
    const match = /^(\d+(?:\.\d+)?)s$/.exec(detail.retryDelay ?? "");
    if (match) return Math.ceil(Number(match[1]) * 1000);
  }
  return undefined;
}

interface Part {
  text?: string;
  inlineData?: { mimeType?: string; data?: string };
  inline_data?: { mime_type?: string; data?: string };
}

interface GenerateContentResponse {
  candidates?: { content?: { parts?: Part[] }; finishReason?: string }[];
  promptFeedback?: { blockReason?: string };
}

const api: ProviderApi = {
  name: "Google Gemini",
  keyOption: "GLIMPSE_GOOGLE_API_KEY",
  errorMessage: (body) => (body as GoogleError | undefined)?.error?.message,
  // Google reports refusals in successful answers; a 400 with FAILED_PRECONDITION is a refusal
  // of the account or region rather than a malformed request.
  isRefusal: (body) => (body as GoogleError | undefined)?.error?.status === "FAILED_PRECONDITION",
  retryDelayMs,
};

/**
 * Gemini image generation: POST {base}/v1beta/models/{model}:generateContent asking for an
 * image answer at the aspect ratio, answered with inline base64 image data.
 */
export class GoogleProvider implements ImageProvider {
  readonly id = "google" as const;

  constructor(private readonly config: GoogleConfig) {}

  unavailableReason(): string | undefined {
    return this.config.apiKey ? undefined : "Google models need an API key: set GLIMPSE_GOOGLE_API_KEY";
  }

  async generate(request: ProviderRequest): Promise<ProviderImage> {
    const key = this.config.apiKey;
    if (!key) throw new DomainError("FAILED_PRECONDITION", this.unavailableReason()!);
    const generationConfig: Record<string, unknown> = {
      responseModalities: ["IMAGE"],
      imageConfig: { aspectRatio: request.aspectRatio },
    };
    if (request.thinkingLevel !== undefined) generationConfig.thinkingConfig = { thinkingLevel: request.thinkingLevel };
    const json = (await postJson(
      {
        url: `${this.config.baseUrl}/v1beta/models/${encodeURIComponent(request.model)}:generateContent`,
        headers: { "x-goog-api-key": key },
        body: {
          contents: [{ role: "user", parts: [{ text: promptWithStyle(request.prompt, request.style) }] }],
          generationConfig,
        },
        signal: request.signal,
        deadline: request.deadline,
      },
      api,
      this.config.http,
    )) as GenerateContentResponse;
    return imageOf(json);
  }
}

/** The first inline image of the first candidate; a blocked or image-less answer is a refusal. */
function imageOf(json: GenerateContentResponse): ProviderImage {
  const blocked = json.promptFeedback?.blockReason;
  if (blocked) throw new DomainError("FAILED_PRECONDITION", `Google Gemini refused the prompt (${blocked})`);
  const candidate = json.candidates?.[0];
  const parts = candidate?.content?.parts ?? [];
  for (const part of parts) {
    const data = part.inlineData?.data ?? part.inline_data?.data;
    if (typeof data === "string" && data !== "") {
      const bytes = Buffer.from(data, "base64");
      const declared = part.inlineData?.mimeType ?? part.inline_data?.mime_type;
      return { bytes, mediaType: declared?.startsWith("image/") ? declared : sniffMediaType(bytes) };
    }
  }
  if (!candidate) {
    throw new DomainError("UNAVAILABLE", "the Google Gemini API answered without a candidate; nothing was charged, retry later");
  }
  const text = parts.map((p) => p.text ?? "").join(" ").replace(/\s+/g, " ").trim().slice(0, 200);
  const reason = candidate.finishReason ?? "no image";
  throw new DomainError(
    "FAILED_PRECONDITION",
    `Google Gemini answered without an image (${reason})${text ? `: ${text}` : ""}`,
  );
}
