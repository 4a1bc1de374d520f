import { isAbortError } from "abort-controller-x";
import {
  Metadata,
  ServerError,
  Status,
  type CallContext,
  type MethodDescriptor,
  type ServerMiddleware,
} from "nice-grpc-common";
import type { CompatServiceDefinition } from "nice-grpc";
import type { CallEnd } from "./middleware/logging.js";
import { setCallDeadline } from "./middleware/deadline.js";
import type { UploadRefusal } from "./middleware/uploads.js";
import { STATUS_DETAILS_KEY } from "./middleware/errors.js";

/**
 * Calls to glimpse's own services made inside the process (the HTTP bridge's), through the
 * gRPC server's middleware chain and implementations, without a loopback gRPC connection.
 * What the gRPC transport does around a call is done here for each one, so a call behaves as
 * it would over gRPC: the interceptors' parts (the call's log line until it ends, the deadline
 * for the deadline middleware, the upload check from headers), the deadline itself (the call's
 * signal aborts when it passes and the caller gets DEADLINE_EXCEEDED at once), cancellation by
 * the caller's signal, response headers and trailers, the size limit of request messages, and
 * the status of a failure as nice-grpc's server reports it (ServerError as is, an abort as
 * CANCELLED, anything else UNKNOWN). Messages travel serialised, as on the wire, so a handler
 * gets exactly the message a gRPC client's bytes would give it.
 */

/** How one in-process call is made. */
export interface InProcessSettings {
  /** The call's metadata (copied: the server's middleware never changes the caller's object). */
  metadata: Metadata;
  /** Cancels the call (the caller went away). */
  signal: AbortSignal;
  /** When the caller stops waiting: the call's signal aborts and it fails DEADLINE_EXCEEDED. */
  deadline?: Date;
  /** The caller's address, as the call's peer (logs; the bridge names the HTTP client's). */
  peer: string;
}

/** A unary or client-streaming answer. */
export interface InProcessAnswer {
  response: Uint8Array;
  /** The call's response headers (`x-request-id` among them). */
  header: Metadata;
  trailer: Metadata;
}

/** The answers of a server-streaming or bidi call; a failure throws InProcessFailure. */
export interface InProcessStream extends AsyncIterable<Uint8Array> {
  /** The call's response headers, once sent (with the first answer, or at the end). */
  header(): Metadata | undefined;
  /** The call's trailers, once it ended with its answers all read. */
  trailer(): Metadata | undefined;
}

/** A call that ended with a status other than OK, as a gRPC client would see it. */
export class InProcessFailure extends Error {
  constructor(
    readonly code: Status,
    readonly details: string,
    /** The response headers, when they were sent. */
    readonly header: Metadata,
    readonly trailer: Metadata,
  ) {
    super(`${Status[code]}: ${details}`);
    this.name = "InProcessFailure";
  }
}

/** What the in-process server is built from (the gRPC server's own pieces). */
export interface InProcessOptions {
  /** The gRPC server's middleware chain, composed (outermost first). */
  middleware?: ServerMiddleware<any, any>;
  /** The logging interceptor's part: follows a call until it ends (see callLogging). */
  follow?: (method: string, metadata: Metadata) => (how: CallEnd) => void;
  /** The upload admission interceptor's part: a refusal of an upload call from its headers. */
  admission?: (path: string, metadata: Metadata, peer: string) => Promise<UploadRefusal | undefined> | undefined;
  /** Largest request message accepted, in bytes (grpc.max_receive_message_length). */
  maxReceiveMessageBytes: number;
  /** Told of each call refused before the middleware chain (so never counted by it): the metrics. */
  refused?: (path: string, code: Status) => void;
}

type Handler = (request: unknown, context: CallContext) => AsyncGenerator<unknown, unknown, undefined>;

