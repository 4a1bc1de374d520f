import type { Status as GrpcStatus } from "nice-grpc-common";
import { Any } from "../gen/google/protobuf/any.js";
import { BadRequest, RetryInfo } from "../gen/google/rpc/error_details.js";
import { Status } from "../gen/google/rpc/status.js";
import type { DomainError } from "../errors.js";

const TYPE_PREFIX = "type.googleapis.com/";

/** Wraps a message in google.protobuf.Any the way gRPC status details expect. */
function pack(typeName: string, value: Uint8Array): Any {
  return { typeUrl: TYPE_PREFIX + typeName, value: Buffer.from(value) };
}

/** The google.rpc.Status a domain error stands for, with BadRequest and RetryInfo details. */
export function statusOf(code: GrpcStatus, message: string, err?: DomainError): Status {
  const details: Any[] = [];
  if (!err) return { code, message, details };
  if (err.violations.length > 0) {
    const badRequest = BadRequest.fromPartial({
      fieldViolations: err.violations.map((v) => ({ field: v.field, description: v.description })),
    });
    details.push(pack("google.rpc.BadRequest", BadRequest.encode(badRequest).finish()));
  }
  if (err.retryAfterMs !== undefined) {
    const ms = Math.max(0, Math.ceil(err.retryAfterMs));
    const retry = RetryInfo.fromPartial({
      retryDelay: { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
    });
    details.push(pack("google.rpc.RetryInfo", RetryInfo.encode(retry).finish()));
  }
  return { code, message, details };
}

/** Serialised google.rpc.Status for the `grpc-status-details-bin` trailer. */
export function encodeStatusDetails(code: GrpcStatus, message: string, err: DomainError): Uint8Array {
  return Status.encode(statusOf(code, message, err)).finish();
}

/** Field violations and retry delay decoded from a `grpc-status-details-bin` trailer. */
export interface DecodedDetails {
  code: number;
  message: string;
  violations: { field: string; description: string }[];
  retryAfterMs: number | undefined;
}

/** Reads a `grpc-status-details-bin` value back; used by clients and tests. */
export function decodeStatusDetails(bytes: Uint8Array): DecodedDetails {
  const status = Status.decode(bytes);
  const out: DecodedDetails = { code: status.code, message: status.message, violations: [], retryAfterMs: undefined };
  for (const any of status.details) {
    if (any.typeUrl === TYPE_PREFIX + "google.rpc.BadRequest") {
      for (const v of BadRequest.decode(any.value).fieldViolations) {
        out.violations.push({ field: v.field, description: v.description });
      }
    } else if (any.typeUrl === TYPE_PREFIX + "google.rpc.RetryInfo") {
      const delay = RetryInfo.decode(any.value).retryDelay;
      if (delay) out.retryAfterMs = Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1_000_000);
    }
  }
  return out;
}
