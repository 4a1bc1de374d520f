import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";
import { randomBytes } from "node:crypto";
import { createChannel, createClientFactory, Metadata, type Channel } from "nice-grpc";
import postgres from "postgres";
import { startApp, type App } from "../src/app.js";
import { loadOptions, type Options } from "../src/config/options.js";
import { ImageServiceDefinition, type ImageServiceClient } from "../src/gen/glimpse/image/v1/image_service.js";
import { createLogger } from "../src/logging/logger.js";
import { createScratchDatabase, type ScratchDatabase } from "../src/store/scratch-database.js";

/** The repository root (bench/ sits directly under it). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** Where benchmarks write their JSON and Markdown results. */
export const RESULTS_DIR = path.join(REPO_ROOT, "bench", "results");

/**
 * The server benchmarks create their databases on. Benchmarks are their own small programs,
 * so this is their one place that reads the environment: DATABASE_URL names an admin
 * connection (any database on the server), defaulting to the local trust-auth server.
 */
export const ADMIN_DATABASE_URL = process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";

// ---------------------------------------------------------------------------------------------
// Statistics and timing

/** Latency figures of one measured series, in milliseconds. */
export interface LatencySummary {
  n: number;
  p50_ms: number;
  p99_ms: number;
  mean_ms: number;
  min_ms: number;
  max_ms: number;
}

/** Nearest-rank percentile (p in 0..100) of `values`; NaN for an empty series. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** p50, p99, mean, min and max of a series of millisecond samples, rounded to 0.01 ms. */
export function summarise(samplesMs: readonly number[]): LatencySummary {
  const mean = samplesMs.reduce((a, b) => a + b, 0) / Math.max(1, samplesMs.length);
  return {
    n: samplesMs.length,
    p50_ms: round(percentile(samplesMs, 50)),
    p99_ms: round(percentile(samplesMs, 99)),
    mean_ms: round(mean),
    min_ms: round(Math.min(...samplesMs)),
    max_ms: round(Math.max(...samplesMs)),
  };
}

/** Rounds to `digits` decimals (2 by default), for readable result files. */
export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Starts a monotonic stopwatch; the returned function gives the milliseconds since. */
export function startTimer(): () => number {
  const start = process.hrtime.bigint();
  return () => Number(process.hrtime.bigint() - start) / 1e6;
}

/** Runs `fn` once and returns its result with the milliseconds it took. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const elapsed = startTimer();
  const value = await fn();
  return { value, ms: elapsed() };
}

/**
 * Runs `task(i)` for i in 0..count-1 with at most `concurrency` in flight (bounded: every
 * worker takes the next index until none is left). Returns each task's latency, in index
 * order, and the wall time of the whole run.
 */
export async function runPool(
  count: number,
  concurrency: number,
  task: (i: number) => Promise<void>,
): Promise<{ latenciesMs: number[]; wallMs: number }> {
  const latenciesMs = new Array<number>(count).fill(0);
  let next = 0;
  const wall = startTimer();
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const elapsed = startTimer();
      await task(i);
      latenciesMs[i] = elapsed();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { latenciesMs, wallMs: wall() };
}

/** Garbage collection and event-loop stalls of this process over a measured phase. */
export interface ProcessStalls {
  gc_count: number;
  gc_total_ms: number;
  gc_max_ms: number;
  event_loop_delay_p50_ms: number;
  event_loop_delay_p99_ms: number;
  event_loop_delay_max_ms: number;
}

/**
 * Starts recording GC pauses and event-loop delay; the returned function stops and reports.
 * Client and server share the benchmark's process, so its stalls show up in both latencies.
 */
export function watchProcessStalls(): () => ProcessStalls {
  const pauses: number[] = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) pauses.push(entry.duration);
  });
  observer.observe({ entryTypes: ["gc"] });
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  return () => {
    loop.disable();
    observer.disconnect();
    return {
      gc_count: pauses.length,
      gc_total_ms: round(pauses.reduce((a, b) => a + b, 0)),
      gc_max_ms: round(Math.max(0, ...pauses)),
      event_loop_delay_p50_ms: round(loop.percentile(50) / 1e6),
      event_loop_delay_p99_ms: round(loop.percentile(99) / 1e6),
      event_loop_delay_max_ms: round(loop.max / 1e6),
    };
  };
}

// ---------------------------------------------------------------------------------------------
// Environment and results

/** Where and when a benchmark ran; goes at the top of every result file. */
export interface RunEnvironment {
  date: string;
  node: string;
  cpu: string;
  cores: number;
  platform: string;
  memory_gib: number;
  postgres?: string;
}

/** The machine and runtime, plus the PostgreSQL server version of `adminUrl`'s server. */
export async function runEnvironment(adminUrl = ADMIN_DATABASE_URL): Promise<RunEnvironment> {
  const env: RunEnvironment = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: os.cpus()[0]?.model ?? "unknown",
    cores: os.cpus().length,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    memory_gib: round(os.totalmem() / 2 ** 30, 1),
  };
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<{ server_version: string }[]>`show server_version`;
    env.postgres = row.server_version;
  } finally {
    await sql.end();
  }
  return env;
}

/**
 * Writes bench/results/<name>.json and <name>.md, each through a temp file and a rename so a
 * crashed run never leaves a half-written result behind.
 */
