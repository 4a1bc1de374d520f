import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import type { Channel, Metadata } from "nice-grpc";
import { publicMessage, RpcError, STATUS_DETAILS_TRAILER } from "./errors.js";
import { pairsOf, type MetadataPairs } from "./metadata-out.js";

/**
 * Raw calls over the loopback channel: messages travel as the bytes the bridge encoded from
 * JSON (identity serializers), so one generic path serves every RPC of the contract. grpc-js is
 * used directly rather than through nice-grpc because only grpc-js takes a per-call deadline,
 * which is how an HTTP `Grpc-Timeout` reaches the server as a real gRPC deadline.
 */
export interface CallSettings {
  /** Call metadata (the HTTP caller's credentials, request id and `Grpc-Metadata-*` headers). */
  metadata: Metadata;
  /** Cancels the call (the HTTP client went away). */
  signal: AbortSignal;
  deadline?: Date;
}

/** A unary (or client-streaming) answer. */
export interface RpcAnswer {
  response: Buffer;
  /** The `x-request-id` the server answered with. */
  requestId?: string;
  /** The application metadata of the call's response headers and trailers. */
  header: MetadataPairs;
  trailer: MetadataPairs;
}

/** Answers of a server-streaming (or bidi) call, in order; failures throw RpcError. */
export interface RpcStream extends AsyncIterable<Buffer> {
  /** The `x-request-id` the server answered with, once its headers arrived. */
  requestId(): string | undefined;
  /** The application metadata of the call's response headers, once they arrived. */
  header(): MetadataPairs;
}

const identity = (bytes: Buffer) => bytes;

/** The bytes as a Buffer without copying them (an upload's message is megabytes). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Raw gRPC calls on a nice-grpc (grpc-js) channel. */
export class LoopbackRpc {
  private readonly client: grpc.Client;

  constructor(channel: Channel) {
    // nice-grpc channels are grpc-js channels; the address and credentials are unused with an override.
    this.client = new grpc.Client("loopback", grpc.credentials.createInsecure(), {
      channelOverride: channel as unknown as grpc.Channel,
    });
  }

  unary(path: string, request: Uint8Array, settings: CallSettings): Promise<RpcAnswer> {
    return new Promise((resolve, reject) => {
      const seen = new ResponseHeaders();
      let response: Buffer | undefined;
      const call = this.client.makeUnaryRequest<Buffer, Buffer>(
        path,
        identity,
        identity,
        asBuffer(request),
        toGrpcMetadata(settings.metadata),
        callOptions(settings),
        (err, answer) => {
          settings.signal.removeEventListener("abort", cancel);
          if (err) reject(rpcErrorOf(err, seen));
          else response = answer;
        },
      );
      seen.watch(call);
      // The trailers come with the status, just after the callback.
      call.on("status", (status: grpc.StatusObject) => {
        if (response) resolve({ response, requestId: seen.requestId, header: seen.header, trailer: pairsOf(status.metadata) });
      });
      const cancel = () => call.cancel();
      settings.signal.addEventListener("abort", cancel, { once: true });
    });
  }

  clientStream(path: string, requests: AsyncIterable<Uint8Array>, settings: CallSettings): Promise<RpcAnswer> {
    return new Promise((resolve, reject) => {
      const seen = new ResponseHeaders();
      let failed: unknown;
      let response: Buffer | undefined;
      const call = this.client.makeClientStreamRequest<Buffer, Buffer>(
        path,
        identity,
        identity,
        toGrpcMetadata(settings.metadata),
        callOptions(settings),
        (err, answer) => {
          settings.signal.removeEventListener("abort", cancel);
          if (err) reject(failed ?? rpcErrorOf(err, seen));
          else response = answer;
        },
      );
      seen.watch(call);
      call.on("status", (status: grpc.StatusObject) => {
        if (response) resolve({ response, requestId: seen.requestId, header: seen.header, trailer: pairsOf(status.metadata) });
      });
      const cancel = () => call.cancel();
      settings.signal.addEventListener("abort", cancel, { once: true });
      pump(requests, call).catch((err) => {
        failed = err;
        call.cancel();
      });
    });
  }

