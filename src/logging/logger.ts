import type { LogLevel } from "../config/options.js";
import { callLogFields } from "../observability/call-scope.js";

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

/** Structured fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** A JSON-lines logger: one object per line with time, level, message and fields. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line it writes. */
  child(fields: LogFields): Logger;
}

/** Turns errors into plain objects, since JSON.stringify drops their message and stack. */
function serialise(value: unknown): unknown {
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: value.message, stack: value.stack };
    if (value.cause !== undefined) out.cause = serialise(value.cause);
    return out;
  }
  if (typeof value === "bigint") return value.toString();
  return value;
}

/** Creates a logger writing to `write` (stdout by default) at or above `level`. */
export function createLogger(
  level: LogLevel,
  write: (line: string) => void = (line) => process.stdout.write(line),
  base: LogFields = {},
): Logger {
  return new JsonLogger(rank[level], write, base);
}

/**
 * The logger of createLogger. A class rather than closures: the server makes a child for
 * every call (its request id), most of which never write a line.
 */
class JsonLogger implements Logger {
  constructor(
    private readonly threshold: number,
    private readonly write: (line: string) => void,
    private readonly base: LogFields,
  ) {}

  debug(msg: string, fields?: LogFields): void {
    if (rank.debug >= this.threshold) this.emit("debug", msg, fields);
  }

  info(msg: string, fields?: LogFields): void {
    if (rank.info >= this.threshold) this.emit("info", msg, fields);
  }

  warn(msg: string, fields?: LogFields): void {
    if (rank.warn >= this.threshold) this.emit("warn", msg, fields);
  }

  error(msg: string, fields?: LogFields): void {
    if (rank.error >= this.threshold) this.emit("error", msg, fields);
  }

  child(fields: LogFields): Logger {
    return new JsonLogger(this.threshold, this.write, { ...this.base, ...fields });
  }

  private emit(lvl: Exclude<LogLevel, "silent">, msg: string, fields?: LogFields): void {
    // Inside an observed call, the call's request id and trace id (see observability/call-scope.ts).
    const call = callLogFields();
    const record: LogFields = { time: new Date().toISOString(), level: lvl, msg, ...call, ...this.base };
    if (fields) for (const [k, v] of Object.entries(fields)) record[k] = serialise(v);
    this.write(JSON.stringify(record) + "\n");
  }
}
