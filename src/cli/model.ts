import path from "node:path";
import { ConfigError, loadOptions } from "../config/options.js";
import { isModelInstalled, modelDirectory, pullModel, type PullProgress } from "../embedding/pull.js";
import { findModel, MODELS, type ModelEntry } from "../embedding/registry.js";
import { DomainError } from "../errors.js";
import type { LogFields, Logger } from "../logging/logger.js";

/** Where the command writes; `isTTY` picks the redrawn progress bar over periodic lines. */
export interface CommandOutput {
  write(text: string): unknown;
  isTTY?: boolean;
}

/** What `runModelCommand` runs against; each defaults to the process's own. */
export interface ModelCommandContext {
  env?: NodeJS.ProcessEnv;
  registry?: readonly ModelEntry[];
  stdout?: CommandOutput;
  stderr?: CommandOutput;
  signal?: AbortSignal;
  /** Retries per file after transient failures (PullOptions.retries). */
  retries?: number;
}

const USAGE = `usage: glimpse model <command> [flags]

commands:
  pull [<id>]   download, verify and install a model into the model cache
                (default: the model named by GLIMPSE_MODEL)
  list          list the known models: id, dimension, whether installed, files

flags: any flag of \`glimpse serve\`, such as --data-dir; the model cache is GLIMPSE_MODEL_CACHE
and the download host GLIMPSE_MODEL_BASE_URL.
`;

/**
 * `glimpse model ...`: runs the subcommand in `argv` (the words after `model`) and returns
 * the exit status: 0 done, 1 failed, 2 bad usage or configuration, 130 cancelled.
 */
export async function runModelCommand(argv: readonly string[], context: ModelCommandContext = {}): Promise<number> {
  const stdout = context.stdout ?? process.stdout;
  const stderr = context.stderr ?? process.stderr;
  const registry = context.registry ?? MODELS;
  const [command, ...rest] = argv;
  if (command === undefined) {
    stderr.write(USAGE);
    return 2;
  }
  if (command === "help" || command === "--help" || command === "-h" || rest.includes("--help") || rest.includes("-h")) {
    stdout.write(USAGE);
    return 0;
  }
  if (command !== "pull" && command !== "list") {
    stderr.write(`glimpse: unknown model command ${JSON.stringify(command)}\n\n${USAGE}`);
    return 2;
  }
  const positional = rest.length > 0 && !rest[0].startsWith("-") ? rest[0] : undefined;
  const flags = positional === undefined ? rest : rest.slice(1);
  let options;
  try {
    options = loadOptions(context.env ?? process.env, flags);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    stderr.write(`glimpse: ${err.message}\n`);
    return 2;
  }
  if (command === "list") {
    if (positional !== undefined) {
      stderr.write(`glimpse: model list takes no model id\n`);
      return 2;
    }
    await listModels(registry, options.modelCacheDir, stdout);
    return 0;
  }

  const id = positional ?? options.model;
  if (positional === undefined && path.isAbsolute(id)) {
    stderr.write(`glimpse: GLIMPSE_MODEL is the directory ${id}; there is nothing to pull (name a model: ${ids(registry)})\n`);
    return 2;
  }
  const entry = findModel(id, registry);
  if (!entry) {
    stderr.write(`glimpse: unknown model ${JSON.stringify(id)}; known models: ${ids(registry)}\n`);
    return 2;
  }
  const dir = modelDirectory(options.modelCacheDir, entry.id);
  if (await isModelInstalled(options.modelCacheDir, entry)) {
    stdout.write(`${entry.id} is already installed in ${dir}\n`);
    return 0;
  }
  const progress = new ProgressDisplay(stderr);
  try {
    await pullModel(entry, {
      cacheDir: options.modelCacheDir,
      baseUrl: options.modelBaseUrl,
      signal: context.signal,
      onProgress: (p) => progress.update(p),
      logger: options.logLevel === "silent" ? undefined : consoleLogger(stderr, progress),
      retries: context.retries,
    });
  } catch (err) {
    progress.interrupt();
    if (!(err instanceof DomainError)) throw err;
    if (err.code === "CANCELLED") {
      stderr.write(`glimpse: ${err.message}\n`);
      return 130;
    }
    let message = `glimpse: ${err.message}`;
    if (err.code === "UNAVAILABLE") {
      message +=
        `; copy ${entry.files.map((f) => f.name).join(", ")} into ${dir} and run \`glimpse model pull ${entry.id}\` again ` +
        "(the files are checked, nothing is downloaded), or set GLIMPSE_MODEL to a model directory";
    }
    stderr.write(`${message}\n`);
    return 1;
  }
  stdout.write(`installed ${entry.id} in ${dir}\n`);
  return 0;
}

/**
 * Entry point for `glimpse model`: runs against the process's environment and streams, aborts
 * the pull on SIGINT/SIGTERM (a second signal exits at once) and sets the exit code.
 */
