import { once } from "node:events";
import type { IncomingMessage } from "node:http";
import { DomainError } from "../errors.js";
import { uploadTooLarge } from "../catalogue/limits.js";
import { loadContract, type Contract, type HttpBinding, type MethodInfo } from "./descriptors.js";
import { RpcError, sendError, sendWithMetadata, statusJson } from "./errors.js";
import type { RouteDeps } from "./gateway.js";
import { BodyTimeout, BodyTooLarge, ClientGone, type HttpContext, type Route } from "./http.js";
import { fieldToJson, messageToJson } from "./json-out.js";
import { acceptsTrailers, metadataHeaders, metadataTrailers } from "./metadata-out.js";
import { requestFromHttp, requestStreamFromHttp } from "./request.js";
import type { BridgeRpc, CallSettings, RpcStream } from "./rpc.js";
import { decodeMessage, encodeMessage, schemaOf, type Plain } from "./schema.js";

/**
 * grpc-gateway-style routes for every RPC that carries a google.api.http annotation, derived
 * at start from the contract's descriptors: each binding (additional_bindings included)
 * becomes a route. A request is read into the request message (proto3 JSON body, multipart or
 * form fields, path and query parameters), encoded, and sent as raw bytes to the gRPC
 * server's middleware chain in-process (see rpc.ts), so authentication, rate limits, deadlines, logging and error mapping are the
 * gRPC server's own; the answer is decoded and written as grpc-gateway v2's default marshaler
 * writes it.
 *
 * - Unary RPCs answer one JSON object; a google.api.HttpBody answer is sent as raw bytes with
 *   its content type.
 * - Server-streaming RPCs answer newline-delimited JSON (`application/x-ndjson`), one
 *   `{"result": ...}` line per message, written as it arrives. A call that fails before the
 *   first message answers its HTTP status and one `{"error": {code, message, details}}` line
 *   (grpc-gateway's stream error chunk); a failure after it adds that line (the status stays
 *   200). A request the bridge cannot read (bad JSON, a bad parameter) is answered before any
 *   call, with the plain google.rpc.Status body, as grpc-gateway answers it.
 * - Client-streaming and bidi RPCs (BatchUploadImages) take a stream of JSON objects as the
 *   body (newline-delimited JSON), one request message each, sent as they arrive, as
 *   grpc-gateway does; bidi answers stream back as NDJSON while the body is still arriving.
 * - `Grpc-Timeout` (gRPC's format, e.g. `5S`, `250m`) becomes the call's deadline; the call is
 *   cancelled when the HTTP client goes away; the server's `x-request-id` is echoed.
 * - The call's response headers are forwarded as `Grpc-Metadata-<Key>`, and its trailers as
 *   HTTP trailers `Grpc-Trailer-<Key>` when the request has `TE: trailers` (unary calls), as
 *   grpc-gateway's default header matchers do.
 */
export function nativeRoutes(deps: RouteDeps): Route[] {
  const contract = loadContract(deps.descriptors);
  const rpc = deps.rpc;
  const routes: Route[] = [];
  for (const service of contract.services) {
    for (const method of service.methods) {
      for (const binding of method.bindings) {
        routes.push({
          method: binding.method,
          pattern: routePattern(binding, method),
          rpc: method.path,
          oversize: oversizeError(contract, method, deps.maxUploadBytes),
          // `/v1/images/` reaches GetImage and is answered 400 for the empty id, as by grpc-gateway.
          emptyParams: true,
          handle: (ctx) => serve(ctx, { contract, rpc, method, binding, deps }),
        });
      }
    }
  }
  return routes;
}

interface Target {
  contract: Contract;
  rpc: BridgeRpc;
  method: MethodInfo;
  binding: HttpBinding;
  deps: RouteDeps;
}

const NDJSON = "application/x-ndjson";
const REQUEST_ID = /^[\w.:-]{1,128}$/;

/**
 * For a request that carries an image (a bytes field such as `content` or
 * `like_image_content`, directly or in the streamed item), a body over the bridge's limit is
 * that field's upload limit being exceeded: the same INVALID_ARGUMENT, naming the field and
 * the limit, that gRPC and multipart uploads get.
 */
function oversizeError(contract: Contract, method: MethodInfo, maxUploadBytes: number): (() => Error) | undefined {
  const field = imageField(contract, method.requestType, "", 0);
  return field === undefined ? undefined : () => uploadTooLarge(field, maxUploadBytes);
}

function imageField(contract: Contract, typeName: string, prefix: string, depth: number): string | undefined {
  if (depth > 1) return undefined;
  for (const { info } of schemaOf(contract, typeName).fields) {
    if (info.kind === "scalar" && info.type === "bytes" && !info.repeated && !info.mapKey) return prefix + info.name;
  }
  for (const { info } of schemaOf(contract, typeName).fields) {
    if (info.kind === "message" && !info.repeated && !info.mapKey && info.type.startsWith("glimpse.")) {
      const inner = imageField(contract, info.type, `${prefix}${info.name}.`, depth + 1);
      if (inner !== undefined) return inner;
    }
  }
  return undefined;
}

/** A google.api.http path template as a Router pattern: `{x=*}` is `{x}`; `{x=**}` stays. */
function routePattern(binding: HttpBinding, method: MethodInfo): string {
  return binding.template.replace(/\{([^}=]+)(?:=([^}]*))?\}/g, (whole, name: string, rest: string | undefined) => {
    if (rest === undefined || rest === "*") return `{${name}}`;
    if (rest === "**") return whole;
    throw new Error(`${method.path}: path template ${binding.template} is not supported by the HTTP bridge`);
  });
}

