import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Metadata, Status } from "nice-grpc";
import { DomainError, UserFacingError } from "../errors.js";
import type { Logger } from "../logging/logger.js";
import { ADMISSION_TICKET_KEY, BRIDGE_KEY, INTERNAL_METADATA_PREFIX } from "../server/middleware/auth.js";
import { HTTP_BODY_MEMORY_FACTOR, type ByteBudget } from "../server/byte-budget.js";
import { callMadeWith } from "../server/in-process.js";
import { sendError } from "./errors.js";

/** What a route handler gets for one HTTP request. */
export interface HttpContext {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  /** Path parameters, by the names in the route's pattern, already percent-decoded. */
  params: Record<string, string>;
  /**
   * gRPC metadata for a call made on the caller's behalf: `authorization`, `x-api-key`,
   * `x-request-id`, `traceparent`, every `Grpc-Metadata-<name>` header as `<name>`, and the client's
   * address as `x-forwarded-for`.
   */
  metadata: Metadata;
  /** Aborts when the client goes away. */
  signal: AbortSignal;
  /**
   * Admits the request before any of its body is read: authenticates the credentials in
   * `metadata` for the route's RPC, checks the caller may make it, and charges one rate-limit
   * token. Calls made afterwards carry the bridge's admission ticket, so however many gRPC
   * calls the request makes, it costs one token. Runs once; later calls return the same answer.
   */
  admit(): Promise<void>;
  /**
   * Charges the admitted request one more rate-limit token, for work beyond one call (each
   * further file of a multi-file upload); rejects RESOURCE_EXHAUSTED when the budget is spent.
   */
  charge(): Promise<void>;
  /**
   * The whole request body, read only once the request is admitted, within `maxBodyBytes`
   * (larger: the route's `oversize` error, or 413), the body timeout (408) and the process's
   * budget of body bytes in flight (503 with Retry-After).
   */
  body(): Promise<Buffer>;
  /** The body as it arrives (admitted first), each chunk within the body timeout of the last. */
  stream(): AsyncIterable<Buffer>;
  /** The process's budget of body bytes in flight, for readers of `stream()` to hold what they buffer. */
  budget: ByteBudget;
}

/** One route: a method and a pattern such as `/v1/images/{id}/content` or `/compat/x/{rest=**}`. */
export interface Route {
  method: string;
  pattern: string;
  /**
   * The RPC (`/package.Service/Method`) whose access rules admit a request of this route
   * before its body is read; a route without one cannot read a body.
   */
  rpc?: string;
  /** The error for a body over the limit (default: 413 naming the limit in bytes). */
  oversize?: () => Error;
  /**
   * Whether a one-segment variable also matches an empty segment (`/v1/images/` for
   * `/v1/images/{id}`), as grpc-gateway matches it, so the route answers the empty value's
   * error rather than the path being unknown.
   */
  emptyParams?: boolean;
  handle(ctx: HttpContext): Promise<void>;
}

/** A matched route, for the router's callers. */
interface CompiledRoute extends Route {
  regex: RegExp;
  names: string[];
  /** Literal characters in the pattern: more specific routes win. */
  specificity: number;
  /** The pattern's text before its first variable: a path without it cannot match (no regex run). */
  prefix: string;
}

/** A request body over the limit. */
export class BodyTooLarge extends Error {
  constructor(readonly limit: number) {
    super(`request body is larger than ${limit} bytes`);
  }
}

/** The client reset or closed its connection before its body ended. */
export class ClientGone extends Error {
  constructor(cause?: unknown) {
    super("the client closed the connection before the request body ended", { cause });
  }
}

/** A request body that did not arrive in time. */
export class BodyTimeout extends Error {
  constructor(readonly timeoutMs: number) {
    super(`the request body did not arrive within ${Math.round(timeoutMs / 1000)} s`);
  }
}

/**
 * Turns `/v1/images/{id}/content` into a regex. `{name}` matches one segment; `{name=**}`
 * matches the rest of the path. A custom verb (`/v1/images:search`) is literal text.
 */
