import { ClientError, Metadata, Status, type CallOptions, type Client, type CompatServiceDefinition } from "nice-grpc";
import {
  InProcessFailure,
  normalizeDefinition,
  type InProcessServer,
  type InProcessSettings,
  type InProcessStream,
} from "../server/in-process.js";
import { publicMessage, RpcError, STATUS_DETAILS_TRAILER } from "./errors.js";
import { pairsOf, type MetadataPairs } from "./metadata-out.js";

/**
 * The bridge's calls to glimpse's services, made in-process (see server/in-process.ts):
 * through the gRPC server's whole middleware chain (observation, logging, lifecycle, deadline,
 * error mapping, authentication and rate limits, upload budget, text checks) and its
 * implementations, without a loopback gRPC connection. Messages travel as the bytes the
 * bridge encoded from JSON, so one generic path serves every RPC of the contract; the compat
 * surfaces' typed clients (see {@link BridgeRpc.client}) take the same path.
 */
export interface CallSettings {
  /** Call metadata (the HTTP caller's credentials, request id and `Grpc-Metadata-*` headers). */
  metadata: Metadata;
  /** Cancels the call (the HTTP client went away). */
  signal: AbortSignal;
  /** From `Grpc-Timeout`: the call's signal aborts then, and it fails DEADLINE_EXCEEDED. */
  deadline?: Date;
}

/** A unary (or client-streaming) answer. */
export interface RpcAnswer {
  response: Uint8Array;
  /** The `x-request-id` the server answered with. */
  requestId?: string;
  /** The application metadata of the call's response headers and trailers. */
  header: MetadataPairs;
  trailer: MetadataPairs;
}

/** Answers of a server-streaming (or bidi) call, in order; failures throw RpcError. */
export interface RpcStream extends AsyncIterable<Uint8Array> {
  /** The `x-request-id` the server answered with, once its headers were sent. */
  requestId(): string | undefined;
  /** The application metadata of the call's response headers, once sent. */
  header(): MetadataPairs;
}

/** The largest answer the bridge takes, as its loopback channel took (grpc.max_receive_message_length). */
const MAX_RESPONSE_BYTES = 256 * 1024 * 1024;

/** Calls on the HTTP caller's behalf, in-process. */
export class BridgeRpc {
  constructor(private readonly server: InProcessServer) {}

  /** A unary call. */
  unary(path: string, request: Uint8Array, settings: CallSettings): Promise<RpcAnswer> {
    return this.answer(path, request, settings);
  }

  /** A client-streaming call; a failure of `requests` cancels it and is rethrown as is. */
  clientStream(path: string, requests: AsyncIterable<Uint8Array>, settings: CallSettings): Promise<RpcAnswer> {
    return this.answer(path, requests, settings);
  }

  serverStream(path: string, request: Uint8Array, settings: CallSettings): RpcStream {
    return answers(this.server.stream(path, request, inProcess(settings)));
  }

  /** A bidi call; a failure of `requests` cancels it and is rethrown as is. */
  bidiStream(path: string, requests: AsyncIterable<Uint8Array>, settings: CallSettings): RpcStream {
    return answers(this.server.stream(path, requests, inProcess(settings)));
  }

  private async answer(path: string, request: Uint8Array | AsyncIterable<Uint8Array>, settings: CallSettings): Promise<RpcAnswer> {
    try {
      const answer = await this.server.unary(path, request, inProcess(settings));
      checkSize(answer.response);
      const header = pairsOf(answer.header);
      return { response: answer.response, requestId: requestIdOf(answer.header), header, trailer: pairsOf(answer.trailer) };
    } catch (error) {
      throw rpcErrorOf(error);
    }
  }