interface MethodEntry {
  descriptor: MethodDescriptor;
  requestDeserialize(bytes: Uint8Array): unknown;
  requestSerialize(value: unknown): Uint8Array;
  responseSerialize(value: unknown): Uint8Array;
  responseDeserialize(bytes: Uint8Array): unknown;
  handler: Handler;
}

/** A method of a nice-grpc (or grpc-js) service definition, as nice-grpc normalises it. */
export interface NormalizedMethod {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestSerialize(value: unknown): Uint8Array;
  requestDeserialize(bytes: Uint8Array): unknown;
  responseSerialize(value: unknown): Uint8Array;
  responseDeserialize(bytes: Uint8Array): unknown;
  options?: MethodDescriptor["options"];
}

/** The metadata objects in-process calls were made with: the bridge tells refused requests by it. */
const calledWith = new WeakSet<Metadata>();

/** Whether any in-process call was made with this metadata object (an HTTP request's). */
export function callMadeWith(metadata: Metadata): boolean {
  return calledWith.has(metadata);
}

/** Why a call's signal aborted from outside its handler. */
type Abandon = { kind: "cancelled" } | { kind: "deadline" } | { kind: "failed"; error: unknown };

/** The methods of the services registered on the gRPC server, callable in-process. */
export class InProcessServer {
  private readonly methods = new Map<string, MethodEntry>();

  constructor(private readonly options: InProcessOptions) {}

  /** Registers a service, as `server.add` does (the same definition and implementation). */
  add(definition: CompatServiceDefinition, implementation: object): void {
    for (const [name, method] of Object.entries(normalizeDefinition(definition))) {
      const impl = (implementation as Record<string, (...args: unknown[]) => unknown>)[name].bind(implementation);
      const descriptor: MethodDescriptor = {
        path: method.path,
        requestStream: method.requestStream,
        responseStream: method.responseStream,
        options: method.options ?? {},
      };
      const base: Handler = method.responseStream
        ? async function* (request, context) {
            return yield* impl(request, context) as AsyncIterable<unknown>;
          }
        : async function* (request, context) {
            return await impl(request, context);
          };
      const middleware = this.options.middleware;
      const handler: Handler = middleware
        ? (request, context) =>
            middleware(
              {
                method: descriptor,
                requestStream: method.requestStream,
                request,
                responseStream: method.responseStream,
                next: base,
              } as never,
              context,
            ) as AsyncGenerator<unknown, unknown, undefined>
        : base;
      this.methods.set(method.path, { ...method, descriptor, handler });
    }
  }

  /**
   * A unary call (`request` is one message's bytes) or a client-streaming one (`request` is
   * the messages' bytes, in order; a failure while reading them cancels the call and is what
   * the caller gets, as is).
   */
  async unary(
    path: string,
    request: Uint8Array | AsyncIterable<Uint8Array>,
    settings: InProcessSettings,
  ): Promise<InProcessAnswer> {
    const call = await this.open(path, settings, false);
    try {
      const result = await call.until(
        (async () => {
          const iterator = call.entry.handler(call.request(request), call.context)[Symbol.asyncIterator]();
          try {
            let step = await iterator.next();
            for (;;) {
              if (!step.done) {
                step = await iterator.throw(new Error(`A middleware yielded a message, but ${UNARY_RETURNS}`));
              } else if (step.value == null) {
                step = await iterator.throw(new Error(`A middleware returned void, but ${UNARY_RETURNS}`));
              } else return step.value;
            }
          } finally {
            call.context.sendHeader();
          }
        })(),
      );
      const response = call.entry.responseSerialize(result);
      call.answered();
      return { response, header: call.sentHeader ?? Metadata(), trailer: call.context.trailer };
    } catch (error) {
      throw call.failed(error);
    }
  }

