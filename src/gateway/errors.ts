import type { IncomingMessage, ServerResponse } from "node:http";
import { ClientError, Status, type Metadata } from "nice-grpc-common";
import { DomainError } from "../errors.js";
import { BadRequest, RetryInfo } from "../gen/google/rpc/error_details.js";
import { Status as RpcStatus } from "../gen/google/rpc/status.js";
import { statusOf as domainStatus } from "../server/status-details.js";
import { bundledContract } from "./descriptors.js";
import { BodyTooLarge } from "./http.js";
import { messageToJson } from "./json-out.js";
import { acceptsTrailers, metadataHeaders, metadataTrailers, type MetadataPairs } from "./metadata-out.js";

/**
 * How the bridge reports failures, the way grpc-gateway does: the gRPC status code mapped to
 * an HTTP status, and a google.rpc.Status JSON body `{code, message, details}` whose details
 * are rendered with their `@type` (for example google.rpc.BadRequest with its
 * fieldViolations). Compat surfaces may reuse these for their own error shapes.
 */

/** Trailer that carries a serialized google.rpc.Status with typed details. */
export const STATUS_DETAILS_TRAILER = "grpc-status-details-bin";

/** A failed call made on the caller's behalf: its status, raw details and request id. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    /** The serialized google.rpc.Status of the `grpc-status-details-bin` trailer, if any. */
    readonly statusDetails?: Uint8Array,
    /** The `x-request-id` the gRPC server answered with, if any. */
    readonly requestId?: string,
    /** The application metadata of the call's response headers and trailers. */
    readonly metadata?: { header: MetadataPairs; trailer: MetadataPairs },
  ) {
    super(message);
    this.name = "RpcError";
  }
}

/**
 * The message a caller may see for a failed call. A deadline that passed, or a failure
 * grpc-js raised on its own side (no connection, a cut stream), carries grpc-js's internals
 * (timings, addresses): those are replaced by a plain message; the server's own messages pass
 * unchanged.
 */
export function publicMessage(code: number, message: string): string {
  if (code === Status.DEADLINE_EXCEEDED) return "deadline exceeded";
  if (/remote_addr|LB pick|No connection established|ECONNREFUSED|Received RST_STREAM|Call cancelled/.test(message)) {
    if (code === Status.CANCELLED) return "the call was cancelled";
    if (code === Status.UNAVAILABLE) return "glimpse is unavailable; retry shortly";
    return "internal error";
  }
  return message;
}

/** A status as the bridge reports it; details are google.protobuf.Any messages. */
export interface GatewayStatus {
  code: number;
  message: string;
  details: { typeUrl: string; value: Uint8Array }[];
}

/** The JSON body of an error: google.rpc.Status in proto3 JSON. */
export interface StatusJson {
  code: number;
  message: string;
  details: unknown[];
}

const HTTP_STATUS: Record<number, number> = {
  [Status.OK]: 200,
  [Status.CANCELLED]: 499,
  [Status.UNKNOWN]: 500,
  [Status.INVALID_ARGUMENT]: 400,
  [Status.DEADLINE_EXCEEDED]: 504,
  [Status.NOT_FOUND]: 404,
  [Status.ALREADY_EXISTS]: 409,
  [Status.PERMISSION_DENIED]: 403,
  [Status.RESOURCE_EXHAUSTED]: 429,
  [Status.FAILED_PRECONDITION]: 400,
  [Status.ABORTED]: 409,
  [Status.OUT_OF_RANGE]: 400,
  [Status.UNIMPLEMENTED]: 501,
  [Status.INTERNAL]: 500,
  [Status.UNAVAILABLE]: 503,
  [Status.DATA_LOSS]: 500,
  [Status.UNAUTHENTICATED]: 401,
};

/** grpc-gateway v2's HTTP status for a gRPC code (runtime.HTTPStatusFromCode); 500 for unknown codes. */
export function httpStatusOf(code: number): number {
  return HTTP_STATUS[code] ?? 500;
}

/**
 * The status an error stands for: a failed call (RpcError), a nice-grpc ClientError
 * (pass the call's trailer, from the `onTrailer` call option, to keep its details), a
 * DomainError raised by the bridge itself (bad JSON, a bad query parameter), or anything
 * else, which is INTERNAL with a generic message.
 */
export function statusOfError(error: unknown, trailer?: Metadata): GatewayStatus {
  if (error instanceof RpcError) return withDetails(error.code, error.message, error.statusDetails);
  if (error instanceof ClientError) {
    return withDetails(error.code, publicMessage(error.code, error.details), trailer?.get(STATUS_DETAILS_TRAILER));
  }
  if (error instanceof DomainError) {
    const code = Status[error.code];
    return { ...domainStatus(code, error.message, error), code };
  }
  if (error instanceof BodyTooLarge) return { code: Status.RESOURCE_EXHAUSTED, message: error.message, details: [] };
  return { code: Status.INTERNAL, message: "internal error", details: [] };
}