function compile(route: Route): CompiledRoute {
  const names: string[] = [];
  let source = "";
  let specificity = 0;
  const parts = route.pattern.split(/(\{[^}]+\})/);
  for (const part of parts) {
    const param = /^\{([^}=]+)(?:=([^}]*))?\}$/.exec(part);
    if (param) {
      names.push(param[1]);
      source += param[2] === "**" ? "(.+)" : route.emptyParams ? "([^/]*)" : "([^/]+)";
    } else {
      source += part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      specificity += part.length;
    }
  }
  return { ...route, regex: new RegExp(`^${source}$`), names, specificity, prefix: parts[0] };
}

/** Writes a JSON response. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/** Routes requests to the first matching route of the most specific pattern. */
export class Router {
  private readonly routes: CompiledRoute[] = [];

  add(...routes: Route[]): void {
    for (const route of routes) this.routes.push(compile(route));
    this.routes.sort((a, b) => b.specificity - a.specificity);
  }

  /** The route for a method and path, or whether the path exists under another method. */
  match(method: string, path: string): { route: CompiledRoute; params: Record<string, string> } | "wrong_method" | undefined {
    let pathKnown = false;
    for (const route of this.routes) {
      if (!path.startsWith(route.prefix)) continue;
      const m = route.regex.exec(path);
      if (!m) continue;
      if (route.method !== method && !(method === "HEAD" && route.method === "GET")) {
        pathKnown = true;
        continue;
      }
      const params: Record<string, string> = {};
      for (let i = 0; i < route.names.length; i++) {
        const text = m[i + 1];
        params[route.names[i]] = text.includes("%") ? decodeURIComponent(text) : text;
      }
      // decodeURIComponent throws on a malformed escape; the server answers that with a 400.
      return { route, params };
    }
    return pathKnown ? "wrong_method" : undefined;
  }
}

/** Printable ASCII, what gRPC allows in a text metadata value. */
const METADATA_TEXT = /^[\x20-\x7e]*$/;
/** What gRPC allows in a metadata key. */
const METADATA_KEY = /^[0-9a-z_.-]+$/;

/**
 * Names HTTP/2 forbids or gRPC owns: a gRPC call could not carry them as metadata (a
 * connection-specific header makes an HTTP/2 request fail), so they are dropped, and a call
 * on the caller's behalf sees the metadata a gRPC call would.
 */
const RESERVED_METADATA = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "te",
  "host",
  "content-type",
  "content-length",
  "user-agent",
]);

/**
 * The metadata a call on the HTTP caller's behalf carries. Headers gRPC could not carry (a
 * key it rejects, a value with control or non-ASCII characters) are left out, so the call
 * fails as if they were absent rather than the bridge failing; `-bin` values are base64,
 * as grpc-gateway reads them.
 */
export function metadataOf(req: IncomingMessage): Metadata {
  const metadata = Metadata();
  const put = (key: string, text: string) => {
    if (!METADATA_KEY.test(key) || RESERVED_METADATA.has(key)) return;
    if (key.startsWith("grpc-") || key.startsWith(INTERNAL_METADATA_PREFIX)) return;
    if (key.endsWith("-bin")) metadata.append(key, Buffer.from(text, "base64"));
    else if (METADATA_TEXT.test(text)) metadata.append(key, text);
  };
  // headersDistinct keeps every copy of a header Node would otherwise drop (a second
  // Authorization), so two credentials are seen as two, whatever their order.
  for (const [name, values] of Object.entries(req.headersDistinct)) {
    if (values === undefined) continue;
    for (const text of values) {
      // traceparent: a traced HTTP client's call continues its trace on the gRPC side.
      if (name === "authorization" || name === "x-api-key" || name === "x-request-id" || name === "traceparent") put(name, text);
      else if (name.startsWith("grpc-metadata-")) put(name.slice("grpc-metadata-".length), text);
    }
  }
  const address = req.socket.remoteAddress;
  if (address) metadata.set("x-forwarded-for", address);
  return metadata;
}

/** The rule the gRPC server's logging applies to a caller's `x-request-id` before adopting it. */
const REQUEST_ID = /^[\w.:-]{1,128}$/;

/** The client's `x-request-id` when it sent a sane one, otherwise a new UUID. */
function requestIdOf(req: IncomingMessage): string {
  const sent = req.headers["x-request-id"];
  return typeof sent === "string" && REQUEST_ID.test(sent) ? sent : randomUUID();
}