  /** A server-streaming call (`request` is one message's bytes) or a bidi one (the messages' bytes). */
  stream(path: string, request: Uint8Array | AsyncIterable<Uint8Array>, settings: InProcessSettings): InProcessStream {
    let call: OpenCall | undefined;
    let trailer: Metadata | undefined;
    const opening = Promise.resolve()
      .then(() => this.open(path, settings, true))
      .then((opened) => (call = opened));
    opening.catch(() => undefined);
    async function* answers(): AsyncGenerator<Uint8Array> {
      const open = await opening;
      let iterator: AsyncIterator<unknown, unknown, undefined> | undefined;
      let finished = false;
      try {
        iterator = open.entry.handler(open.request(request), open.context)[Symbol.asyncIterator]();
        for (;;) {
          const step = await open.until(iterator.next());
          if (step.done) {
            if (step.value != null) throw new Error(`A middleware returned a message, but ${STREAM_RETURNS}`);
            break;
          }
          open.context.sendHeader();
          yield open.entry.responseSerialize(step.value);
        }
        open.context.sendHeader();
        finished = true;
        open.answered();
        trailer = open.context.trailer;
      } catch (error) {
        finished = true;
        throw open.failed(error);
      } finally {
        if (!finished) {
          // The reader stopped early (the HTTP client went away, writing failed): the call is cancelled.
          open.abandon({ kind: "cancelled" });
        }
        // The handler's own cleanup (every middleware's finally) runs whatever the end.
        void iterator?.return?.(undefined)?.catch(() => undefined);
      }
    }
    return { [Symbol.asyncIterator]: answers, header: () => call?.sentHeader, trailer: () => trailer };
  }

  /**
   * Starts a call: refuses it as the gRPC transport would before any middleware (an unknown
   * method, a deadline already past, an upload refused from its headers), else sets up its
   * context, signal, deadline and log line.
   */
  private open(path: string, settings: InProcessSettings, responseStream: boolean): OpenCall | Promise<OpenCall> {
    calledWith.add(settings.metadata);
    // A copy, values included: the middleware sets and deletes keys of its own.
    const metadata = Metadata([...settings.metadata].map(([key, values]) => [key, [...values]] as [string, string[]]));
    setCallDeadline(metadata, settings.deadline);
    const end = this.options.follow?.(path, metadata);
    const requestId = saneRequestId(metadata.get("x-request-id"));
    const refuse = (code: Status, details: string, trailer = Metadata()): never => {
      end?.({ answered: code, requestId, peer: settings.peer });
      this.options.refused?.(path, code);
      throw new InProcessFailure(code, details, Metadata(), trailer);
    };
    const entry = this.methods.get(path);
    if (!entry || entry.descriptor.responseStream !== responseStream) {
      return refuse(Status.UNIMPLEMENTED, `The server does not implement the method ${path}`);
    }
    if (settings.deadline !== undefined && settings.deadline.getTime() <= Date.now()) {
      return refuse(Status.DEADLINE_EXCEEDED, "Deadline exceeded");
    }
    if (settings.signal.aborted) {
      end?.({ unanswered: Status.CANCELLED, requestId, peer: settings.peer });
      throw new InProcessFailure(Status.CANCELLED, "Cancelled on client", Metadata(), Metadata());
    }
    const opened = () =>
      new OpenCall(entry, metadata, settings, this.options.maxReceiveMessageBytes, (how) =>
        end?.({ ...how, requestId, peer: settings.peer }),
      );
    const checking = this.options.admission?.(path, metadata, settings.peer);
    if (!checking) return opened();
    return checking.then((refusal) =>
      refusal ? refuse(refusal.code, refusal.message, Metadata({ [STATUS_DETAILS_KEY]: refusal.details })) : opened(),
    );
  }
}

/** One call under way: its context, its signal, and how it ends for its caller. */
class OpenCall {
  readonly context: CallContext;
  /** The response headers, once sent. */
  sentHeader: Metadata | undefined;
  private readonly controller = new AbortController();
  private abandoned: Abandon | undefined;
  private ended = false;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly onCallerAbort = () => this.abandon({ kind: "cancelled" });

