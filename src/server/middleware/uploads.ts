import { Metadata as GrpcMetadata, type StatusObject } from "@grpc/grpc-js";
import { Metadata, Status, type ServerMiddleware } from "nice-grpc-common";
import { DomainError } from "../../errors.js";
import { GRPC_UPLOAD_MEMORY_FACTOR, type ByteBudget } from "../byte-budget.js";
import { encodeStatusDetails } from "../status-details.js";
import { peerAddress, type Gatekeeper } from "./auth.js";
import { STATUS_DETAILS_KEY } from "./errors.js";

/** RPCs whose request messages carry uploads of up to the upload limit. */
export const UPLOAD_METHODS: ReadonlySet<string> = new Set([
  "/glimpse.image.v1.ImageService/UploadImage",
  "/glimpse.image.v1.ImageService/BatchUploadImages",
]);

/** Why an upload call was refused from its headers: its status and the details of its trailer. */
export interface UploadRefusal {
  code: Status;
  message: string;
  /** A serialised google.rpc.Status, for the `grpc-status-details-bin` trailer. */
  details: Uint8Array;
}

/** The check of uploadAdmission: a refusal, or undefined (at once, or once checked) to let the call in. */
export type UploadAdmission = (path: string, metadata: Metadata, peer: string) => Promise<UploadRefusal | undefined> | undefined;

/**
 * Refuses an upload call from its headers, before its request message is read: an unknown
 * key, a missing one or a spent rate limit answers at once, so a refused caller makes the
 * server hold none of its (up to 25 MiB) bytes. Nothing is charged here: the caller
 * middleware charges a call that gets through. The server's interceptor (see callLogging)
 * runs it for gRPC calls, the in-process server for the HTTP bridge's.
 *
 * The check, for gRPC calls and in-process ones alike:
 * answers the refusal of an upload call (by method path) from its metadata, or undefined to let
 * it in; undefined at once for calls it does not check (other methods, calls the HTTP bridge
 * already admitted). Failures other than a refusal let the call in too (the caller middleware
 * reports them).
 */
export function uploadAdmission(gatekeeper: Gatekeeper): UploadAdmission {
  return (path, metadata, peer) => {
    if (!UPLOAD_METHODS.has(path) || gatekeeper.admitted(metadata)) return undefined;
    return gatekeeper.precheck(path, metadata, peerAddress(peer)).then(
      () => undefined,
      (error: unknown) => {
        if (!(error instanceof DomainError)) return undefined;
        const code = Status[error.code];
        return { code, message: error.message, details: encodeStatusDetails(code, error.message, error) };
      },
    );
  };
}

/** The status that answers a refused upload call over gRPC, its details in the trailer. */
export function refusalStatus(refusal: UploadRefusal): Pick<StatusObject, "code" | "details" | "metadata"> {
  const trailer = new GrpcMetadata();
  trailer.set(STATUS_DETAILS_KEY, Buffer.from(refusal.details));
  return { code: refusal.code as number, details: refusal.message, metadata: trailer };
}

/** grpc-js metadata as nice-grpc metadata (the gatekeeper's view). */
export function niceMetadata(metadata: GrpcMetadata): Metadata {
  const out = Metadata();
  for (const [key, values] of Object.entries(metadata.toJSON())) {
    for (const value of values as (string | Buffer)[]) out.append(key, value);
  }
  return out;
}

/**
 * Holds the bytes of each received upload in the process-wide budget while the call works on
 * them (for a stream, each item until the next is read), and refuses with RESOURCE_EXHAUSTED
 * and a retry delay when the budget is full, so concurrent uploads cannot grow memory without
 * bound. Calls the HTTP bridge admitted are not counted again: the bridge holds their bodies.
 */
export function uploadBudgetMiddleware(budget: ByteBudget, gatekeeper: Gatekeeper): ServerMiddleware {
  const holder = uploadHolder(budget, gatekeeper);
  return async function* (call, context) {
    const held = holder(call.method.path, call.requestStream, call.request, context.metadata);
    try {
      return yield* call.next(held.request as typeof call.request, context);
    } finally {
      held.release();
    }
  };
}

/** A request as the upload budget lets it through, and what to do when its call ends. */
export interface HeldUpload {
  /** The request message, or a request stream whose items are each held while worked on. */
  request: unknown;
  /** Gives back what a single request message held. */
  release(): void;
}

const NOTHING_HELD = () => {};

/**
 * The upload budget middleware's work without a layer of its own (see call-chain.ts): holds
 * an upload request's bytes (throws RESOURCE_EXHAUSTED when the budget is full), or wraps a
 * request stream so each item is held; any other call passes as it is.
 */
export function uploadHolder(
  budget: ByteBudget,
  gatekeeper: Gatekeeper,
): (path: string, requestStream: boolean, request: unknown, metadata: Metadata) => HeldUpload {
  return (path, requestStream, request, metadata) => {
    if (!UPLOAD_METHODS.has(path) || gatekeeper.admitted(metadata)) return { request, release: NOTHING_HELD };
    if (requestStream) return { request: heldEach(request as AsyncIterable<unknown>, budget), release: NOTHING_HELD };
    const bytes = uploadBytes(request) * GRPC_UPLOAD_MEMORY_FACTOR;
    hold(budget, bytes);
    return { request, release: () => budget.give(bytes) };
  };
}

/** Items of a request stream, each held in the budget until the next is asked for. */
async function* heldEach<T>(items: AsyncIterable<T>, budget: ByteBudget): AsyncGenerator<T> {
  for await (const item of items) {
    const bytes = uploadBytes(item) * GRPC_UPLOAD_MEMORY_FACTOR;
    hold(budget, bytes);
    try {
      yield item;
    } finally {
      budget.give(bytes);
    }
  }
}

function hold(budget: ByteBudget, bytes: number): void {
  try {
    budget.take(bytes);
  } catch (error) {
    const retryAfterMs = error instanceof DomainError ? error.retryAfterMs : 1000;
    throw new DomainError("RESOURCE_EXHAUSTED", "glimpse is receiving as many uploads as it can hold; retry shortly", {
      retryAfterMs,
    });
  }
}

/** Bytes of the byte fields of an upload request (`content`, or `request.content` of a stream item). */
function uploadBytes(message: unknown): number {
  const m = message as { content?: Uint8Array; request?: { content?: Uint8Array } } | undefined;
  return (m?.content?.length ?? 0) + (m?.request?.content?.length ?? 0);
}