/**
 * Lets a request in for an RPC (see HttpContext.admit); throws a DomainError to refuse it.
 * Answers how to charge the request for more.
 */
export type Admit = (rpc: string, metadata: Metadata, clientAddress: string) => Promise<{ charge: () => Promise<void> }>;

export interface HttpServerOptions {
  host: string;
  port: number;
  router: Router;
  logger: Logger;
  maxBodyBytes: number;
  /** Admits a request before its body is read. */
  admit: Admit;
  /** The ticket calls of an admitted request carry (ADMISSION_TICKET_KEY). */
  ticket: string;
  /** Bytes of request bodies held at once, across all requests. */
  budget: ByteBudget;
  /** Time to receive a whole body (or, streamed, each chunk). */
  bodyTimeoutMs: number;
  /** Time to receive the request headers. */
  headersTimeoutMs: number;
  /** How long an idle keep-alive connection stays open. */
  keepAliveTimeoutMs: number;
  /**
   * Told of each request of a route with an RPC that was answered with an error before any
   * call was made for it (admission, a body over the limit or too slow, a busy server, a
   * malformed request), with the gRPC code it stands for: the call metrics count it.
   */
  refused?: (rpc: string, code: Status) => void;
}

/** A started HTTP server. */
export interface HttpServer {
  port: number;
  close(): Promise<void>;
}

/**
 * The HTTP server of the JSON bridge: matches a route, runs it, and answers grpc-gateway's
 * JSON errors for unknown paths (404, code 5) and known paths under another method
 * (501, code 12). A handler that throws gets a 500 with a generic message.
 */
