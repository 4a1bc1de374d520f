import { DomainError } from "../errors.js";

/** The process is holding as many request bytes as it may: try again shortly. */
export class ServerBusy extends DomainError {
  constructor(retryAfterMs: number) {
    super("UNAVAILABLE", "glimpse is receiving as many uploads as it can hold; retry shortly", { retryAfterMs });
  }
}

/**
 * What the process holds for each byte of an upload body, beyond the body itself: the HTTP
 * bridge keeps the raw body, its text, the parsed JSON string, the decoded bytes and the
 * encoded gRPC message while a call is forwarded (measured: about 4.3 times the body at the
 * peak, bench/results/upload-rss.md); a gRPC upload keeps the received message and its
 * decoded copy. Reservations count these, so the bound is on memory, not on wire bytes.
 */
export const HTTP_BODY_MEMORY_FACTOR = 4;
export const GRPC_UPLOAD_MEMORY_FACTOR = 2;

/**
 * A process-wide bound on bytes held in memory for request bodies: a request reserves what it
 * reads (or, when it declares a Content-Length, all of it up front), times what holding it
 * costs, and gives it back when its response is done. A reservation past the bound is refused at once; the caller answers 503
 * with a retry delay rather than holding more memory.
 */
export class ByteBudget {
  private used = 0;

  constructor(
    readonly limit: number,
    /** The delay a refused caller is told to wait. */
    private readonly retryAfterMs = 1000,
  ) {}

  /** Reserves `bytes`; throws {@link ServerBusy} when they do not fit. */
  take(bytes: number): void {
    if (bytes <= 0) return;
    if (this.used + bytes > this.limit) throw new ServerBusy(this.retryAfterMs);
    this.used += bytes;
  }

  /** Returns `bytes` reserved earlier. */
  give(bytes: number): void {
    this.used = Math.max(0, this.used - bytes);
  }

  /** Bytes reserved now. */
  get inUse(): number {
    return this.used;
  }
}
