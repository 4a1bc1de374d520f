import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Metadata } from "nice-grpc";
import type { Logger } from "../logging/logger.js";

/** What a route handler gets for one HTTP request. */
export interface HttpContext {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  /** Path parameters, by the names in the route's pattern, already percent-decoded. */
  params: Record<string, string>;
  /**
   * gRPC metadata for a call made on the caller's behalf: `authorization`, `x-api-key`,
   * `x-request-id`, every `Grpc-Metadata-<name>` header as `<name>`, and the client's
   * address as `x-forwarded-for`.
   */
  metadata: Metadata;
  /** Aborts when the client goes away. */
  signal: AbortSignal;
  /** The whole request body (limited to `maxBodyBytes`; larger is a 413). */
  body(): Promise<Buffer>;
}

/** One route: a method and a pattern such as `/v1/images/{id}/content` or `/compat/x/{rest=**}`. */
export interface Route {
  method: string;
  pattern: string;
  handle(ctx: HttpContext): Promise<void>;
}

/** A matched route, for the router's callers. */
interface CompiledRoute extends Route {
  regex: RegExp;
  names: string[];
  /** Literal characters in the pattern: more specific routes win. */
  specificity: number;
}

/** A request body over the limit. */
export class BodyTooLarge extends Error {
  constructor(readonly limit: number) {
    super(`request body is larger than ${limit} bytes`);
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
      source += param[2] === "**" ? "(.+)" : "([^/]+)";
    } else {
      source += part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      specificity += part.length;
    }
  }
  return { ...route, regex: new RegExp(`^${source}$`), names, specificity };
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
      const m = route.regex.exec(path);
      if (!m) continue;
      if (route.method !== method && !(method === "HEAD" && route.method === "GET")) {
        pathKnown = true;
        continue;
      }
      const params: Record<string, string> = {};
      route.names.forEach((name, i) => (params[name] = decodeURIComponent(m[i + 1])));
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
 * The metadata a call on the HTTP caller's behalf carries. Headers gRPC could not carry (a
 * key it rejects, a value with control or non-ASCII characters) are left out, so the call
 * fails as if they were absent rather than the bridge failing; `-bin` values are base64,
 * as grpc-gateway reads them.
 */
export function metadataOf(req: IncomingMessage): Metadata {
  const metadata = Metadata();
  const put = (key: string, text: string) => {
    if (!METADATA_KEY.test(key) || key.startsWith("grpc-")) return;
    if (key.endsWith("-bin")) metadata.set(key, Buffer.from(text, "base64"));
    else if (METADATA_TEXT.test(text)) metadata.set(key, text);
  };
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    const text = Array.isArray(value) ? value.join(", ") : value;
    if (name === "authorization" || name === "x-api-key" || name === "x-request-id") put(name, text);
    else if (name.startsWith("grpc-metadata-")) put(name.slice("grpc-metadata-".length), text);
  }
  const address = req.socket.remoteAddress;
  if (address) metadata.set("x-forwarded-for", address);
  return metadata;
}

export interface HttpServerOptions {
  host: string;
  port: number;
  router: Router;
  logger: Logger;
  maxBodyBytes: number;
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
  const { router, logger, maxBodyBytes } = options;
  const server: Server = createServer((req, res) => {
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
  const serve = (req: IncomingMessage, res: ServerResponse) => {
    const target = req.url ?? "/";
    if (!target.startsWith("/")) throw new Error("request target is not a path");
    const url = new URL(`http://localhost${target}`);
    const found = router.match(req.method ?? "GET", url.pathname);
    if (found === undefined) return sendJson(res, 404, { code: 5, message: "Not Found", details: [] });
    if (found === "wrong_method") return sendJson(res, 501, { code: 12, message: "Method Not Allowed", details: [] });
    const controller = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) controller.abort(new Error("client went away"));
    });
    let body: Promise<Buffer> | undefined;
    const ctx: HttpContext = {
      req,
      res,
      url,
      params: found.params,
      metadata: metadataOf(req),
      signal: controller.signal,
      body: () => (body ??= readBody(req, maxBodyBytes)),
    };
    found.route.handle(ctx).catch((error: unknown) => {
      if (error instanceof BodyTooLarge) {
        // The rest of the body is not read, so the connection cannot be reused.
        if (!res.headersSent) sendJson(res, 413, { code: 8, message: error.message, details: [] }, { connection: "close" });
        return;
      }
      logger.error("http handler failed", { error, method: req.method, path: url.pathname });
      if (!res.headersSent) sendJson(res, 500, { code: 13, message: "internal error", details: [] });
      else res.destroy();
    });
  };
  server.listen(options.port, options.host);
  await once(server, "listening");
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

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new BodyTooLarge(limit);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