  constructor(
    readonly entry: MethodEntry,
    metadata: Metadata,
    private readonly settings: InProcessSettings,
    private readonly maxReceiveBytes: number,
    private readonly end: (how: { unanswered?: Status }) => void,
  ) {
    const header = Metadata();
    this.context = {
      metadata,
      peer: settings.peer,
      header,
      trailer: Metadata(),
      signal: this.controller.signal,
      sendHeader: () => {
        this.sentHeader ??= Metadata(header);
      },
    };
    settings.signal.addEventListener("abort", this.onCallerAbort, { once: true });
    // A deadline weeks away (beyond what a timer holds) is as good as none.
    const left = settings.deadline === undefined ? undefined : settings.deadline.getTime() - Date.now();
    if (left !== undefined && left <= MAX_TIMER_MS) this.timer = setTimeout(() => this.abandon({ kind: "deadline" }), left);
  }

  /** The request as the handler takes it: one decoded message, or a stream of them. */
  request(request: Uint8Array | AsyncIterable<Uint8Array>): unknown {
    if (!this.entry.descriptor.requestStream) {
      if (!(request instanceof Uint8Array)) throw new Error(`${this.entry.descriptor.path} takes one request message`);
      this.checkSize(request);
      return this.entry.requestDeserialize(request);
    }
    if (request instanceof Uint8Array) throw new Error(`${this.entry.descriptor.path} takes a stream of request messages`);
    return this.requests(request);
  }

  /**
   * The request stream, decoded. A failure reading it (the bridge's: a malformed item, a body
   * that stopped coming) cancels the call, and the caller gets that failure, as when a gRPC
   * client's request stream fails. The stream ends (AbortError) when the call is cancelled.
   */
  private async *requests(requests: AsyncIterable<Uint8Array>): AsyncGenerator<unknown> {
    const iterator = requests[Symbol.asyncIterator]();
    try {
      for (;;) {
        let step: IteratorResult<Uint8Array>;
        try {
          step = await this.until(iterator.next());
        } catch (error) {
          if (this.abandoned) throw error;
          this.abandon({ kind: "failed", error });
          throw this.abortError();
        }
        if (step.done) return;
        this.checkSize(step.value);
        yield this.entry.requestDeserialize(step.value);
      }
    } finally {
      // A request stream the call stopped reading is let go (its body is not read further).
      void iterator.return?.()?.catch(() => undefined);
    }
  }

  /** A message over the limit ends the call RESOURCE_EXHAUSTED, as grpc-js ends it. */
  private checkSize(bytes: Uint8Array): void {
    if (bytes.length <= this.maxReceiveBytes) return;
    const failure = new InProcessFailure(
      Status.RESOURCE_EXHAUSTED,
      `Received message larger than max (${bytes.length} vs. ${this.maxReceiveBytes})`,
      Metadata(),
      Metadata(),
    );
    this.abandon({ kind: "failed", error: failure });
    throw this.abortError();
  }

  private abortError(): Error {
    const error = new Error("The operation has been aborted");
    error.name = "AbortError";
    return error;
  }

