import path from "node:path";

/** Severity threshold for the structured log; `silent` turns logging off. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

/** Every runtime option of glimpse, after parsing and validation. */
export interface Options {
  /** Root of everything glimpse writes: blobs, index snapshots, the embedded database. */
  dataDir: string;
  /** External PostgreSQL URL; `undefined` starts the embedded server under `dataDir`. */
  databaseUrl: string | undefined;
  /** Connections in the postgres.js pool. */
  databasePoolMax: number;
  /** Interface the gRPC server binds. */
  grpcHost: string;
  /** Port the gRPC server binds; 0 picks a free one. */
  grpcPort: number;
  /** Port of the HTTP/JSON bridge; 0 picks a free one. */
  httpPort: number;
  /** Minimum severity written to the log. */
  logLevel: LogLevel;
  /** How long shutdown lets in-flight calls run before aborting them, in milliseconds. */
  shutdownGraceMs: number;
  /** Base of the absolute image URLs glimpse hands out (the HTTP bridge's address). */
  publicUrl: string;
  /** Largest accepted upload, in bytes. */
  maxUploadBytes: number;
  /** Largest accepted image, in pixels (width x height x frames); larger is a decompression bomb. */
  maxImagePixels: number;
}

/** One documented option: where it comes from and how its text becomes a value. */
interface OptionSpec<K extends keyof Options> {
  key: K;
  env: string;
  flag?: string;
  doc: string;
  /** The default as a user would write it in the environment; `undefined` means unset. */
  default: string | undefined;
  parse: (raw: string | undefined, env: string) => Options[K];
}

/** A configuration that cannot be used; the message names every offending variable. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

function integer(min: number, max: number) {
  return (raw: string | undefined, env: string): number => {
    const text = (raw ?? "").trim();
    if (!/^-?\d+$/.test(text)) throw new Error(`${env} must be an integer, got ${JSON.stringify(raw)}`);
    const value = Number(text);
    if (value < min || value > max) throw new Error(`${env} must be between ${min} and ${max}, got ${value}`);
    return value;
  };
}

function oneOf<T extends string>(values: readonly T[]) {
  return (raw: string | undefined, env: string): T => {
    const text = (raw ?? "").trim().toLowerCase();
    if (!(values as readonly string[]).includes(text)) {
      throw new Error(`${env} must be one of ${values.join(", ")}, got ${JSON.stringify(raw)}`);
    }
    return text as T;
  };
}

function postgresUrl(raw: string | undefined, env: string): string | undefined {
  if (raw === undefined || raw.trim() === "") return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`${env} must be a URL such as postgres://user@host:5432/db`);
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new Error(`${env} must use the postgres:// scheme, got ${url.protocol}`);
  }
  return raw;
}

function host(raw: string | undefined, env: string): string {
  const text = (raw ?? "").trim();
  if (text === "" || /\s/.test(text)) throw new Error(`${env} must be a host name or IP address`);
  return text;
}

function directory(raw: string | undefined, env: string): string {
  const text = (raw ?? "").trim();
  if (text === "") throw new Error(`${env} must be a directory path`);
  return path.resolve(text);
}

function publicUrl(raw: string | undefined, env: string): string {
  // Empty here means "derive from the HTTP port"; loadOptions fills it in.
  if (raw === undefined || raw.trim() === "") return "";
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw new Error(`${env} must be an absolute http(s) URL such as https://images.example.com`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`${env} must be an http(s) URL`);
  return url.toString().replace(/\/+$/, "");
}

/** The option table: the single source for parsing, validation and the README's table. */
export const optionSpecs = [
  {
    key: "dataDir",
    env: "GLIMPSE_DATA_DIR",
    flag: "--data-dir",
    default: "./data",
    doc: "Directory for blobs, index snapshots and the embedded PostgreSQL cluster.",
    parse: directory,
  } satisfies OptionSpec<"dataDir">,
  {
    key: "databaseUrl",
    env: "DATABASE_URL",
    flag: "--database-url",
    default: undefined,
    doc: "PostgreSQL URL. Unset: glimpse runs its own embedded PostgreSQL under the data directory.",
    parse: postgresUrl,
  } satisfies OptionSpec<"databaseUrl">,
  {
    key: "databasePoolMax",
    env: "GLIMPSE_DB_POOL_MAX",
    default: "10",
    doc: "Maximum PostgreSQL connections (1-100).",
    parse: integer(1, 100),
  } satisfies OptionSpec<"databasePoolMax">,
  {
    key: "grpcHost",
    env: "GLIMPSE_GRPC_HOST",
    flag: "--grpc-host",
    default: "127.0.0.1",
    doc: "Interface the gRPC server listens on.",
    parse: host,
  } satisfies OptionSpec<"grpcHost">,
  {
    key: "grpcPort",
    env: "GLIMPSE_GRPC_PORT",
    flag: "--grpc-port",
    default: "50051",
    doc: "gRPC port (0 picks a free port).",
    parse: integer(0, 65535),
  } satisfies OptionSpec<"grpcPort">,
  {
    key: "httpPort",
    env: "GLIMPSE_HTTP_PORT",
    flag: "--http-port",
    default: "8080",
    doc: "HTTP/JSON bridge port (0 picks a free port).",
    parse: integer(0, 65535),
  } satisfies OptionSpec<"httpPort">,
  {
    key: "logLevel",
    env: "GLIMPSE_LOG_LEVEL",
    flag: "--log-level",
    default: "info",
    doc: "Log threshold: debug, info, warn, error or silent.",
    parse: oneOf(["debug", "info", "warn", "error", "silent"] as const),
  } satisfies OptionSpec<"logLevel">,
  {
    key: "shutdownGraceMs",
    env: "GLIMPSE_SHUTDOWN_GRACE_MS",
    default: "10000",
    doc: "On SIGTERM/SIGINT, milliseconds in-flight calls may take before they are aborted.",
    parse: integer(0, 600_000),
  } satisfies OptionSpec<"shutdownGraceMs">,
  {
    key: "publicUrl",
    env: "GLIMPSE_PUBLIC_URL",
    flag: "--public-url",
    default: undefined,
    doc: "Base of the image URLs glimpse returns (default http://127.0.0.1:<GLIMPSE_HTTP_PORT>).",
    parse: publicUrl,
  } satisfies OptionSpec<"publicUrl">,
  {
    key: "maxUploadBytes",
    env: "GLIMPSE_MAX_UPLOAD_BYTES",
    default: String(25 * 1024 * 1024),
    doc: "Largest accepted upload in bytes (default 25 MiB).",
    parse: integer(1024, 1024 * 1024 * 1024),
  } satisfies OptionSpec<"maxUploadBytes">,
  {
    key: "maxImagePixels",
    env: "GLIMPSE_MAX_IMAGE_PIXELS",
    default: "100000000",
    doc: "Largest accepted image in pixels, all frames together (default 100 megapixels).",
    parse: integer(1, 2_000_000_000),
  } satisfies OptionSpec<"maxImagePixels">,
] as const;

