import { setTimeout as delay } from "node:timers/promises";
import { DomainError } from "../../errors.js";

/** How a provider's HTTP calls are timed and retried; shared by every adapter. */
export interface HttpPolicy {
  /** Limit on one attempt, in milliseconds (the call's own deadline applies as well). */
  timeoutMs: number;
  /** Further attempts after a 429, a 5xx, a timeout or a connection failure. */
  retries: number;
  /** First backoff delay; it doubles per attempt, with ±20% jitter. */
  backoffMs: number;
  /** A Retry-After longer than this is not waited out: the call fails UNAVAILABLE at once. */
  maxRetryAfterMs: number;
  /** Waits `ms` or rejects when `signal` aborts (injected so tests never wait). */
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** The current time in ms (Retry-After dates, deadlines). */
  now: () => number;
  /** Uniform [0, 1) for jitter. */
  random: () => number;
}

/** The real policy defaults, with real timers. */
export function defaultHttpPolicy(overrides: Partial<HttpPolicy> = {}): HttpPolicy {
  return {
    timeoutMs: 120_000,
    retries: 2,
    backoffMs: 1000,
    maxRetryAfterMs: 30_000,
    sleep: (ms, signal) => delay(ms, undefined, { signal }),
    now: () => Date.now(),
    random: Math.random,
    ...overrides,
  };
}

/** What an adapter tells the shared client about its provider's API. */
export interface ProviderApi {
  /** Human name, e.g. "OpenAI". */
  name: string;
  /** The option holding its key, named in messages about the key. */
  keyOption: string;
  /** The provider's error message in an error body, if it has one. */
  errorMessage(body: unknown): string | undefined;
  /** Whether a 400 body says the prompt was refused (content policy) rather than malformed. */
  isRefusal(body: unknown): boolean;
  /** A retry delay the error body carries (used when there is no Retry-After header). */
  retryDelayMs?(body: unknown): number | undefined;
}

/** One JSON POST. */
export interface JsonRequest {
  url: string;
  headers: Record<string, string>;
  body: unknown;
  signal: AbortSignal;
  deadline: Date | undefined;
}

/**
 * Seconds or an HTTP date, as Retry-After allows, in milliseconds from `now`; undefined when
 * absent or unreadable.
 */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

const MESSAGE_MAX = 300;

/** A provider's message, shortened and on one line, safe to show a caller. */
function quote(message: string | undefined): string {
  if (!message) return "";
  const line = message.replace(/\s+/g, " ").trim();
  return `: ${line.length > MESSAGE_MAX ? `${line.slice(0, MESSAGE_MAX)}…` : line}`;
}

/** A failure worth another attempt, with the delay the provider asked for (if any). */
interface Transient {
  reason: string;
  retryAfterMs: number | undefined;
  cause?: unknown;
}

/**
 * POSTs JSON and returns the parsed JSON answer. Each attempt has its own timeout, combined
 * with the call's signal. 429, 5xx, timeouts and connection failures are retried with
 * exponential backoff (or the provider's Retry-After), while the call's deadline leaves time;
 * then the call fails UNAVAILABLE. Other statuses map to INVALID_ARGUMENT (a malformed
 * request), FAILED_PRECONDITION (a refused prompt, a rejected key, an unknown model). An
 * abort of the call's own signal propagates unchanged.
 */
export async function postJson(request: JsonRequest, api: ProviderApi, policy: HttpPolicy): Promise<unknown> {
  for (let attempt = 0; ; attempt++) {
    const outcome = await attemptOnce(request, api, policy);
    if (!("reason" in outcome)) return outcome.json;
    const backoff = policy.backoffMs * 2 ** attempt * (0.8 + 0.4 * policy.random());
    const wait = outcome.retryAfterMs ?? backoff;
    const giveUp =
      attempt >= policy.retries ||
      wait > policy.maxRetryAfterMs ||
      (request.deadline !== undefined && policy.now() + wait >= request.deadline.getTime());
    if (giveUp) {
      throw new DomainError(
        "UNAVAILABLE",
        `the ${api.name} API is unavailable (${outcome.reason}); nothing was charged, retry later`,
        { retryAfterMs: outcome.retryAfterMs, cause: outcome.cause },
      );
    }
    await policy.sleep(wait, request.signal);
  }
}

async function attemptOnce(
  request: JsonRequest,
  api: ProviderApi,
  policy: HttpPolicy,
): Promise<{ json: unknown } | Transient> {
  const timeout = AbortSignal.timeout(policy.timeoutMs);
  const signal = AbortSignal.any([request.signal, timeout]);
  let response: Response;
  let text: string;
  try {
    response = await fetch(request.url, {
      method: "POST",
      headers: { "content-type": "application/json", ...request.headers },
      body: JSON.stringify(request.body),
      signal,
    });
    text = await response.text();
  } catch (err) {
    if (request.signal.aborted) throw err;
    if (timeout.aborted) return { reason: `no answer within ${policy.timeoutMs} ms`, retryAfterMs: undefined, cause: err };
    return { reason: "connection failed", retryAfterMs: undefined, cause: err };
  }
  let json: unknown;
  try {
    json = text === "" ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  const status = response.status;
  if (status >= 200 && status < 300) {
    if (json === undefined) {
      throw new DomainError("UNAVAILABLE", `the ${api.name} API answered HTTP ${status} without JSON; retry later`);
    }
    return { json };
  }
  const message = api.errorMessage(json);
  if (status === 429 || status >= 500) {
    return {
      reason: `HTTP ${status}${quote(message)}`,
      retryAfterMs: parseRetryAfter(response.headers.get("retry-after"), policy.now()) ?? api.retryDelayMs?.(json),
    };
  }
  if (status === 401 || status === 403) {
    throw new DomainError(
      "FAILED_PRECONDITION",
      `the ${api.name} API rejected the configured key (HTTP ${status}); check ${api.keyOption}`,
    );
  }
  if ((status === 400 || status === 422) && api.isRefusal(json)) {
    throw new DomainError("FAILED_PRECONDITION", `${api.name} refused the prompt${quote(message)}`);
  }
  if (status === 400 || status === 422) {
    throw new DomainError("INVALID_ARGUMENT", `${api.name} rejected the request${quote(message)}`, {
      violations: [{ field: "prompt", description: `rejected by ${api.name}${quote(message)}` }],
    });
  }
  throw new DomainError("FAILED_PRECONDITION", `the ${api.name} API answered HTTP ${status}${quote(message)}`);
}
