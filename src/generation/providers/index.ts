import type { Options } from "../../config/options.js";
import type { ProviderId } from "../models.js";
import { GoogleProvider } from "./google.js";
import { defaultHttpPolicy, type HttpPolicy } from "./http.js";
import { LocalProvider } from "./local.js";
import { OpenAIProvider } from "./openai.js";
import type { ImageProvider } from "./types.js";

/** The three providers as the options configure them; `http` replaces parts of the retry policy (tests). */
export function buildProviders(
  options: Pick<
    Options,
    "openaiBaseUrl" | "openaiApiKey" | "googleBaseUrl" | "googleApiKey" | "providerTimeoutMs" | "providerRetries"
  >,
  http: Partial<HttpPolicy> = {},
): Record<ProviderId, ImageProvider> {
  const policy = defaultHttpPolicy({ timeoutMs: options.providerTimeoutMs, retries: options.providerRetries, ...http });
  return {
    openai: new OpenAIProvider({ baseUrl: options.openaiBaseUrl, apiKey: options.openaiApiKey, http: policy }),
    google: new GoogleProvider({ baseUrl: options.googleBaseUrl, apiKey: options.googleApiKey, http: policy }),
    local: new LocalProvider(),
  };
}

/**
 * How long a reservation may stay without its generation finishing before it counts as
 * abandoned: longer than every attempt with its longest wait, plus a margin.
 */
export function abandonedAfterMs(options: Pick<Options, "providerTimeoutMs" | "providerRetries">): number {
  const perAttempt = options.providerTimeoutMs + defaultHttpPolicy().maxRetryAfterMs;
  return perAttempt * (options.providerRetries + 1) + 5 * 60_000;
}
