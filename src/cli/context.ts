import { createGlimpseClient, type GlimpseClient, type RetryEvent } from "../client/index.js";
import { numberFlag, UsageError } from "./args.js";

/** Where a command writes; `isTTY` picks redrawn progress over plain lines. */
export interface Output {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** What a command runs against: the environment and streams of the process by default. */
export interface CliContext {
  env: NodeJS.ProcessEnv;
  stdout: Output;
  stderr: Output;
  /** Aborted on SIGINT/SIGTERM: commands stop starting new work and report what was done. */
  signal: AbortSignal;
}

/** The address a command uses when neither `--address` nor GLIMPSE_ADDRESS names one. */
export const DEFAULT_ADDRESS = "127.0.0.1:50051";

/** The environment variables the client commands read. */
export const CLIENT_ENV = { address: "GLIMPSE_ADDRESS", key: "GLIMPSE_API_KEY" } as const;

/** Connection flags as parsed by {@link parseCommand} with CONNECTION_OPTIONS. */
export interface ConnectionFlags {
  address?: string;
  key?: string;
  timeout?: string;
}

/**
 * A client for the server named by the flags or the environment (flags win). The key is
 * required: every call but health needs one, and saying so here beats an UNAUTHENTICATED.
 */
export function connect(context: CliContext, flags: ConnectionFlags, onRetry?: (event: RetryEvent) => void): GlimpseClient {
  const address = (flags.address ?? context.env[CLIENT_ENV.address] ?? DEFAULT_ADDRESS)
    .split(",")
    .map((a) => a.trim())
    .filter((a) => a !== "");
  if (address.length === 0) throw new UsageError("--address names no address");
  const key = flags.key ?? context.env[CLIENT_ENV.key];
  if (key === undefined || key.trim() === "") {
    throw new UsageError(`an API key is needed: pass --key or set ${CLIENT_ENV.key} (glimpse keys create prints one)`);
  }
  const timeout = numberFlag(flags.timeout, "--timeout", 0.001, 86_400);
  return createGlimpseClient({
    address,
    key: key.trim(),
    deadlineMs: timeout === undefined ? 30_000 : Math.ceil(timeout * 1000),
    onRetry,
  });
}
