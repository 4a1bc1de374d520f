import { randomUUID } from "node:crypto";
import {
  createChannel,
  createClient,
  Metadata,
  type CallOptions,
  type Channel,
  type ChannelCredentials,
  type ChannelOptions,
  type Client,
  type CompatServiceDefinition,
} from "nice-grpc";
import { AccountServiceDefinition } from "../gen/glimpse/account/v1/account_service.js";
import { GenerationServiceDefinition } from "../gen/glimpse/generation/v1/generation_service.js";
import { ImageServiceDefinition } from "../gen/glimpse/image/v1/image_service.js";
import { ClientError, Status } from "nice-grpc-common";
import { GlimpseError, toGlimpseError } from "./errors.js";
import { DEFAULT_RETRY, retryDelay, sleep, type RetryEvent, type RetryPolicy } from "./retry.js";

export { GlimpseError, decodeDetails } from "./errors.js";
export { DEFAULT_RETRY, type RetryEvent, type RetryPolicy } from "./retry.js";
export { ClientError, Status } from "nice-grpc-common";
export * as image from "../gen/glimpse/image/v1/image_service.js";
export * as imageTypes from "../gen/glimpse/image/v1/image.js";
export * as search from "../gen/glimpse/image/v1/search.js";
export * as generation from "../gen/glimpse/generation/v1/generation_service.js";
export * as account from "../gen/glimpse/account/v1/account_service.js";

/** How {@link createGlimpseClient} connects and behaves. */
export interface GlimpseClientOptions {
  /**
   * `host:port` of a glimpse gRPC server (`https://host:port` for TLS), or several: each call
   * (and each retry of a call) goes to the next one in turn.
   */
  address: string | readonly string[];
  /** API key, sent as `authorization: Bearer <key>` unless a call sends its own. */
  key?: string;
  /** Deadline of a call that sets none, in milliseconds, retries included; 0: none. Default 30000. Client-streaming calls (BatchUploadImages) get no default deadline. */
  deadlineMs?: number;
  /** Retries of UNAVAILABLE and RESOURCE_EXHAUSTED (see {@link RetryPolicy}); false turns them off. */
  retry?: Partial<RetryPolicy> | false;
  /** Called before each retry (after the failed attempt, before the wait). */
  onRetry?: (event: RetryEvent) => void;
  /**
   * HTTP/2 keepalive pings on an idle-looking connection, so a dead peer is noticed: every
   * `timeMs` (default 300000, the server refuses more frequent pings), closing the connection
   * after `timeoutMs` without an answer (default 20000). false: no pings.
   */
  keepalive?: { timeMs?: number; timeoutMs?: number } | false;
  /** Largest response message accepted, in bytes. Default 64 MiB (image content can be large). */
  maxReceiveMessageBytes?: number;
  /** TLS or other credentials; default: plain text, or TLS for `https://` addresses. */
  credentials?: ChannelCredentials;
  /** Further grpc-js channel options. */
  channelOptions?: ChannelOptions;
}

/** Options of one call, beside nice-grpc's (signal, metadata, onHeader, onTrailer). */
export interface GlimpseCallOptions {
  /** When the call, retries included, must be done; default now + the client's `deadlineMs`. */
  deadline?: Date;
  /** This call's retry policy (merged over the client's), or false for a single attempt. */
  retry?: Partial<RetryPolicy> | false;
}

/** A service's client: every method of the generated nice-grpc client. */
export type ServiceClient<D extends CompatServiceDefinition> = Client<D, GlimpseCallOptions>;

/** A connected client for the three glimpse services. */
export interface GlimpseClient {
  images: ServiceClient<typeof ImageServiceDefinition>;
  generation: ServiceClient<typeof GenerationServiceDefinition>;
  accounts: ServiceClient<typeof AccountServiceDefinition>;
  /** Closes the connections; calls in flight fail with CANCELLED. */
  close(): void;
}

/** Requests whose empty `requestId` the client fills in, so retrying them is safe (AIP-155). */
const IDEMPOTENCY_KEYED = new Set([
  "/glimpse.image.v1.ImageService/UploadImage",
  "/glimpse.image.v1.ImageService/AddComment",
  "/glimpse.generation.v1.GenerationService/GenerateImage",
  "/glimpse.account.v1.AccountService/GrantCredits",
]);

/**
 * What the client needs of a generated method definition. ts-proto's definitions name the
 * method (`name`) and leave its path to the service's `fullName`; grpc-js's give the `path`.
 */
interface MethodDefinition {
  name?: string;
  path?: string;
  requestStream: boolean;
  responseStream: boolean;
}

/** A method with its gRPC path, such as `/glimpse.image.v1.ImageService/UploadImage`. */
interface Method {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
}