  /**
   * A nice-grpc client of a service whose calls are made in-process, for routes that work
   * with typed messages (the compat surfaces, image content). Its options are nice-grpc's
   * (`metadata`, `signal`, `deadline`, `onHeader`, `onTrailer`); failures are ClientErrors.
   */
  client<S extends CompatServiceDefinition>(definition: S): Client<S> {
    const client: Record<string, unknown> = {};
    for (const [name, method] of Object.entries(normalizeDefinition(definition))) {
      const { path } = method;
      const encode = (requests: AsyncIterable<unknown>) =>
        (async function* () {
          for await (const request of requests) yield method.requestSerialize(request);
        })();
      const failure = (error: unknown, options: CallOptions) => {
        if (!(error instanceof InProcessFailure)) return error;
        options.onHeader?.(error.header);
        options.onTrailer?.(error.trailer);
        return new ClientError(path, error.code, error.details);
      };
      if (!method.responseStream) {
        client[name] = async (request: unknown, options: CallOptions = {}) => {
          const bytes = method.requestStream ? encode(request as AsyncIterable<unknown>) : method.requestSerialize(request);
          try {
            const answer = await this.server.unary(path, bytes, inProcess(options));
            options.onHeader?.(answer.header);
            options.onTrailer?.(answer.trailer);
            return method.responseDeserialize(answer.response);
          } catch (error) {
            throw failure(error, options);
          }
        };
      } else {
        const server = this.server;
        client[name] = async function* (request: unknown, options: CallOptions = {}) {
          const bytes = method.requestStream ? encode(request as AsyncIterable<unknown>) : method.requestSerialize(request);
          const stream = server.stream(path, bytes, inProcess(options));
          let headed = false;
          try {
            for await (const message of stream) {
              if (!headed) options.onHeader?.(stream.header() ?? Metadata());
              headed = true;
              yield method.responseDeserialize(message);
            }
            if (!headed) options.onHeader?.(stream.header() ?? Metadata());
            options.onTrailer?.(stream.trailer() ?? Metadata());
          } catch (error) {
            throw failure(error, options);
          }
        };
      }
    }
    return client as unknown as Client<S>;
  }
}

const never = new AbortController().signal;

/**
 * The settings of an in-process call; its peer is the HTTP client's address, which the bridge
 * forwards in `x-forwarded-for` (so log lines name the client, not the bridge).
 */
function inProcess(settings: { metadata?: Metadata; signal?: AbortSignal; deadline?: Date | number }): InProcessSettings {
  const metadata = settings.metadata ?? Metadata();
  const deadline = settings.deadline === undefined ? undefined : new Date(settings.deadline);
  const forwarded = metadata.get("x-forwarded-for");
  // Written as gRPC writes peers, without the port (IPv6 in brackets), for peerAddress to read.
  const peer = forwarded === undefined ? "in-process" : forwarded.includes(":") ? `[${forwarded}]` : forwarded;
  return { metadata, signal: settings.signal ?? never, deadline, peer };
}

function checkSize(bytes: Uint8Array): void {
  if (bytes.length > MAX_RESPONSE_BYTES) {
    throw new InProcessFailure(
      Status.RESOURCE_EXHAUSTED,
      `Received message larger than max (${bytes.length} vs. ${MAX_RESPONSE_BYTES})`,
      Metadata(),
      Metadata(),
    );
  }
}

/** A stream of answers whose failures are RpcErrors. */
function answers(stream: InProcessStream): RpcStream {
  async function* messages(): AsyncGenerator<Uint8Array> {
    try {
      for await (const message of stream) {
        checkSize(message);
        yield message;
      }
    } catch (error) {
      throw rpcErrorOf(error);
    }
  }
  return {
    [Symbol.asyncIterator]: messages,
    requestId: () => requestIdOf(stream.header()),
    header: () => pairsOf(stream.header()),
  };
}

function requestIdOf(metadata: Metadata | undefined): string | undefined {
  const value = metadata?.get("x-request-id");
  return typeof value === "string" ? value : undefined;
}

/** A call's failure as the bridge reports it; a failure of the bridge's own request stream passes as is. */
function rpcErrorOf(error: unknown): unknown {
  if (!(error instanceof InProcessFailure)) return error;
  const details = error.trailer.get(STATUS_DETAILS_TRAILER);
  return new RpcError(
    error.code,
    publicMessage(error.code, error.details),
    details instanceof Uint8Array ? details : undefined,
    requestIdOf(error.header) ?? requestIdOf(error.trailer),
    { header: pairsOf(error.header), trailer: pairsOf(error.trailer) },
  );
}