  /**
   * Waits for a step of the handler (or of the request stream), unless the call is abandoned
   * first: the caller then stops waiting at once, as a gRPC client does.
   */
  until<T>(step: Promise<T>): Promise<T> {
    if (this.abandoned) {
      step.catch(() => undefined);
      return Promise.reject(this.abandoned);
    }
    const signal = this.controller.signal;
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(this.abandoned);
      signal.addEventListener("abort", onAbort, { once: true });
      step.then(
        (value) => {
          signal.removeEventListener("abort", onAbort);
          resolve(value);
        },
        (error: unknown) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      );
    });
  }

  /** The caller stops waiting (it went away, its deadline passed, its request stream failed). */
  abandon(why: Abandon): void {
    if (this.abandoned || this.ended) return;
    this.abandoned = why;
    // A message over the limit is answered with its status; anything else leaves the call unanswered.
    this.finish(
      why.kind === "deadline"
        ? Status.DEADLINE_EXCEEDED
        : why.kind === "failed" && why.error instanceof InProcessFailure
          ? why.error.code
          : Status.CANCELLED,
    );
    this.controller.abort();
  }

  /** The caller got its answer. */
  answered(): void {
    this.finish(undefined);
  }

  /** What the caller gets for a failure, as a gRPC client would see it; ends the call. */
  failed(error: unknown): unknown {
    const why = this.abandoned;
    if (why) {
      if (why.kind === "failed") return why.error;
      return why.kind === "deadline"
        ? new InProcessFailure(Status.DEADLINE_EXCEEDED, "Deadline exceeded", this.sentHeader ?? Metadata(), Metadata())
        : new InProcessFailure(Status.CANCELLED, "Cancelled on client", this.sentHeader ?? Metadata(), Metadata());
    }
    this.context.sendHeader();
    this.finish(undefined);
    const header = this.sentHeader ?? Metadata();
    if (error instanceof ServerError) return new InProcessFailure(error.code, error.details, header, this.context.trailer);
    if (isAbortError(error)) return new InProcessFailure(Status.CANCELLED, "The operation was cancelled", header, this.context.trailer);
    process.emitWarning(
      `${this.entry.descriptor.path}: Uncaught error in server implementation method. Server methods should only throw ServerError or AbortError. ${error instanceof Error ? error.stack : String(error)}`,
    );
    return new InProcessFailure(Status.UNKNOWN, "Unknown server error occurred", header, this.context.trailer);
  }

  private finish(unanswered: Status | undefined): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.timer);
    this.settings.signal.removeEventListener("abort", this.onCallerAbort);
    this.end({ unanswered });
  }
}

const REQUEST_ID = /^[\w.:-]{1,128}$/;
// nice-grpc's own words for a middleware that breaks the shape of a call.
const UNARY_RETURNS = "expected to only return a message for unary method";
const STREAM_RETURNS = "expected to return void for server streaming method";
/** The longest delay a Node timer takes. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function saneRequestId(sent: unknown): string | undefined {
  return typeof sent === "string" && REQUEST_ID.test(sent) ? sent : undefined;
}

/** A service definition as nice-grpc normalises it: ts-proto's, or nice-grpc's and grpc-js's as they are. */
export function normalizeDefinition(definition: CompatServiceDefinition): Record<string, NormalizedMethod> {
  if (!("methods" in definition && "fullName" in definition)) return definition as unknown as Record<string, NormalizedMethod>;
  const tsProto = definition as unknown as {
    fullName: string;
    methods: Record<
      string,
      {
        name: string;
        requestStream: boolean;
        responseStream: boolean;
        requestType: Codec;
        responseType: Codec;
        options: MethodDescriptor["options"];
      }
    >;
  };
  const out: Record<string, NormalizedMethod> = {};
  for (const [key, method] of Object.entries(tsProto.methods)) {
    const { requestType, responseType } = method;
    out[key] = {
      path: `/${tsProto.fullName}/${method.name}`,
      requestStream: method.requestStream,
      responseStream: method.responseStream,
      requestDeserialize: (bytes) => requestType.decode(bytes),
      requestSerialize: (value) => requestType.encode(requestType.fromPartial ? requestType.fromPartial(value) : value).finish(),
      responseDeserialize: (bytes) => responseType.decode(bytes),
      responseSerialize: (value) => responseType.encode(responseType.fromPartial ? responseType.fromPartial(value) : value).finish(),
      options: method.options,
    };
  }
  return out;
}

/** A ts-proto message type's codec. */
interface Codec {
  decode(bytes: Uint8Array): unknown;
  encode(value: unknown): { finish(): Uint8Array };
  fromPartial?(value: unknown): unknown;
}
