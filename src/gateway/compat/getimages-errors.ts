import { Status } from "nice-grpc";
import { sendJson, type HttpContext } from "../http.js";
import { retryAfterSeconds, type CallFailure } from "./calls.js";

/** One entry of the getimages error body's `details`: which field, what is wrong, a zod-style code. */
export interface SeedIssue {
  /** The request field, in the API's own names (`prompt`, `modelId`, `limit`); "" for the whole body. */
  path: string;
  message: string;
  /** A zod issue code: `invalid_type`, `too_small`, `too_big`, `invalid_value`, `invalid_format`. */
  code: string;
}

/** A failure answered as `{"error": {"message", "details"}}` with an HTTP status. */
export class SeedError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly details: SeedIssue[] = [],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "SeedError";
  }
}

/** Writes the getimages error body. */
export function sendSeedError(ctx: HttpContext, error: SeedError): void {
  sendJson(ctx.res, error.status, { error: { message: error.message, details: error.details } }, error.headers);
}

/** `model_id` -> `modelId`, `filter.tags[2]` -> `filter.tags[2]`. */
function camel(field: string): string {
  return field.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** A zod-style code for one of glimpse's field violations, from what its description says. */
function codeOf(description: string): string {
  if (/at most/.test(description)) return "too_big";
  if (/is required|at least|must be >=/.test(description)) return "too_small";
  if (/UUID/.test(description)) return "invalid_format";
  return "invalid_value";
}

/** glimpse's field violations in the getimages shape. */
export function issuesOf(violations: { field: string; description: string }[]): SeedIssue[] {
  return violations.map((v) => ({ path: camel(v.field), message: v.description, code: codeOf(v.description) }));
}

/** What the route was doing, for the messages and statuses only it can choose. */
export interface FailureContext {
  /** Top-level message of a 400 with field details, e.g. "Invalid request body.". */
  invalid: string;
  /** Message of a 404, e.g. "Image not found.". */
  notFound: string;
  /** Whether the call was GenerateImage: provider failures are then the seed's 500. */
  generating?: boolean;
}

/**
 * Maps a gRPC failure to the only status codes seed 5 documents: 400 with one detail per bad
 * field (credits that do not cover the model are a 400 on `modelId` with the code
 * `insufficient_credits`), 401 (also for a key without the right to the call), 404, 429 with
 * Retry-After in whole seconds, and 500 for everything the server could not do.
 */
export function seedErrorOf(failure: CallFailure, context: FailureContext): SeedError {
  const retry: Record<string, string> =
    failure.retryAfterMs === undefined
      ? {}
      : { "retry-after": retryAfterSeconds(failure.retryAfterMs) };
  const message = failure.grpcMessage;
  switch (failure.code) {
    case Status.INVALID_ARGUMENT: {
      const issues = issuesOf(failure.violations);
      return new SeedError(400, issues.length > 0 ? context.invalid : message, issues);
    }
    case Status.UNAUTHENTICATED:
      return new SeedError(401, message);
    case Status.PERMISSION_DENIED:
      return new SeedError(401, message);
    case Status.NOT_FOUND:
      return new SeedError(404, context.notFound);
    case Status.RESOURCE_EXHAUSTED:
      return new SeedError(429, message, [], retry);
    case Status.FAILED_PRECONDITION:
      return preconditionError(failure, context, retry);
    case Status.CANCELLED:
      return new SeedError(499, message);
    case Status.UNAVAILABLE:
      return new SeedError(500, message, [], retry);
    case Status.DEADLINE_EXCEEDED:
      return new SeedError(500, message);
    default:
      return new SeedError(500, context.generating ? "Image generation failed unexpectedly." : "Internal server error.");
  }
}

/**
 * FAILED_PRECONDITION stands for several things glimpse tells apart only in its message: too
 * few credits, a model whose provider is not configured, a prompt the provider refused, and an
 * image whose bytes were deleted.
 */
function preconditionError(failure: CallFailure, context: FailureContext, retry: Record<string, string>): SeedError {
  const message = failure.grpcMessage;
  if (message.startsWith("not enough credits")) {
    return new SeedError(400, "Insufficient credits.", [{ path: "modelId", message, code: "insufficient_credits" }]);
  }
  if (/ is unavailable: /.test(message)) {
    return new SeedError(400, context.invalid, [{ path: "modelId", message, code: "invalid_value" }]);
  }
  if (/refused the prompt/.test(message)) {
    return new SeedError(400, context.invalid, [{ path: "prompt", message, code: "invalid_value" }]);
  }
  if (/was deleted/.test(message)) return new SeedError(404, context.notFound);
  return new SeedError(context.generating ? 500 : 400, message, [], retry);
}