/**
 * Connects to glimpse. Calls carry the key, get the default deadline, and are retried on
 * UNAVAILABLE and RESOURCE_EXHAUSTED with backoff, waiting as long as the server's RetryInfo
 * asks; a retried UploadImage, GenerateImage, AddComment or GrantCredits carries one request
 * id, generated when the caller gave none, so it is never applied twice. Errors are
 * {@link GlimpseError}s with the decoded BadRequest and RetryInfo; server streams are async
 * iterables (a stream is retried only before its first message).
 *
 * @example
 * const glimpse = createGlimpseClient({ address: "127.0.0.1:50051", key: process.env.GLIMPSE_API_KEY });
 * const { results } = await glimpse.images.searchImages({ query: { $case: "prompt", value: "a red car" }, limit: 5 });
 */
export function createGlimpseClient(options: GlimpseClientOptions): GlimpseClient {
  const addresses = typeof options.address === "string" ? [options.address] : [...options.address];
  if (addresses.length === 0 || addresses.some((a) => a.trim() === "")) {
    throw new TypeError("createGlimpseClient: address must name at least one host:port");
  }
  const keepalive = options.keepalive === false ? undefined : { timeMs: 300_000, timeoutMs: 20_000, ...options.keepalive };
  const channelOptions: ChannelOptions = {
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? 64 * 1024 * 1024,
    ...(keepalive ? { "grpc.keepalive_time_ms": keepalive.timeMs, "grpc.keepalive_timeout_ms": keepalive.timeoutMs } : {}),
    ...options.channelOptions,
  };
  const channels = addresses.map((address) => createChannel(address.trim(), options.credentials, channelOptions));
  let turn = 0;
  const context: CallContext = {
    key: options.key,
    deadlineMs: options.deadlineMs ?? 30_000,
    retry: options.retry === false ? { ...DEFAULT_RETRY, maxAttempts: 1 } : { ...DEFAULT_RETRY, ...options.retry },
    onRetry: options.onRetry,
    next: () => channels[turn++ % channels.length],
  };
  return {
    images: wrapService(ImageServiceDefinition, context),
    generation: wrapService(GenerationServiceDefinition, context),
    accounts: wrapService(AccountServiceDefinition, context),
    close() {
      for (const channel of channels) channel.close();
    },
  };
}

interface CallContext {
  key: string | undefined;
  deadlineMs: number;
  retry: RetryPolicy;
  onRetry: ((event: RetryEvent) => void) | undefined;
  /** The channel for the next attempt (round-robin). */
  next: () => Channel;
}

/** nice-grpc's call options plus a deadline, which nice-grpc itself leaves to middleware. */
type AnyCallOptions = CallOptions & GlimpseCallOptions & { deadline?: Date };
// The generated clients' methods, called by name; their types are restored by wrapService's signature.
type AnyClient = Record<string, (request: unknown, options?: CallOptions) => unknown>;

function wrapService<D extends CompatServiceDefinition>(definition: D, context: CallContext): ServiceClient<D> {
  // One nice-grpc client per channel, made on first use.
  const clients = new Map<Channel, AnyClient>();
  const clientFor = (channel: Channel): AnyClient => {
    let client = clients.get(channel);
    if (!client) {
      client = createClient(definition as never, channel) as unknown as AnyClient;
      clients.set(channel, client);
    }
    return client;
  };
  const out: Record<string, unknown> = {};
  const { fullName, methods } = definition as { fullName?: string; methods: Record<string, MethodDefinition> };
  for (const [name, generated] of Object.entries(methods)) {
    const method: Method = {
      path: generated.path ?? `/${fullName}/${generated.name}`,
      requestStream: generated.requestStream,
      responseStream: generated.responseStream,
    };
    const call = (request: unknown, options: CallOptions) => clientFor(context.next())[name](request, options);
    if (method.requestStream) {
      // A request stream cannot be replayed: one attempt, and no default deadline.
      out[name] = (request: unknown, options: AnyCallOptions = {}) =>
        streamAttempt(context, method.path, call as never, request, options, options.deadline, 1);
    } else if (method.responseStream) {
      out[name] = (request: unknown, options: AnyCallOptions = {}) => serverStream(context, method, call as never, request, options);
    } else {
      out[name] = (request: unknown, options: AnyCallOptions = {}) => unary(context, method, call as never, request, options);
    }
  }
  return out as unknown as ServiceClient<D>;
}

/**
 * One attempt's nice-grpc options: the key, the deadline sent as `grpc-timeout` (so the server
 * stops work the caller gave up on) and enforced here by aborting, and a trailer capture.
 * `finish` must be called when the attempt ends; `timedOut` says whether the deadline hit.
 */