async function serve(ctx: HttpContext, target: Target): Promise<void> {
  const { contract, rpc, method, binding, deps } = target;
  const sent = ctx.req.headers["x-request-id"];
  const echo: Record<string, string> = typeof sent === "string" && REQUEST_ID.test(sent) ? { "x-request-id": sent } : {};
  // Whether a failure is the call's (admission stands for the server's authentication and rate
  // limits) rather than the bridge's reading of the request: only the call's failures of a
  // stream are stream error chunks in grpc-gateway.
  let calling = false;
  try {
    const settings: CallSettings = { metadata: ctx.metadata, signal: ctx.signal, deadline: deadlineOf(ctx.req) };
    // Admitted (and charged) before any of the body is read; the calls below carry the ticket.
    calling = true;
    await ctx.admit();
    calling = false;
    const requests = method.requestStream ? requestStreamFromHttp(contract, method, binding, ctx, deps.maxBodyBytes) : undefined;
    const request = requests
      ? undefined
      : encodeMessage(contract, method.requestType, await requestFromHttp(contract, method, binding, ctx));
    calling = true;
    if (method.responseStream) {
      const stream = requests ? rpc.bidiStream(method.path, requests, settings) : rpc.serverStream(method.path, request!, settings);
      await streamAnswers(ctx, target, stream, echo);
      return;
    }
    const answer = requests ? await rpc.clientStream(method.path, requests, settings) : await rpc.unary(method.path, request!, settings);
    if (answer.requestId) echo["x-request-id"] = answer.requestId;
    const message = decodeMessage(contract, method.responseType, answer.response);
    const headers = { ...echo, ...metadataHeaders(answer.header) };
    const trailers = acceptsTrailers(ctx.req) ? metadataTrailers(answer.trailer) : {};
    if (method.responseType === "google.api.HttpBody" && !binding.responseBody) {
      const data = Buffer.from((message.data as Uint8Array | undefined) ?? new Uint8Array());
      sendWithMetadata(ctx.res, 200, (message.contentType as string | undefined) || "application/octet-stream", data, headers, trailers);
      return;
    }
    const text = JSON.stringify(render(target, message));
    sendWithMetadata(ctx.res, 200, "application/json; charset=utf-8", text, headers, trailers);
  } catch (error) {
    if (ctx.signal.aborted || ctx.res.headersSent) return;
    // A body that came too slowly or not at all: the HTTP server's own answers.
    if (error instanceof BodyTimeout || error instanceof ClientGone) throw error;
    if (!(error instanceof RpcError || error instanceof DomainError || error instanceof BodyTooLarge)) {
      deps.logger.error("HTTP bridge failed", { error, method: method.path });
    }
    sendError(ctx.res, error, { headers: echo, request: ctx.req, streamed: method.responseStream && calling });
  }
}

/** The JSON of an answer: the whole message, or the field `response_body` names. */
function render(target: Target, message: Plain): unknown {
  const { contract, method, binding } = target;
  if (!binding.responseBody) return messageToJson(contract, method.responseType, message);
  const slot = schemaOf(contract, method.responseType).byName.get(binding.responseBody)!;
  const present = Object.prototype.hasOwnProperty.call(message, slot.key);
  return fieldToJson(contract, slot.info, present ? message[slot.key] : undefined);
}

/** Writes a stream of answers as NDJSON (or raw HttpBody chunks), flushing each as it comes. */
async function streamAnswers(ctx: HttpContext, target: Target, stream: RpcStream, echo: Record<string, string>): Promise<void> {
  const { contract, method, binding } = target;
  const { res } = ctx;
  const rawBody = method.responseType === "google.api.HttpBody" && !binding.responseBody;
  let started = false;
  const start = (contentType: string) => {
    const requestId = stream.requestId();
    res.writeHead(200, {
      "content-type": contentType,
      ...echo,
      ...(requestId ? { "x-request-id": requestId } : {}),
      ...metadataHeaders(stream.header()),
    });
    started = true;
  };
  try {
    for await (const bytes of stream) {
      const message = decodeMessage(contract, method.responseType, bytes);
      let chunk: string | Buffer;
      if (rawBody) {
        if (!started) start((message.contentType as string | undefined) || "application/octet-stream");
        chunk = Buffer.from((message.data as Uint8Array | undefined) ?? new Uint8Array());
      } else {
        if (!started) start(NDJSON);
        chunk = `${JSON.stringify({ result: render(target, message) })}\n`;
      }
      if (!res.write(chunk)) await once(res, "drain", { signal: ctx.signal });
    }
    if (!started) start(rawBody ? "application/octet-stream" : NDJSON);
    res.end();
  } catch (error) {
    if (ctx.signal.aborted) return;
    if (!started) {
      const requestId = stream.requestId();
      const headers = requestId ? { ...echo, "x-request-id": requestId } : echo;
      sendError(res, error, { headers, request: ctx.req, streamed: true });
      return;
    }
    if (!(error instanceof RpcError || error instanceof DomainError)) {
      target.deps.logger.error("HTTP bridge stream failed", { error, method: method.path });
    }
    res.end(`${JSON.stringify({ error: statusJson(error) })}\n`);
  }
}

const TIMEOUT_UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** The call deadline a `Grpc-Timeout` header asks for (as grpc-gateway reads it), if any. */
function deadlineOf(req: IncomingMessage): Date | undefined {
  const header = req.headers["grpc-timeout"];
  if (header === undefined) return undefined;
  const m = typeof header === "string" ? /^(\d{1,8})([HMSmun])$/.exec(header) : null;
  if (!m) throw new DomainError("INVALID_ARGUMENT", `invalid Grpc-Timeout header ${JSON.stringify(header)}: expected e.g. 5S or 250m`);
  return new Date(Date.now() + Number(m[1]) * TIMEOUT_UNITS[m[2]]);
}