/** Splits `--flag value` and `--flag=value` arguments into a flag -> text map. */
function parseFlags(argv: readonly string[]): { flags: Map<string, string>; problems: string[] } {
  const flags = new Map<string, string>();
  const problems: string[] = [];
  const known = new Set(optionSpecs.map((spec) => ("flag" in spec ? spec.flag : undefined)).filter(Boolean));
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    if (!known.has(name)) {
      problems.push(`unknown argument ${JSON.stringify(arg)}`);
      continue;
    }
    if (eq >= 0) flags.set(name, arg.slice(eq + 1));
    else if (i + 1 < argv.length) flags.set(name, argv[++i]);
    else problems.push(`${name} needs a value`);
  }
  return { flags, problems };
}

/**
 * Builds the options from the environment and command-line flags (flags win).
 * Every bad value is collected, so one start reports all of them.
 * @throws ConfigError naming each bad variable or flag.
 */
export function loadOptions(
  env: NodeJS.ProcessEnv = process.env,
  argv: readonly string[] = [],
  overrides: Partial<Options> = {},
): Options {
  const { flags, problems } = parseFlags(argv);
  const options: Record<string, unknown> = {};
  for (const spec of optionSpecs) {
    const flag = "flag" in spec ? spec.flag : undefined;
    const fromFlag = flag ? flags.get(flag) : undefined;
    const source = fromFlag !== undefined ? `${flag} (${spec.env})` : spec.env;
    const raw = fromFlag ?? env[spec.env] ?? spec.default;
    try {
      options[spec.key] = spec.parse(raw, source);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const result = { ...(options as unknown as Options), ...overrides };
  if (result.publicUrl === "") result.publicUrl = `http://127.0.0.1:${result.httpPort}`;
  return result;
}
