import { ClientError, Status, type Metadata } from "nice-grpc-common";
import { BadRequest, RetryInfo } from "../gen/google/rpc/error_details.js";
import { Status as RpcStatus } from "../gen/google/rpc/status.js";

const TYPE_PREFIX = "type.googleapis.com/";
const DETAILS_TRAILER = "grpc-status-details-bin";

/**
 * A failed call, with the google.rpc details the server put in `grpc-status-details-bin`
 * decoded: `badRequest` (field violations, on INVALID_ARGUMENT) and `retryInfo` (how long to
 * wait, on RESOURCE_EXHAUSTED and UNAVAILABLE). It is a nice-grpc `ClientError`, so code that
 * checks `instanceof ClientError` or `err.code` keeps working.
 */
export class GlimpseError extends ClientError {
  /** `google.rpc.BadRequest`, when the server sent one. */
  readonly badRequest: BadRequest | undefined;
  /** `google.rpc.RetryInfo`, when the server sent one. */
  readonly retryInfo: RetryInfo | undefined;
  /** The retry delay of `retryInfo` in milliseconds, or undefined. */
  readonly retryAfterMs: number | undefined;
  /** Attempts made before giving up (1 when the call was not retried). */
  readonly attempts: number;

  constructor(
    path: string,
    code: Status,
    details: string,
    extra: { badRequest?: BadRequest; retryInfo?: RetryInfo; attempts?: number } = {},
  ) {
    super(path, code, details);
    this.name = "GlimpseError";
    this.badRequest = extra.badRequest;
    this.retryInfo = extra.retryInfo;
    const delay = extra.retryInfo?.retryDelay;
    this.retryAfterMs = delay ? Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1_000_000) : undefined;
    this.attempts = extra.attempts ?? 1;
  }

  /** The field violations of `badRequest` (empty when there is none). */
  get fieldViolations(): { field: string; description: string }[] {
    return this.badRequest?.fieldViolations ?? [];
  }

  /** The status code's name, such as `INVALID_ARGUMENT`. */
  get codeName(): string {
    return Status[this.code] ?? String(this.code);
  }
}

/** The details packed in a `grpc-status-details-bin` trailer; undefined parts were absent. */
export function decodeDetails(trailer: Metadata | undefined): { badRequest?: BadRequest; retryInfo?: RetryInfo } {
  const raw = trailer?.get(DETAILS_TRAILER) as unknown as Uint8Array | string | undefined;
  if (raw === undefined || typeof raw === "string") return {};
  let status: RpcStatus;
  try {
    status = RpcStatus.decode(raw);
  } catch {
    // A malformed trailer from some proxy: the status code and message still stand.
    return {};
  }
  const out: { badRequest?: BadRequest; retryInfo?: RetryInfo } = {};
  for (const any of status.details) {
    try {
      if (any.typeUrl === TYPE_PREFIX + "google.rpc.BadRequest") out.badRequest = BadRequest.decode(any.value);
      else if (any.typeUrl === TYPE_PREFIX + "google.rpc.RetryInfo") out.retryInfo = RetryInfo.decode(any.value);
    } catch {
      // An undecodable detail is skipped; the others are still useful.
    }
  }
  return out;
}

/** `err` as a GlimpseError when it is a gRPC status error; anything else unchanged. */
export function toGlimpseError(err: unknown, trailer: Metadata | undefined, attempts: number): unknown {
  if (err instanceof GlimpseError) return err;
  if (!(err instanceof ClientError)) return err;
  return new GlimpseError(err.path, err.code, err.details, { ...decodeDetails(trailer), attempts });
}
