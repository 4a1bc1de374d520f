import { DomainError } from "../errors.js";

/** The process is holding as many request bytes as it may: try again shortly. */
export class ServerBusy extends DomainError {
  constructor(retryAfterMs: number) {
    super("UNAVAILABLE", "glimpse is receiving as many uploads as it can hold; retry shortly", { retryAfterMs });
  }
}

/**
 * A process-wide bound on bytes held in memory for request bodies: a request reserves what it
 * reads (or, when it declares a Content-Length, all of it up front) and gives it back when its
 * response is done. A reservation past the bound is refused at once; the caller answers 503
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