  serverStream(path: string, request: Uint8Array, settings: CallSettings): RpcStream {
    const call = this.client.makeServerStreamRequest<Buffer, Buffer>(
      path,
      identity,
      identity,
      asBuffer(request),
      toGrpcMetadata(settings.metadata),
      callOptions(settings),
    );
    return readStream(call, settings.signal, () => undefined);
  }

  bidiStream(path: string, requests: AsyncIterable<Uint8Array>, settings: CallSettings): RpcStream {
    const call = this.client.makeBidiStreamRequest<Buffer, Buffer>(
      path,
      identity,
      identity,
      toGrpcMetadata(settings.metadata),
      callOptions(settings),
    );
    let failed: unknown;
    pump(requests, call).catch((err) => {
      failed = err;
      call.cancel();
    });
    return readStream(call, settings.signal, () => failed);
  }
}

/** Writes every request message, then half-closes; respects the call's flow control. */
async function pump(requests: AsyncIterable<Uint8Array>, call: grpc.ClientWritableStream<Buffer>): Promise<void> {
  for await (const request of requests) {
    if (!call.write(asBuffer(request))) await once(call, "drain");
  }
  call.end();
}

/** Reads a call's answers; `localFailure` is reported instead of the cancellation it caused. */
function readStream(
  call: grpc.ClientReadableStream<Buffer>,
  signal: AbortSignal,
  localFailure: () => unknown,
): RpcStream {
  const seen = new ResponseHeaders();
  seen.watch(call);
  const cancel = () => call.cancel();
  signal.addEventListener("abort", cancel, { once: true });
  async function* messages(): AsyncGenerator<Buffer> {
    let done = false;
    try {
      for await (const message of call) yield message as Buffer;
      done = true;
    } catch (err) {
      done = true;
      throw localFailure() ?? rpcErrorOf(err as grpc.ServiceError, seen);
    } finally {
      signal.removeEventListener("abort", cancel);
      // The reader stopped early (the HTTP client went away or writing failed): end the call.
      if (!done) call.cancel();
    }
  }
  return { [Symbol.asyncIterator]: messages, requestId: () => seen.requestId, header: () => seen.header };
}

function callOptions(settings: CallSettings): grpc.CallOptions {
  return settings.deadline ? { deadline: settings.deadline } : {};
}

/** nice-grpc metadata -> grpc-js metadata. */
function toGrpcMetadata(metadata: Metadata): grpc.Metadata {
  const out = new grpc.Metadata();
  for (const [key, values] of metadata) {
    for (const value of values) out.add(key, typeof value === "string" ? value : Buffer.from(value));
  }
  return out;
}

function requestIdOf(metadata: grpc.Metadata | undefined): string | undefined {
  const value = metadata?.get("x-request-id")[0];
  return typeof value === "string" ? value : undefined;
}

/** The response headers of a call, as they arrive. */
class ResponseHeaders {
  requestId: string | undefined;
  header: MetadataPairs = [];

  watch(call: { on(event: "metadata", listener: (metadata: grpc.Metadata) => void): unknown }): void {
    call.on("metadata", (metadata: grpc.Metadata) => {
      this.requestId ??= requestIdOf(metadata);
      this.header = pairsOf(metadata);
    });
  }
}

function rpcErrorOf(err: grpc.ServiceError, seen: ResponseHeaders): RpcError {
  if (typeof err?.code !== "number") {
    return new RpcError(grpc.status.INTERNAL, "internal error", undefined, seen.requestId, { header: seen.header, trailer: [] });
  }
  const details = err.metadata?.get(STATUS_DETAILS_TRAILER)[0];
  // A call that fails at once answers trailers only: its metadata is all in the trailers.
  return new RpcError(
    err.code,
    publicMessage(err.code, err.details),
    Buffer.isBuffer(details) ? details : undefined,
    seen.requestId ?? requestIdOf(err.metadata),
    { header: seen.header, trailer: pairsOf(err.metadata) },
  );
}