function withDetails(code: number, message: string, bytes: Uint8Array | undefined): GatewayStatus {
  if (!bytes) return { code, message, details: [] };
  try {
    return { code, message, details: RpcStatus.decode(bytes).details };
  } catch {
    return { code, message, details: [] };
  }
}

/** `{code, message, details}` for an error, details rendered as grpc-gateway renders them. */
export function statusJson(error: unknown, trailer?: Metadata): StatusJson {
  return renderStatus(statusOfError(error, trailer));
}

/** `{code, message, details}` for a status. */
export function renderStatus(status: GatewayStatus): StatusJson {
  const contract = bundledContract();
  return {
    code: status.code,
    message: status.message,
    details: status.details.map((any) => messageToJson(contract, "google.protobuf.Any", any)),
  };
}

/** Whole seconds to wait before retrying (RetryInfo, rounded up), if the status says. */
export function retryAfterSeconds(status: GatewayStatus): number | undefined {
  const any = status.details.find((d) => d.typeUrl.endsWith("/google.rpc.RetryInfo"));
  const delay = any && RetryInfo.decode(any.value).retryDelay;
  if (!delay) return undefined;
  return Math.max(0, Math.ceil(Number(delay.seconds) + delay.nanos / 1e9));
}

/** The field violations of the status's google.rpc.BadRequest details. */
export function fieldViolations(status: GatewayStatus): { field: string; description: string }[] {
  return status.details
    .filter((d) => d.typeUrl.endsWith("/google.rpc.BadRequest"))
    .flatMap((d) => BadRequest.decode(d.value).fieldViolations.map((v) => ({ field: v.field, description: v.description })));
}

/** How sendError answers. */
export interface ErrorAnswer {
  /** The call's trailer (nice-grpc calls), for the status details it carries. */
  trailer?: Metadata;
  /** Headers to add (for example `x-request-id`). */
  headers?: Record<string, string>;
  /**
   * The HTTP request, when the error may carry gRPC response metadata to forward, as
   * grpc-gateway does: `Grpc-Metadata-<Key>` headers, and `Grpc-Trailer-<Key>` trailers when
   * the request has `TE: trailers`.
   */
  request?: IncomingMessage;
  /**
   * A streaming route whose call failed before its first message: the body is grpc-gateway's
   * stream error chunk, `{"error": {code, message, details}}` and a newline.
   */
  streamed?: boolean;
}

/**
 * Answers an error: grpc-gateway's HTTP status and google.rpc.Status JSON body, `Retry-After`
 * (seconds) for a status with RetryInfo, `WWW-Authenticate` for UNAUTHENTICATED,
 * 413 for a body over the limit.
 */
export function sendError(res: ServerResponse, error: unknown, options: ErrorAnswer = {}): void {
  const status = statusOfError(error, options.trailer);
  const headers: Record<string, string> = { ...options.headers };
  if (error instanceof RpcError && error.requestId) headers["x-request-id"] = error.requestId;
  // RESOURCE_EXHAUSTED (a rate limit) and UNAVAILABLE (a busy server) say when to come back.
  const retryAfter = retryAfterSeconds(status);
  if (retryAfter !== undefined) headers["retry-after"] = String(retryAfter);
  if (status.code === Status.UNAUTHENTICATED) headers["www-authenticate"] = 'Bearer realm="glimpse"';
  // The rest of an oversized body is never read, so the connection cannot carry another request.
  if (error instanceof BodyTooLarge) headers.connection = "close";
  const httpStatus = error instanceof BodyTooLarge ? 413 : httpStatusOf(status.code);
  const text = options.streamed ? `${JSON.stringify({ error: renderStatus(status) })}\n` : JSON.stringify(renderStatus(status));
  const metadata = options.request && error instanceof RpcError ? error.metadata : undefined;
  const trailers = metadata && acceptsTrailers(options.request!) ? metadataTrailers(metadata.trailer) : {};
  sendWithMetadata(res, httpStatus, "application/json; charset=utf-8", text, {
    ...headers,
    ...(metadata ? metadataHeaders(metadata.header) : {}),
  }, trailers);
}

/**
 * Writes a whole answer; with trailers to send, without a Content-Length (chunked), the
 * trailers' names declared in `Trailer`, as HTTP/1.1 asks.
 */
export function sendWithMetadata(
  res: ServerResponse,
  status: number,
  contentType: string,
  body: string | Buffer,
  headers: Record<string, string | string[]>,
  trailers: Record<string, string[]>,
): void {
  const names = Object.keys(trailers);
  res.writeHead(status, {
    "content-type": contentType,
    ...(names.length > 0 ? { trailer: names.join(", ") } : { "content-length": Buffer.byteLength(body) }),
    ...headers,
  });
  if (names.length === 0) {
    res.end(body);
    return;
  }
  res.write(body);
  res.addTrailers(Object.entries(trailers).flatMap(([name, values]) => values.map((value): [string, string] => [name, value])));
  res.end();
}
