import type { ServerResponse } from "node:http";
import { Status, type CallOptions } from "nice-grpc";
import { httpStatusOf } from "../errors.js";
import type { RouteDeps } from "../gateway.js";
import type { HttpContext, Route } from "../http.js";
import { CallFailure, callFor, retryAfterSeconds } from "./calls.js";

/**
 * What the catalogue-shaped compat surfaces (seeds 1 and 2) share: JSON with exact 64-bit
 * numbers, query parameter parsing, and one error shape.
 *
 * Neither seed documents an error body, so both answer the plain `{"error": "<message>"}`
 * that JSON clients commonly look for, with the HTTP status grpc-gateway gives the gRPC code
 * underneath and a message naming the seed's own parameter.
 */

/**
 * A JSON value to send. `bigint` is written as a bare JSON number with every digit, so
 * snowflake ids (above 2^53) reach clients exactly as the seeds show them: numbers, never
 * rounded through a JS double.
 */
export type JsonOut =
  | null
  | boolean
  | number
  | bigint
  | string
  | readonly JsonOut[]
  | { readonly [key: string]: JsonOut | undefined };

/**
 * JSON text of `value`; bigints become bare integers, object members that are undefined are
 * left out and array items that are undefined written as null, as JSON.stringify does.
 */
export function stringifyJson(value: JsonOut): string {
  if (value === null || value === undefined) return "null";
  switch (typeof value) {
    case "bigint":
      return value.toString();
    case "number":
    case "boolean":
    case "string":
      return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((item: JsonOut) => stringifyJson(item)).join(",")}]`;
  const members: string[] = [];
  for (const [key, member] of Object.entries(value)) {
    if (member !== undefined) members.push(`${JSON.stringify(key)}:${stringifyJson(member)}`);
  }
  return `{${members.join(",")}}`;
}

/** Writes a JSON response whose bigints are exact numbers. */
export function sendCompatJson(
  res: ServerResponse,
  status: number,
  body: JsonOut,
  headers: Record<string, string> = {},
): void {
  const text = stringifyJson(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/** A request the compat surface answers with an error in its own shape. */
export class CompatError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "CompatError";
  }
}

/** 400 for a query or path parameter the adapter itself could not read. */
export function badParameter(name: string, problem: string): CompatError {
  return new CompatError(400, `${name}: ${problem}`);
}

/**
 * The CompatError for a failed gRPC call. Field violations are renamed from proto paths
 * (`filter.post_id`, `filter.tags[2]`) to the seed's parameter names through `names`;
 * RESOURCE_EXHAUSTED gets `Retry-After` (seconds, rounded up) and UNAUTHENTICATED a
 * `WWW-Authenticate: Bearer` challenge.
 */
export function compatErrorOf(failure: CallFailure, names: Record<string, string>): CompatError {
  const headers: Record<string, string> = {};
  const message =
    failure.violations.length === 0
      ? failure.grpcMessage
      : failure.violations
          .map(({ field, description }) => `${names[field.replace(/\[\d+\]$/, "")] ?? field}: ${description}`)
          .join("; ");
  if (failure.code === Status.RESOURCE_EXHAUSTED && failure.retryAfterMs !== undefined) {
    headers["retry-after"] = retryAfterSeconds(failure.retryAfterMs);
  }
  if (failure.code === Status.UNAUTHENTICATED) headers["www-authenticate"] = "Bearer";
  return new CompatError(httpStatusOf(failure.code), message, headers);
}

/**
 * Makes one call to glimpse on the HTTP caller's behalf (see callFor); a gRPC failure
 * becomes a CompatError (see compatErrorOf).
 */
export async function callOnBehalf<T>(
  ctx: HttpContext,
  names: Record<string, string>,
  call: (options: CallOptions) => Promise<T>,
): Promise<T> {
  try {
    return await callFor(ctx, call);
  } catch (error) {
    if (error instanceof CallFailure) throw compatErrorOf(error, names);
    throw error;
  }
}

/**
 * A route whose failures are answered `{"error": message}`: CompatErrors with their status,
 * anything else as a logged 500 with a generic message. Nothing is written once the client
 * has gone away.
 */
export function compatRoute(
  deps: Pick<RouteDeps, "logger">,
  method: string,
  pattern: string,
  handle: (ctx: HttpContext) => Promise<void>,
): Route {
  return {
    method,
    pattern,
    async handle(ctx) {
      try {
        await handle(ctx);
      } catch (error) {
        if (ctx.signal.aborted || ctx.res.headersSent) return;
        if (error instanceof CompatError) {
          sendCompatJson(ctx.res, error.status, { error: error.message }, error.headers);
          return;
        }
        deps.logger.error("compat handler failed", { error, method: ctx.req.method, path: ctx.url.pathname });
        sendCompatJson(ctx.res, 500, { error: "internal error" });
      }
    },
  };
}

const INT64_MAX = 2n ** 63n - 1n;

/** A positive 64-bit id given as decimal digits, as the int64 string the generated clients take. */
export function positiveId(name: string, text: string): string {
  if (!/^\d{1,19}$/.test(text) || BigInt(text) === 0n || BigInt(text) > INT64_MAX) {
    throw badParameter(name, `must be a positive integer id, got '${text}'`);
  }
  return BigInt(text).toString();
}

/** A whole number in [min, max] given as decimal digits. */
export function wholeNumber(name: string, text: string, min: number, max: number): number {
  const value = /^\d{1,10}$/.test(text) ? Number(text) : NaN;
  if (!(value >= min && value <= max)) throw badParameter(name, `must be a whole number from ${min} to ${max}, got '${text}'`);
  return value;
}

/** A query parameter's value; empty counts as not given. */
export function queryValue(params: URLSearchParams, name: string): string | undefined {
  const value = params.get(name)?.trim();
  return value === undefined || value === "" ? undefined : value;
}

/** A snowflake or other int64 carried as a string by the generated code, as an exact JSON number. */
export function exactNumber(int64: string): bigint {
  return BigInt(int64);
}