export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const { router, logger, maxBodyBytes, budget, bodyTimeoutMs } = options;
  // Header and body deadlines are checked every second (Node's default is every 30 s).
  const server: Server = createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    try {
      serve(req, res);
    } catch (error) {
      // A request line or header nothing downstream could use (a malformed escape, a target
      // that is not a path): the client's mistake, never the process's end.
      logger.debug("unusable http request", { error, url: req.url });
      if (!res.headersSent) sendJson(res, 400, { code: 3, message: "malformed request", details: [] });
      else res.destroy();
    }
  });
  // Headers must arrive in time; bodies are timed by the reader (a streamed body may
  // legitimately last long, as long as each part comes in time).
  // A client that sends `Expect: 100-continue` waits for the go-ahead before its body: it is
  // given only once the call is admitted and its declared length fits (readBody, streamBody),
  // so a refusal reaches it as an answer instead of a cut connection mid-upload.
  server.on("checkContinue", (req, res) => server.emit("request", req, res));
  server.headersTimeout = options.headersTimeoutMs;
  server.requestTimeout = 0;
  server.keepAliveTimeout = options.keepAliveTimeoutMs;
  const serve = (req: IncomingMessage, res: ServerResponse) => {
    // Every answer carries the request's id, refusals and unknown paths included, and every
    // call made on the request's behalf sends the same one, so the server's log lines for the
    // call carry it too.
    const requestId = requestIdOf(req);
    res.setHeader("x-request-id", requestId);
    const target = req.url ?? "/";
    if (!target.startsWith("/")) throw new Error("request target is not a path");
    const url = new URL(`http://localhost${target}`);
    // A body that is not read to its end (a refused request) leaves the connection unusable:
    // it is closed after the answer rather than its rest being read. Reading it all re-opens.
    const keepAlive = res.shouldKeepAlive;
    if (hasBody(req)) res.shouldKeepAlive = false;
    const found = router.match(req.method ?? "GET", url.pathname);
    if (found === undefined) return sendJson(res, 404, { code: 5, message: "Not Found", details: [] });
    if (found === "wrong_method") return sendJson(res, 501, { code: 12, message: "Method Not Allowed", details: [] });
    const route = found.route;
    const controller = new AbortController();
    let held = 0;
    // The code of a refusal of the request by the bridge itself (admission, reading the body).
    let refusal: Status | undefined;
    const refusing = (error: unknown): never => {
      refusal ??= refusalCode(error);
      throw error;
    };
    res.on("close", () => {
      budget.give(held);
      held = 0;
      if (!res.writableFinished) controller.abort(new Error("client went away"));
      // A request answered with an error before any call: counted as a call would have been.
      if (route.rpc && options.refused && res.headersSent && res.statusCode >= 400 && !callMadeWith(metadata)) {
        options.refused(route.rpc, refusal ?? codeOfHttpStatus(res.statusCode));
      }
    });
    let body: Promise<Buffer> | undefined;
    let admitted: Promise<void> | undefined;
    let charge: (() => Promise<void>) | undefined;
    const metadata = metadataOf(req);
    metadata.set("x-request-id", requestId);
    // Calls on the client's behalf may name its address (x-forwarded-for): the gRPC side
    // believes that only of calls carrying this process's secret.
    metadata.set(BRIDGE_KEY, options.ticket);
    const admit = () =>
      (admitted ??= (async () => {
        if (!route.rpc) throw new Error(`route ${route.method} ${route.pattern} reads a body but names no RPC to admit it by`);
        ({ charge } = await options.admit(route.rpc, metadata, req.socket.remoteAddress ?? "").catch(refusing));
        metadata.set(ADMISSION_TICKET_KEY, options.ticket);
      })());
    const reading = {
      limit: maxBodyBytes,
      timeoutMs: bodyTimeoutMs,
      budget,
      hold: (bytes: number) => {
        budget.take(bytes * HTTP_BODY_MEMORY_FACTOR);
        held += bytes * HTTP_BODY_MEMORY_FACTOR;
      },
      oversize: route.oversize,
      proceed: () => expectContinue(req, res),
    };
    const ctx: HttpContext = {
      req,
      res,
      url,
      params: found.params,
      metadata,
      signal: controller.signal,
      admit,
      charge: async () => {
        if (!charge) throw new Error("charge() before the request was admitted");
        await charge();
      },
      body: () =>
        (body ??= admit().then(async () => {
          const bytes = await readBody(req, reading).catch(refusing);
          res.shouldKeepAlive = keepAlive;
          return bytes;
        })),
      stream: () =>
        streamBody(req, async () => {
          await admit();
          expectContinue(req, res);
        }, bodyTimeoutMs, () => (res.shouldKeepAlive = keepAlive)),
      budget,
    };
    route.handle(ctx).catch((error: unknown) => {
      // The client went away: nobody is left to answer, and nothing went wrong here.
      if (controller.signal.aborted || error instanceof ClientGone) return;
      if (error instanceof BodyTimeout) {
        if (!res.headersSent) sendJson(res, 408, { code: 4, message: error.message, details: [] });
        else res.destroy();
        return;
      }
      if (error instanceof BodyTooLarge || error instanceof DomainError) {
        // A refusal the route did not answer in its own shape (admission, a busy server).
        if (!res.headersSent) sendError(res, error);
        else res.destroy();
        return;
      }
      logger.error("http handler failed", { error, method: req.method, path: url.pathname });
      if (!res.headersSent) sendJson(res, 500, { code: 13, message: "internal error", details: [] });
      else res.destroy();
    });
  };
  server.listen(options.port, options.host);
  await once(server, "listening").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "EADDRINUSE") {
      throw new UserFacingError(
        `HTTP port ${options.host}:${options.port} is already in use (another glimpse?); ` +
          `stop that process or set GLIMPSE_HTTP_PORT to a free port`,
      );
    }
    throw error;
  });
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      server.closeIdleConnections();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Streams still open after the gRPC drain are cut.
      setTimeout(() => server.closeAllConnections(), 1000).unref();
      await closed;
    },
  };
}

/** The gRPC code of the bridge's own refusal of a request (see statusOfError in errors.ts). */
function refusalCode(error: unknown): Status | undefined {
  if (error instanceof DomainError) return Status[error.code];
  if (error instanceof BodyTooLarge) return Status.RESOURCE_EXHAUSTED;
  if (error instanceof BodyTimeout) return Status.DEADLINE_EXCEEDED;
  if (error instanceof ClientGone) return Status.CANCELLED;
  return undefined;
}