export async function modelMain(argv: readonly string[]): Promise<void> {
  const controller = new AbortController();
  const onSignal = () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort(new Error("interrupted"));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    process.exitCode = await runModelCommand(argv, { signal: controller.signal });
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

async function listModels(registry: readonly ModelEntry[], cacheDir: string, out: CommandOutput): Promise<void> {
  const rows = [["ID", "DIMENSION", "INSTALLED", "FILES"]];
  for (const entry of registry) {
    const installed = await isModelInstalled(cacheDir, entry);
    rows.push([entry.id, String(entry.dimension), installed ? "yes" : "no", entry.files.map((f) => f.name).join(", ")]);
  }
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  for (const row of rows) {
    out.write(row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]))).join("  ") + "\n");
  }
  out.write(`model cache: ${cacheDir}\n`);
}

function ids(registry: readonly ModelEntry[]): string {
  return registry.map((e) => e.id).join(", ");
}

const MIB = 1024 * 1024;
/** Fewest milliseconds between two redraws of the terminal line. */
const REDRAW_MS = 100;

/**
 * Download progress: on a terminal one line per file, redrawn in place with percent, MiB and
 * rate; elsewhere (logs, pipes) a line at every tenth of a file.
 */
class ProgressDisplay {
  private file: string | undefined;
  private startedAt = 0;
  private startBytes = 0;
  private lastDraw = 0;
  private lastTenth = -1;
  /** Whether a terminal line is drawn and not yet ended. */
  private open = false;

  constructor(private readonly out: CommandOutput) {}

  update(p: PullProgress): void {
    const now = Date.now();
    if (p.file !== this.file) {
      this.interrupt();
      this.file = p.file;
      this.startedAt = now;
      this.startBytes = p.receivedBytes;
      this.lastDraw = 0;
      this.lastTenth = p.totalBytes ? Math.floor((10 * p.receivedBytes) / p.totalBytes) : -1;
      if (!this.out.isTTY && p.receivedBytes > 0 && !p.done) {
        this.out.write(`${p.file}: resuming at ${size(p.receivedBytes)}\n`);
      }
    }
    if (this.out.isTTY) {
      if (!p.done && now - this.lastDraw < REDRAW_MS) return;
      this.lastDraw = now;
      this.out.write(`\r${this.describe(p, now)}\x1b[K`);
      this.open = true;
      if (p.done) this.interrupt();
      return;
    }
    if (p.done) {
      this.out.write(`${p.file}: done, ${size(p.receivedBytes)}, sha256 verified\n`);
      this.file = undefined;
      return;
    }
    if (!p.totalBytes) return;
    const tenth = Math.floor((10 * p.receivedBytes) / p.totalBytes);
    // The last tenth is left to the "done" line.
    if (tenth > this.lastTenth && tenth < 10) {
      this.lastTenth = tenth;
      this.out.write(`${this.describe(p, now)}\n`);
    }
  }

  /** Ends a half-drawn terminal line so other output starts on its own line. */
  interrupt(): void {
    if (this.open) this.out.write("\n");
    this.open = false;
  }

  /** `vision_model.onnx   42%  27.1/64.5 MiB  12.3 MiB/s` on a terminal, `vision_model.onnx: 42% (27.1/64.5 MiB, 12.3 MiB/s)` elsewhere. */
  private describe(p: PullProgress, now: number): string {
    const percent = p.done ? "done" : p.totalBytes ? `${Math.floor((100 * p.receivedBytes) / p.totalBytes)}%` : "";
    const details = [p.totalBytes ? size(p.receivedBytes, p.totalBytes) : size(p.receivedBytes)];
    const seconds = (now - this.startedAt) / 1000;
    if (seconds >= 0.5) details.push(`${((p.receivedBytes - this.startBytes) / MIB / seconds).toFixed(1)} MiB/s`);
    if (!this.out.isTTY) return `${p.file}: ${percent} (${details.join(", ")})`;
    return [p.file.padEnd(18), percent.padStart(4), ...details].join("  ");
  }
}

/** `bytes` in MiB with one decimal, whole KiB below 1 MiB, bytes below 1 KiB; `of` is shown after a slash in the same unit. */
function size(bytes: number, of?: number): string {
  if ((of ?? bytes) < 1024) return of === undefined ? `${bytes} B` : `${bytes}/${of} B`;
  const small = (of ?? bytes) < MIB;
  const unit = small ? "KiB" : "MiB";
  const text = (n: number) => (small ? (n / 1024).toFixed(0) : (n / MIB).toFixed(1));
  return of === undefined ? `${text(bytes)} ${unit}` : `${text(bytes)}/${text(of)} ${unit}`;
}

/** Shows the pull's warnings (retries, waiting on another pull) as plain lines. */
function consoleLogger(out: CommandOutput, progress: ProgressDisplay): Logger {
  const emit = (msg: string, fields?: LogFields) => {
    progress.interrupt();
    const details = Object.entries(fields ?? {})
      .filter(([key]) => key !== "model")
      .map(([key, value]) => `${key}=${value instanceof Error ? value.message : String(value)}`);
    out.write(`glimpse: ${msg}${details.length > 0 ? ` (${details.join(", ")})` : ""}\n`);
  };
  const logger: Logger = { debug: () => {}, info: () => {}, warn: emit, error: emit, child: () => logger };
  return logger;
}
