import { parseArgs, type ParseArgsConfig } from "node:util";

/** Bad command-line usage: printed with the command's usage text, exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** A command failed in a way the user can act on: its message is printed, exit status 1. */
export class CommandError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CommandError";
  }
}

/** Exit statuses scripts can rely on. */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

/** The flags of a command, as node:util parseArgs takes them. */
export type ParseArgsOptions = NonNullable<ParseArgsConfig["options"]>;
type OptionSpecs = ParseArgsOptions;

/** One command: its usage text and the flags it takes (`--help` is added to every command). */
export interface CommandSpec<O extends OptionSpecs> {
  /** `glimpse search`, used in messages. */
  name: string;
  usage: string;
  options: O;
  /** Positional arguments allowed: [fewest, most]. */
  positionals: [number, number];
}

/** Flags every command that talks to a server takes. */
export const CONNECTION_OPTIONS = {
  address: { type: "string" },
  key: { type: "string" },
  timeout: { type: "string" },
} as const satisfies OptionSpecs;

/** The lines describing {@link CONNECTION_OPTIONS} in usage texts. */
export const CONNECTION_USAGE = `connection (flags win over the environment):
  --address <host:port>  gRPC address, or several separated by commas (round-robin)
                         (GLIMPSE_ADDRESS; default 127.0.0.1:50051)
  --key <secret>         API key (GLIMPSE_API_KEY)
  --timeout <seconds>    deadline of each call, retries included (default 30)`;

/**
 * Parses `argv` (the words after the command) with node:util's parseArgs, strictly: an
 * unknown flag, a missing value or a wrong number of arguments is a UsageError. Returns
 * undefined when `--help` was asked for (the caller prints the usage and exits 0).
 */
export function parseCommand<O extends OptionSpecs>(
  argv: readonly string[],
  spec: CommandSpec<O>,
): { values: ReturnType<typeof parseArgs<{ options: O; allowPositionals: true; strict: true }>>["values"]; positionals: string[] } | undefined {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: { ...spec.options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(usageMessage(err));
  }
  if ((parsed.values as { help?: boolean }).help) return undefined;
  const [fewest, most] = spec.positionals;
  const count = parsed.positionals.length;
  if (count < fewest) throw new UsageError(fewest === 1 ? "missing argument" : `expected at least ${fewest} arguments, got ${count}`);
  if (count > most) throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[most])}`);
  return parsed as never;
}

/** parseArgs' messages, without its advice to use `--` (which these commands do not need). */
function usageMessage(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/\. To specify a positional argument.*$/s, "").replace(/^Unknown option '(.*)'$/, "unknown flag $1");
}

/** A whole number in [min, max] from a flag's text. */
export function integerFlag(text: string | undefined, flag: string, min: number, max: number, fallback: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`${flag} must be a whole number, got ${JSON.stringify(text)}`);
  const value = Number(text);
  if (value < min || value > max) throw new UsageError(`${flag} must be between ${min} and ${max}, got ${value}`);
  return value;
}

/** A number in [min, max] from a flag's text. */
export function numberFlag(text: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < min || value > max) {
    throw new UsageError(`${flag} must be a number between ${min} and ${max}, got ${JSON.stringify(text)}`);
  }
  return value;
}

/** Rows as aligned columns (the last column is not padded). */
export function table(rows: readonly (readonly string[])[]): string {
  if (rows.length === 0) return "";
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => (row[column] ?? "").length)));
  return rows
    .map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]))).join("  ").trimEnd())
    .join("\n")
    .concat("\n");
}

/** `bytes` in B, KiB, MiB or GiB with one decimal above bytes. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