/** The gRPC code an error answer's HTTP status stands for (grpc-gateway's mapping, read backwards). */
function codeOfHttpStatus(status: number): Status {
  return HTTP_CODES[status] ?? (status >= 500 ? Status.INTERNAL : Status.FAILED_PRECONDITION);
}
const HTTP_CODES: Record<number, Status> = {
  400: Status.INVALID_ARGUMENT,
  401: Status.UNAUTHENTICATED,
  403: Status.PERMISSION_DENIED,
  404: Status.NOT_FOUND,
  408: Status.DEADLINE_EXCEEDED,
  409: Status.ALREADY_EXISTS,
  413: Status.RESOURCE_EXHAUSTED,
  416: Status.OUT_OF_RANGE,
  429: Status.RESOURCE_EXHAUSTED,
  499: Status.CANCELLED,
  500: Status.INTERNAL,
  501: Status.UNIMPLEMENTED,
  503: Status.UNAVAILABLE,
  504: Status.DEADLINE_EXCEEDED,
};

/** Tells a client waiting on `Expect: 100-continue` to send its body (once per request). */
function expectContinue(req: IncomingMessage, res: ServerResponse): void {
  if (!/^100-continue$/i.test(req.headers.expect ?? "") || res.headersSent || continued.has(res)) return;
  continued.add(res);
  res.writeContinue();
}
const continued = new WeakSet<ServerResponse>();

/** Whether a request says it carries a body. */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  return req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0");
}

interface BodyReading {
  limit: number;
  timeoutMs: number;
  /** Reserves bytes of the process's body budget for this request (throws when full). */
  hold(bytes: number): void;
  oversize?: () => Error;
  /** Lets the body come: called once it is known to be wanted (admitted, declared length fits). */
  proceed(): void;
}

/**
 * Reads a whole body: refused at once when its declared length is over the limit, reserved
 * in the budget up front when declared (else as it arrives), and abandoned (the socket is
 * paused, the connection closed after the answer) on any failure, so nothing of a refused
 * body is held. Every failure of the request stream ends here as a rejection.
 */
function readBody(req: IncomingMessage, reading: BodyReading): Promise<Buffer> {
  const { limit } = reading;
  const tooLarge = () => reading.oversize?.() ?? new BodyTooLarge(limit);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let reserved = 0;
    let done = false;
    const finish = (error: unknown, result?: Buffer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.off("data", onData).off("end", onEnd).off("error", onError).off("close", onClose);
      if (error !== undefined) {
        req.pause();
        chunks.length = 0;
        reject(error);
      } else resolve(result!);
    };
    const timer = setTimeout(() => finish(new BodyTimeout(reading.timeoutMs)), reading.timeoutMs);
    /** Holds the body's first `upTo` bytes in the budget; false (and the read ends) when full. */
    const reserve = (upTo: number): boolean => {
      try {
        if (upTo > reserved) reading.hold(upTo - reserved);
        reserved = Math.max(reserved, upTo);
        return true;
      } catch (error) {
        finish(error);
        return false;
      }
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return finish(tooLarge());
      if (reserve(size)) chunks.push(chunk);
    };
    const onEnd = () => finish(undefined, Buffer.concat(chunks, size));
    const onError = (error: Error) => finish(new ClientGone(error));
    const onClose = () => finish(new ClientGone());
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > limit) return finish(tooLarge());
    if (Number.isFinite(declared) && declared > 0 && !reserve(declared)) return;
    reading.proceed();
    req.on("data", onData).on("end", onEnd).on("error", onError).on("close", onClose);
    if (req.complete && req.readableEnded) finish(undefined, Buffer.alloc(0));
  });
}

/**
 * A streamed body, chunk by chunk after admission; a chunk that takes longer than the body
 * timeout to arrive ends the request (and its connection).
 */
async function* streamBody(
  req: IncomingMessage,
  admit: () => Promise<void>,
  timeoutMs: number,
  ended: () => void,
): AsyncGenerator<Buffer> {
  await admit();
  const timer = setTimeout(() => req.destroy(new BodyTimeout(timeoutMs)), timeoutMs);
  try {
    for await (const chunk of req) {
      timer.refresh();
      yield chunk as Buffer;
    }
    ended();
  } finally {
    clearTimeout(timer);
  }
}
