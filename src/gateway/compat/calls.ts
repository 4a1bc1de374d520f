import { ClientError, Status, type CallOptions, type Metadata } from "nice-grpc";
import { DomainError } from "../../errors.js";
import { publicMessage } from "../errors.js";
import { decodeStatusDetails } from "../../server/status-details.js";
import type { HttpContext } from "../http.js";

/** A gRPC failure of a call made for the caller, with the rich details from its trailer. */
export class CallFailure extends Error {
  constructor(
    readonly code: Status,
    readonly grpcMessage: string,
    readonly violations: { field: string; description: string }[],
    readonly retryAfterMs: number | undefined,
  ) {
    super(grpcMessage);
    this.name = "CallFailure";
  }

  /**
   * A refusal the bridge made itself, before any call (admission, a busy server, a malformed
   * body), as the failure a call would have given, so each surface answers it in its own shape.
   */
  static of(error: DomainError): CallFailure {
    return new CallFailure(Status[error.code], error.message, error.violations, error.retryAfterMs);
  }
}

/**
 * Runs one gRPC call on the HTTP caller's behalf (its key, its abort signal) and turns a
 * failure into a CallFailure carrying the google.rpc.BadRequest violations and RetryInfo
 * delay from the `grpc-status-details-bin` trailer. Each compat surface maps CallFailure to
 * its own seed's error shape.
 */
export async function callFor<T>(ctx: HttpContext, call: (options: CallOptions) => Promise<T>): Promise<T> {
  let trailer: Metadata | undefined;
  try {
    return await call({ metadata: ctx.metadata, signal: ctx.signal, onTrailer: (t) => (trailer = t) });
  } catch (err) {
    if (!(err instanceof ClientError)) throw err;
    const raw = trailer?.get("grpc-status-details-bin") as unknown as Uint8Array | undefined;
    const details = raw ? decodeStatusDetails(raw) : undefined;
    throw new CallFailure(err.code, publicMessage(err.code, err.details), details?.violations ?? [], details?.retryAfterMs);
  }
}

/** A Retry-After header value (whole seconds, at least 1) for a RetryInfo delay. */
export function retryAfterSeconds(retryAfterMs: number | undefined): string {
  return String(Math.max(1, Math.ceil((retryAfterMs ?? 1000) / 1000)));
}