function attemptOptions(
  context: CallContext,
  options: AnyCallOptions,
  deadline: Date | undefined,
): { options: CallOptions; trailer: () => Metadata | undefined; timedOut: () => boolean; finish: () => void } {
  const { retry: _retry, deadline: _deadline, signal, ...rest } = options;
  const metadata = Metadata(options.metadata);
  if (context.key && !metadata.has("authorization") && !metadata.has("x-api-key")) {
    metadata.set("authorization", `Bearer ${context.key}`);
  }
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal?.reason);
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  if (deadline) {
    const remaining = Math.max(1, deadline.getTime() - Date.now());
    metadata.set("grpc-timeout", `${Math.min(remaining, 99_999_999)}m`);
    timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new Error("deadline exceeded"));
    }, remaining);
  }
  let trailer: Metadata | undefined;
  return {
    options: {
      ...rest,
      metadata,
      signal: controller.signal,
      onTrailer: (t) => {
        trailer = t;
        options.onTrailer?.(t);
      },
    },
    trailer: () => trailer,
    timedOut: () => timedOut,
    finish: () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    },
  };
}

/** The error an attempt ended with, as the caller should see it. */
function attemptError(err: unknown, path: string, attempt: { trailer: () => Metadata | undefined; timedOut: () => boolean }, n: number): unknown {
  if (attempt.timedOut() && !(err instanceof ClientError)) {
    return new GlimpseError(path, Status.DEADLINE_EXCEEDED, "deadline exceeded", { attempts: n });
  }
  return toGlimpseError(err, attempt.trailer(), n);
}

function policyOf(context: CallContext, options: AnyCallOptions): RetryPolicy {
  if (options.retry === false) return { ...context.retry, maxAttempts: 1 };
  return { ...context.retry, ...options.retry };
}

function deadlineOf(context: CallContext, options: AnyCallOptions): Date | undefined {
  return options.deadline ?? (context.deadlineMs > 0 ? new Date(Date.now() + context.deadlineMs) : undefined);
}

/** A request with a generated request id when the method takes one and the caller left it empty. */
function withRequestId(path: string, request: unknown): unknown {
  if (!IDEMPOTENCY_KEYED.has(path) || typeof request !== "object" || request === null) return request;
  const r = request as { requestId?: string };
  return r.requestId ? request : { ...r, requestId: randomUUID() };
}

async function unary(
  context: CallContext,
  method: Method,
  call: (request: unknown, options: CallOptions) => Promise<unknown>,
  request: unknown,
  options: AnyCallOptions,
): Promise<unknown> {
  const policy = policyOf(context, options);
  const sent = policy.maxAttempts > 1 ? withRequestId(method.path, request) : request;
  // One deadline for every attempt: retries never extend the call.
  const deadline = deadlineOf(context, options);
  for (let n = 1; ; n++) {
    const attempt = attemptOptions(context, options, deadline);
    try {
      return await call(sent, attempt.options);
    } catch (err) {
      const error = attemptError(err, method.path, attempt, n);
      if (!(error instanceof GlimpseError)) throw error;
      const delay = retryDelay(policy, error, n, deadline);
      if (delay === undefined) throw error;
      context.onRetry?.({ path: method.path, attempt: n, error, delayMs: delay });
      await sleep(delay, options.signal);
    } finally {
      attempt.finish();
    }
  }
}

async function* serverStream(
  context: CallContext,
  method: Method,
  call: (request: unknown, options: CallOptions) => AsyncIterable<unknown>,
  request: unknown,
  options: AnyCallOptions,
): AsyncGenerator<unknown> {
  const policy = policyOf(context, options);
  const deadline = deadlineOf(context, options);
  for (let n = 1; ; n++) {
    let received = false;
    try {
      for await (const message of streamAttempt(context, method.path, call, request, options, deadline, n)) {
        received = true;
        yield message;
      }
      return;
    } catch (err) {
      if (!(err instanceof GlimpseError) || received) throw err;
      const delay = retryDelay(policy, err, n, deadline);
      if (delay === undefined) throw err;
      context.onRetry?.({ path: method.path, attempt: n, error: err, delayMs: delay });
      await sleep(delay, options.signal);
    }
  }
}

/** One attempt of a streaming call, its gRPC errors turned into GlimpseErrors. */
async function* streamAttempt(
  context: CallContext,
  path: string,
  call: (request: unknown, options: CallOptions) => AsyncIterable<unknown>,
  request: unknown,
  options: AnyCallOptions,
  deadline: Date | undefined,
  n: number,
): AsyncGenerator<unknown> {
  const attempt = attemptOptions(context, options, deadline);
  try {
    yield* call(request, attempt.options);
  } catch (err) {
    throw attemptError(err, path, attempt, n);
  } finally {
    attempt.finish();
  }
}
