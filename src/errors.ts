/**
 * The one error type services throw. Transports map `code` to a gRPC status (and from there to
 * HTTP); `message` is safe to show to callers, `cause` is only ever logged.
 */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "UNAUTHENTICATED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "CANCELLED"
  | "DEADLINE_EXCEEDED"
  | "UNIMPLEMENTED"
  | "UNAVAILABLE"
  | "INTERNAL";

/**
 * A failure to start that is the operator's to fix, not a bug (a data directory another
 * glimpse is using, a port already taken): its message says what is wrong and what to do. It
 * carries no stack trace, so whatever prints it (the CLI, the logger) prints one line.
 */
export class UserFacingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UserFacingError";
    this.stack = message;
  }
}

/** One bad request field: `field` is the request path (`filter.tags[2]`), `description` says why. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** Extra, machine-readable facts an error carries to the caller. */
export interface ErrorDetails {
  /** Request fields that failed validation (google.rpc.BadRequest). */
  violations?: FieldViolation[];
  /** How long the caller should wait before retrying (google.rpc.RetryInfo). */
  retryAfterMs?: number;
  /** The underlying failure; logged, never sent. */
  cause?: unknown;
}

/** A failure with a status code and a message fit for the caller. */
export class DomainError extends Error {
  readonly violations: FieldViolation[];
  readonly retryAfterMs: number | undefined;

  constructor(
    readonly code: ErrorCode,
    message: string,
    details: ErrorDetails = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "DomainError";
    this.violations = details.violations ?? [];
    this.retryAfterMs = details.retryAfterMs;
  }
}

/** INVALID_ARGUMENT for one or more named fields; the message lists them all. */
export function invalidArgument(violations: FieldViolation | FieldViolation[]): DomainError {
  const list = Array.isArray(violations) ? violations : [violations];
  const message = list.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new DomainError("INVALID_ARGUMENT", message, { violations: list });
}

/** NOT_FOUND for a named kind of thing and its id. */
export function notFound(kind: string, id: string | number | bigint): DomainError {
  return new DomainError("NOT_FOUND", `${kind} ${String(id)} not found`);
}

/**
 * Collects field violations so a request reports every bad field at once.
 * `check` records a violation when its condition is false; `throwIfAny` raises them together.
 */
export class Violations {
  private readonly list: FieldViolation[] = [];

  /** Records `description` against `field` unless `ok`. Returns `ok` so callers can branch. */
  check(ok: boolean, field: string, description: string): boolean {
    if (!ok) this.list.push({ field, description });
    return ok;
  }

  add(field: string, description: string): void {
    this.list.push({ field, description });
  }

  get empty(): boolean {
    return this.list.length === 0;
  }

  throwIfAny(): void {
    if (this.list.length > 0) throw invalidArgument(this.list);
  }
}