export async function writeResults(name: string, json: unknown, markdown: string): Promise<string[]> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const written: string[] = [];
  for (const [ext, text] of [
    ["json", JSON.stringify(json, (_k, v) => (typeof v === "bigint" ? v.toString() : v), 2) + "\n"],
    ["md", markdown.endsWith("\n") ? markdown : markdown + "\n"],
  ] as const) {
    const target = path.join(RESULTS_DIR, `${name}.${ext}`);
    const tmp = `${target}.${process.pid}.tmp`;
    await writeFile(tmp, text);
    await rename(tmp, target);
    written.push(path.relative(REPO_ROOT, target));
  }
  return written;
}

/** The environment as the first lines of a Markdown summary. */
export function environmentMarkdown(env: RunEnvironment): string {
  return [
    `- date: ${env.date}`,
    `- node ${env.node}, PostgreSQL ${env.postgres ?? "?"}`,
    `- CPU: ${env.cpu} x ${env.cores} cores, ${env.memory_gib} GiB RAM, ${env.platform}`,
  ].join("\n");
}

/** A Markdown table from a header row and body rows. */
export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

// ---------------------------------------------------------------------------------------------
// Cleanup: everything a benchmark creates is undone, on success, failure or Ctrl-C

/** A stack of undo steps, run newest first; each runs once even if another fails. */
export class Cleanup {
  private readonly steps: { label: string; fn: () => Promise<void> }[] = [];

  /** Registers an undo step for something just created. */
  add(label: string, fn: () => Promise<void>): void {
    this.steps.push({ label, fn });
  }

  /** Runs every step, newest first; failures are reported, not thrown. */
  async run(): Promise<void> {
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.fn();
      } catch (err) {
        console.error(`cleanup: ${step.label} failed:`, err);
      }
    }
  }
}

/**
 * Runs a benchmark's body with a cleanup stack and makes sure the stack runs however the
 * body ends: normally, by an exception, or by SIGINT/SIGTERM. Sets the exit code.
 */
export async function runBenchmark(name: string, body: (cleanup: Cleanup) => Promise<void>): Promise<void> {
  const cleanup = new Cleanup();
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) process.exit(130); // a second signal: give up on cleanup
    interrupted = true;
    console.error(`${name}: ${signal}, cleaning up`);
    void cleanup.run().finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const total = startTimer();
  try {
    await body(cleanup);
    console.log(`${name}: done in ${(total() / 1000).toFixed(1)} s`);
  } catch (err) {
    // After a signal the body fails on the resources being torn down under it: not news.
    if (!interrupted) console.error(`${name}: failed:`, err);
    process.exitCode = 1;
  } finally {
    if (!interrupted) await cleanup.run();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

// ---------------------------------------------------------------------------------------------
// Temp database, temp data dir, the real app and a client

/** A database of the benchmark's own, on the admin URL's server. */
export type TempDatabase = ScratchDatabase;

/** Creates a uniquely named database; `drop` removes it (forcing out any connection left). */
export function createTempDatabase(prefix = "glimpse_bench"): Promise<TempDatabase> {
  return createScratchDatabase(ADMIN_DATABASE_URL, prefix);
}

/** Creates a temp directory under the OS temp dir, removed by `cleanup`. */
export async function createTempDir(cleanup: Cleanup, prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanup.add(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A running glimpse on 127.0.0.1:0 over a temp database, with a gRPC client to it. */
export interface BenchApp {
  app: App;
  db: TempDatabase;
  dataDir: string;
  channel: Channel;
  /** Sends the admin key on every call. */
  images: ImageServiceClient;
  /** The admin key the app was started with. */
  adminKey: string;
  /** Call metadata carrying the admin key, for clients made on `channel`. */
  metadata: Metadata;
}

/**
 * Creates a temp database and data dir and starts the real app on them exactly as
 * `glimpse serve` would (silent log), then connects a nice-grpc client. Everything is
 * registered on `cleanup`: client, app, database and directory go away in reverse order.
 */
export async function startBenchApp(cleanup: Cleanup, overrides: Partial<Options> = {}): Promise<BenchApp> {
  const db = await createTempDatabase();
  cleanup.add(`drop database ${db.name}`, () => db.drop());
  const adminKey = `glk_bench${randomBytes(24).toString("base64url")}`;
  const dataDir = await createTempDir(cleanup, "glimpse-bench-data-");
  // An empty environment: only what the benchmark chooses reaches the app.
  const options = loadOptions({}, [], {
    dataDir,
    databaseUrl: db.url,
    grpcHost: "127.0.0.1",
    grpcPort: 0,
    httpPort: 0,
    logLevel: "silent",
    shutdownGraceMs: 2000,
    // Benchmarks measure the service, not the limiter.
    rateLimitPerMinute: 10_000_000,
    adminKey,
    modelAutoPull: false,
    ...overrides,
  });
  const app = await startApp(options, { logger: createLogger("silent") });
  cleanup.add("stop app", () => app.stop());
  const channel = createChannel(`127.0.0.1:${app.grpcPort}`);
  cleanup.add("close channel", async () => channel.close());
  const metadata = Metadata({ authorization: `Bearer ${adminKey}` });
  const images = createClientFactory()
    .use(async function* (call, options) {
      return yield* call.next(call.request, { ...options, metadata: Metadata(options.metadata).set("authorization", `Bearer ${adminKey}`) });
    })
    .create(ImageServiceDefinition, channel);
  return { app, db, dataDir, channel, images, adminKey, metadata };
}

/** Inner product of the query with every vector (the plain-JS truth benches check recall against). */
export function scoresOf(query: Float32Array, vectors: Float32Array[]): Float32Array {
  const out = new Float32Array(vectors.length);
  for (let i = 0; i < vectors.length; i++) {
    const v = vectors[i];
    let s = 0;
    for (let d = 0; d < v.length; d++) s += v[d] * query[d];
    out[i] = s;
  }
  return out;
}
