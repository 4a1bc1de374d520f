/**
 * Load harness: drives a glimpse server from separate worker processes and reports requests/s,
 * latency percentiles and errors by status.
 *
 *   npm run bench:load -- seed [--images 100000] [--base 3bcb0a1]
 *   npm run bench:load -- --scenario search-user[,get-image,...|all] [--concurrency 16[,64] | --rate 200/s]
 *                         [--duration 30s] [--target grpc|http|grpc,http] [--share 0.01] [--images 100000]
 *                         [--address 127.0.0.1:50051 --key glk_...] [--workers 2] [--warmup 3s]
 *                         [--cpu-prof] [--out DIR] [--repeat 3] [--server-env GLIMPSE_X=v,...]
 *   npm run bench:load -- sweep --scenarios get-image,search-user [--target grpc,http] [--p99 50ms]
 *                         [--start-rate 100/s] [--max-rate 20000/s] [--probes 8] [--duration 5s] [--budget 10m]
 *   npm run bench:load -- compare --base 3bcb0a1 [--current HEAD] [--scenarios search-admin,search-user,search-user-tag:0.01]
 *                         [--concurrency 1,16,64] [--duration 15s] [--target grpc|http] [--cpu-prof]
 *                         [--base-env GLIMPSE_X=v,...] [--current-env GLIMPSE_X=v,...] [--repeat 3]
 *   npm run bench:load -- replicas [--replicas 3] [--images 20000] [--scenario mixed] [--concurrency 16 | --rate 100/s]
 *                         [--duration 30s] [--kill-at 10s] [--down 0s] [--target grpc|http] [--probe-timeout 30s]
 *                         [--restart-timeout 3m] [--redis redis://127.0.0.1:6379]
 *
 * Scenarios (`--help` lists them): grpc-noop, get-image, get-image-content, list-images,
 * search-admin, search-user, search-admin-tag:SHARE, search-user-tag:SHARE, stream-search,
 * generate, upload, mixed. Over --target http the same calls go through the HTTP bridge
 * (grpc-noop has no route and is skipped there).
 *
 * Without --address the harness seeds (or reuses) the template data set, copies it into a
 * database of its own, starts this tree's glimpse as a child process on it (a test model of
 * dimension 512 named like the seeded embeddings, so search is ready without running any
 * model: every scenario searches by like_image_id, a stored vector) and removes all of it
 * afterwards. `compare` does the same for this tree and for a base commit checked out in a
 * git worktree (/tmp/glimpse-base-<commit>), and runs every scenario x concurrency against
 * both, alternating, in one run. Only loopback addresses are accepted; every run is bounded in
 * time (--duration, plus the warm-up and the per-call timeout) and in count (--max-requests);
 * a sweep also by --probes and --budget.
 *
 * The started servers read no settings from the harness's environment; --server-env (run, sweep)
 * and --base-env / --current-env (compare) give them GLIMPSE_* settings, as `glimpse serve`
 * would read them from its environment: `compare --base HEAD --base-env GLIMPSE_GRAPH_THREAD=inline`
 * measures one build two ways side by side.
 *
 * --repeat N runs every row N times (in compare, N pairs of runs, the first build of each pair
 * alternating), in rounds whose order alternates (forwards, then
 * backwards), and adds the median of the rounds, so rows compared with each other (gRPC
 * against HTTP) share the machine's state as far as a busy machine allows.
 *
 * `replicas` starts --replicas glimpse replicas (`src/cli/main.ts serve` processes) on one copy of
 * the template, blobs in an s3rver on loopback and rate limits in Redis, drives them round-robin,
 * SIGKILLs the last one at --kill-at and starts it again after --down; it reports each phase
 * (before the kill, while down, after the restart), the restart's time to ready, and the
 * visibility lag of uploads and deletes made on one replica as seen by another's search. The
 * load runs --duration, or longer, so that it runs on after the restarted replica is ready for
 * as long as it ran before the kill (at least 5 s).
 *
 * --cpu-prof profiles the server(s) over the measured calls only (V8's CPU profiler through the
 * inspector, as `node --cpu-prof` does) and reports the functions with the most self time.
 */
import { execFileSync, fork } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { writeClipTestModel } from "../../test/fixtures/clip-test-model.js";
import { ADMIN_DATABASE_URL, markdownTable, REPO_ROOT, round, runBenchmark, runEnvironment, writeResults, type Cleanup } from "../lib.js";
import { indexCacheDir, keepIndex } from "./index-cache.js";
import { WorkerPool } from "./pool.js";
import { prepare, type Prepared } from "./prepare.js";
import { summariseProfile, type ProfileSummary } from "./profile.js";
import { SCENARIOS, type ScenarioSpec, type Target } from "./scenarios.js";
import { ADMIN_KEY, cloneTemplate, DIMENSION, ensureTemplate, MODEL_ID, queryIds, SHARE_TAGS, tagForShare, USERS } from "./seed.js";
import { runReplicas } from "./replicas.js";
import { sweep } from "./sweep.js";
import type { RunReply } from "./worker.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const command = ["seed", "compare", "sweep", "run", "replicas"].includes(argv[0]) ? argv.shift()! : "run";

const { values: opt } = parseArgs({
  args: argv,
  options: {
    scenario: { type: "string" },
    scenarios: { type: "string", default: "search-admin,search-user,search-user-tag:0.01,search-user-tag:0.1,get-image" },
    concurrency: { type: "string" },
    rate: { type: "string" },
    duration: { type: "string", default: "30s" },
    warmup: { type: "string", default: "3s" },
    target: { type: "string", default: "grpc" },
    address: { type: "string" },
    key: { type: "string" },
    share: { type: "string", default: "0.01" },
    images: { type: "string", default: "100000" },
    workers: { type: "string", default: String(Math.max(1, Math.min(4, os.cpus().length))) },
    "max-requests": { type: "string", default: "2000000" },
    "max-in-flight": { type: "string", default: "2000" },
    timeout: { type: "string", default: "10s" },
    k: { type: "string", default: "10" },
    base: { type: "string" },
    current: { type: "string" },
    "server-env": { type: "string" },
    "base-env": { type: "string" },
    "current-env": { type: "string" },
    ids: { type: "string" },
    http: { type: "string" },
    "admin-key": { type: "string", default: ADMIN_KEY },
    out: { type: "string" },
    "cpu-prof": { type: "boolean", default: false },
    p99: { type: "string", default: "50ms" },
    "start-rate": { type: "string", default: "100/s" },
    "max-rate": { type: "string", default: "20000/s" },
    probes: { type: "string", default: "8" },
    repeat: { type: "string", default: "1" },
    "no-index-cache": { type: "boolean", default: false },
    budget: { type: "string", default: "10m" },
    replicas: { type: "string", default: "3" },
    "kill-at": { type: "string", default: "10s" },
    down: { type: "string", default: "0s" },
    "restart-timeout": { type: "string", default: "3m" },
    "probe-timeout": { type: "string", default: "30s" },
    redis: { type: "string", default: "redis://127.0.0.1:6379" },
    help: { type: "boolean", default: false },
  },
});

if (opt.help) {
  const header = /\/\*\*([\s\S]*?)\*\//.exec(await import("node:fs").then((fs) => fs.readFileSync(fileURLToPath(import.meta.url), "utf8")))?.[1] ?? "";
  console.log(header.replace(/^ \* ?/gm, "").trim());
  console.log("\nScenarios:");
  for (const [name, def] of Object.entries(SCENARIOS)) console.log(`  ${name.padEnd(18)} ${def.doc}${def.http ? "" : " (gRPC only)"}`);
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// Arguments

function duration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (!m) throw new Error(`bad duration ${text} (e.g. 30s, 500ms, 2m)`);
  const x = Number(m[1]);
  return m[2] === "ms" ? x : m[2] === "m" ? x * 60_000 : x * 1000;
}

function rate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(\/s)?$/.exec(text.trim());
  if (!m || Number(m[1]) <= 0) throw new Error(`bad rate ${text} (e.g. 200/s)`);
  return Number(m[1]);
}

function loopback(address: string): string {
  const host = address.slice(0, address.lastIndexOf(":")).replace(/^\[|\]$/g, "");
  if (!["127.0.0.1", "localhost", "::1"].includes(host) && !host.startsWith("127.")) {
    throw new Error(`--address must be a loopback address (127.0.0.1:PORT), not ${address}`);
  }
  return address;
}

/** "search-user-tag:0.01" -> scenario and share. */
function parseScenario(text: string, defaultShare: number): { name: string; scenario: string; share?: number } {
  const [scenario, shareText] = text.split(":");
  if (!SCENARIOS[scenario]) throw new Error(`unknown scenario ${scenario}; known: ${Object.keys(SCENARIOS).join(", ")}`);
  if (!scenario.endsWith("-tag")) return { name: scenario, scenario };
  const share = shareText ? Number(shareText) : defaultShare;
  tagForShare(share);
  return { name: `${scenario}:${share}`, scenario, share };
}

// ---------------------------------------------------------------------------------------------
// Statistics

export interface Summary {
  requests: number;
  ok: number;
  requests_per_s: number;
  ok_per_s: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
  mean_ms: number;
  /** Non-OK outcomes by status name (gRPC) or code (HTTP); CLIENT_TIMEOUT: the call's deadline passed. */
  errors: Record<string, number>;
  /** Open loop: calls not sent because max-in-flight were out (k6's dropped_iterations). */
  dropped: number;
  /**
   * Mean time of each search stage on the server over the run (warm-up included), in ms, from
   * its /metrics (glimpse_search_stage_duration_seconds); absent for a server without them.
   */
  server_stage_ms?: Record<string, number>;
}

/**
 * The search-core issue's bound for one caller, per build, where a run has what it needs (the
 * c=1 rows of grpc-noop and of search-admin, and the server's walk time): an admin search's
 * p50 at most 1.5x the in-process HNSW walk plus a bare gRPC round trip, both measured in the
 * same run (the walk as the server's mean `walk` stage, timed on the thread that runs it).
 */
function oneCallerBound(rows: { scenario: string; concurrency: number; base: Summary; current: Summary }[]): string[] {
  const at = (name: string) => rows.find((r) => r.scenario === name && r.concurrency === 1);
  const noop = at("grpc-noop");
  const lines: string[] = [];
  for (const name of ["search-admin", "search-user"]) {
    const search = at(name);
    if (!noop || !search) continue;
    for (const build of ["base", "current"] as const) {
      const walk = search[build].server_stage_ms?.walk;
      if (walk === undefined) continue;
      const bound = 1.5 * (walk + noop[build].p50_ms);
      const p50 = search[build].p50_ms;
      lines.push(
        `- ${build}: ${name} c=1 p50 ${p50} ms against 1.5 x (walk ${walk} + bare round trip ${noop[build].p50_ms}) = ${round(bound, 3)} ms: ` +
          `${round(p50 / bound, 2)} of the bound (${p50 <= bound ? "holds" : "does not hold"})`,
      );
    }
  }
  return lines.length > 0 ? ["", "One caller, against 1.5 x (the server's mean HNSW walk + a bare Health/Check p50), medians:", "", ...lines] : [];
}

/** Sum (s) and count of each search stage on a server, read from its /metrics; undefined when it has none. */
async function stageTotals(http: string): Promise<Map<string, { sum: number; count: number }> | undefined> {
  try {
    const res = await fetch(`http://${http}/metrics`, { signal: AbortSignal.timeout(2000) });
    if (!res.ok) return undefined;
    const totals = new Map<string, { sum: number; count: number }>();
    for (const m of (await res.text()).matchAll(/^glimpse_search_stage_duration_seconds_(sum|count)\{stage="(\w+)"\} (\S+)$/gm)) {
      const t = totals.get(m[2]) ?? { sum: 0, count: 0 };
      t[m[1] as "sum" | "count"] = Number(m[3]);
      totals.set(m[2], t);
    }
    return totals;
  } catch {
    return undefined;
  }
}

/** Each stage's mean in ms between two readings of stageTotals. */
function stageMeans(before: Awaited<ReturnType<typeof stageTotals>>, after: Awaited<ReturnType<typeof stageTotals>>) {
  if (!before || !after) return undefined;
  const means: Record<string, number> = {};
  for (const [stage, t] of after) {
    const b = before.get(stage) ?? { sum: 0, count: 0 };
    if (t.count > b.count) means[stage] = round(((t.sum - b.sum) / (t.count - b.count)) * 1000, 3);
  }
  return Object.keys(means).length > 0 ? means : undefined;
}

function summarise(replies: RunReply[], durationMs: number): Summary {
  const n = replies.reduce((a, r) => a + r.samples.length, 0);
  const all = new Float64Array(n);
  let at = 0;
  for (const r of replies) {
    all.set(r.samples, at);
    at += r.samples.length;
  }
  all.sort();
  const pct = (p: number) => (n === 0 ? Number.NaN : all[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]);
  const outcomes: Record<string, number> = {};
  for (const r of replies) for (const [k, v] of Object.entries(r.outcomes)) outcomes[k] = (outcomes[k] ?? 0) + v;
  const ok = outcomes.OK ?? 0;
  delete outcomes.OK;
  // The measured window: the configured duration, or less when the count bound ended it first.
  const windowS = Math.min(durationMs, Math.max(...replies.map((r) => r.windowMs))) / 1000;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += all[i];
  return {
    requests: n,
    ok,
    requests_per_s: round(n / windowS, 1),
    ok_per_s: round(ok / windowS, 1),
    p50_ms: round(pct(50), 3),
    p90_ms: round(pct(90), 3),
    p99_ms: round(pct(99), 3),
    p999_ms: round(pct(99.9), 3),
    max_ms: round(n ? all[n - 1] : Number.NaN, 3),
    mean_ms: round(n ? sum / n : Number.NaN, 3),
    errors: outcomes,
    dropped: replies.reduce((a, r) => a + r.dropped, 0),
  };
}

/** A latency for a table: "n/a" when no call ended in the measured window (each took longer). */
const ms = (x: number) => (Number.isNaN(x) ? "n/a" : x);

const errorsText = (s: Summary) =>
  Object.keys(s.errors).length === 0 ? "none" : Object.entries(s.errors).map(([k, v]) => `${k} ${v}`).join(", ");

// ---------------------------------------------------------------------------------------------
// Servers

interface Server {
  label: string;
  root: string;
  commit: string;
  grpc: string;
  http: string;
  facts: Record<string, unknown>;
  /** What prepare() made on it (images with bytes, credits). */
  prepared?: Prepared;
  /** Sends a message to the server process and waits for the answer of type `answer`. */
  control?(msg: Record<string, unknown>, answer: string): Promise<Record<string, unknown>>;
}

function commitOf(root: string): string {
  try {
    const head = execFileSync("git", ["-C", root, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["-C", root, "status", "--porcelain", "--untracked-files=no", "--", "src", "native", "package.json"], {
      encoding: "utf8",
    }).trim();
    if (!dirty) return head;
    const files = dirty.split("\n").map((line) => line.slice(3));
    return `${head}+uncommitted changes to ${files.slice(0, 3).join(", ")}${files.length > 3 ? ` and ${files.length - 3} more` : ""}`;
  } catch {
    return "unknown";
  }
}

async function modelDir(cleanup: Cleanup): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "glimpse-load-model-"));
  cleanup.add(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  await writeClipTestModel(dir, { dimension: DIMENSION });
  await writeFile(path.join(dir, "glimpse-model.json"), JSON.stringify({ id: MODEL_ID }));
  return dir;
}

/** `GLIMPSE_A=x,GLIMPSE_B=y` as server.ts arguments (`--env GLIMPSE_A=x --env GLIMPSE_B=y`). */
function envArgs(list: string | undefined): string[] {
  return (list ?? "")
    .split(",")
    .filter((pair) => pair.trim() !== "")
    .flatMap((pair) => {
      if (!/^GLIMPSE_[A-Z0-9_]+=/.test(pair.trim())) throw new Error(`server settings are GLIMPSE_NAME=value, not ${pair}`);
      return ["--env", pair.trim()];
    });
}

/**
 * Copies the template and starts the build at `root` on it as a child process, with the
 * GLIMPSE_* settings in `env` (envArgs); waits until search is ready.
 */
async function startServer(cleanup: Cleanup, label: string, root: string, template: string, model: string, env?: string): Promise<Server> {
  const db = await cloneTemplate(template, label);
  cleanup.add(`drop database ${db.name}`, () => db.drop());
  const dataDir = await mkdtemp(path.join(os.tmpdir(), `glimpse-load-${label}-`));
  cleanup.add(`remove ${dataDir}`, () => rm(dataDir, { recursive: true, force: true }));
  const cached = opt["no-index-cache"] ? undefined : await indexCacheDir(template, root);
  const fromCache = cached !== undefined && existsSync(path.join(cached, "ok"));
  if (fromCache) await cp(path.join(cached!, "index"), path.join(dataDir, "index"), { recursive: true });
  const started = Date.now();
  const child = fork(
    path.join(HERE, "server.ts"),
    ["--root", root, "--database-url", db.url, "--data-dir", dataDir, "--model", model, "--admin-key", ADMIN_KEY, ...envArgs(env)],
    { cwd: REPO_ROOT, execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] },
  );
  cleanup.add(`stop ${label} server`, async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
  });
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label} server not ready after 15 min`)), 15 * 60_000);
    child.on("message", (msg: { type: string; message?: string }) => {
      if (msg.type === "ready") {
        clearTimeout(timer);
        resolve(msg as Record<string, unknown>);
      } else if (msg.type === "error") {
        clearTimeout(timer);
        reject(new Error(`${label} server failed to start: ${msg.message}`));
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${label} server exited (${code})`));
    });
  });
  const server: Server = {
    label,
    root,
    commit: commitOf(root),
    grpc: `127.0.0.1:${ready.grpcPort}`,
    http: `127.0.0.1:${ready.httpPort}`,
    facts: { ...ready, settings: env ?? "", database: db.name, wall_to_ready_s: round((Date.now() - started) / 1000, 1) },
    control: (msg, answer) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${label} server did not answer ${msg.type} in 60 s`)), 60_000);
        const onMessage = (reply: Record<string, unknown>) => {
          if (reply.type !== answer && reply.type !== "profile-error") return;
          clearTimeout(timer);
          child.off("message", onMessage);
          if (reply.type === "profile-error") reject(new Error(`${label} server: ${reply.message}`));
          else resolve(reply);
        };
        child.on("message", onMessage);
        child.send(msg);
      }),
  };
  console.log(`${label} (${server.commit}) ready: gRPC ${server.grpc}, HTTP ${server.http}, search ready in ${ready.search_ready_s} s${fromCache ? " (index snapshot from the cache)" : ""}`);
  server.facts.index_from_cache = fromCache;
  if (cached && !fromCache) await keepIndex(dataDir, cached);
  return server;
}

/**
 * A build to measure: a directory holding one (a worktree made before), or a commit, checked
 * out in a git worktree under the temp directory, installed and built, made once and reused.
 */
function worktreeFor(ref: string, prefix: string): string {
  if (existsSync(ref) && existsSync(path.join(ref, "src", "app.ts"))) return path.resolve(ref);
  const commit = execFileSync("git", ["-C", REPO_ROOT, "rev-parse", "--short", ref], { encoding: "utf8" }).trim();
  const dir = path.join(os.tmpdir(), `${prefix}-${commit}`);
  const run = (cmd: string, args: string[], cwd: string) => execFileSync(cmd, args, { cwd, stdio: "inherit" });
  if (!existsSync(path.join(dir, "src", "app.ts"))) run("git", ["worktree", "add", "--detach", dir, commit], REPO_ROOT);
  if (!existsSync(path.join(dir, "node_modules", ".package-lock.json"))) {
    run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund"], dir);
  }
  if (!existsSync(path.join(dir, "native", "build", "kernel.wasm"))) run("npm", ["run", "build:native"], dir);
  return dir;
}

// ---------------------------------------------------------------------------------------------
// pgvector

async function pgvectorAvailable(): Promise<string | null> {
  const sql = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<{ default_version: string }[]>`select default_version from pg_available_extensions where name = 'vector'`;
    return rows[0]?.default_version ?? null;
  } finally {
    await sql.end();
  }
}

// ---------------------------------------------------------------------------------------------
// One measured run

interface RunConfig {
  scenario: string;
  name: string;
  share?: number;
  target: Target;
  mode: "closed" | "open";
  concurrency?: number;
  rate?: number;
  durationMs: number;
  warmupMs: number;
}

async function measure(
  pool: WorkerPool,
  server: { grpc: string; http: string; prepared?: Prepared },
  cfg: RunConfig,
  ids: string[],
  key?: string,
): Promise<Summary> {
  const def = SCENARIOS[cfg.scenario];
  const spec: ScenarioSpec = {
    scenario: cfg.scenario,
    target: cfg.target,
    address: cfg.target === "grpc" ? server.grpc : server.http,
    key: key ?? (def.key === "user" ? USERS[0].secret : opt["admin-key"]!),
    ids,
    tag: cfg.share !== undefined ? tagForShare(cfg.share) : undefined,
    contentIds: server.prepared?.contentIds,
    k: Number(opt.k),
    timeoutMs: duration(opt.timeout!),
  };
  const stagesBefore = await stageTotals(server.http);
  const replies = await pool.run(
    {
      spec,
      mode: cfg.mode,
      startAt: Date.now() + 200,
      warmupMs: cfg.warmupMs,
      durationMs: cfg.durationMs,
      maxInFlight: Number(opt["max-in-flight"]),
    },
    { concurrency: cfg.concurrency, rate: cfg.rate, maxRequests: Number(opt["max-requests"]) },
  );
  const summary = summarise(replies, cfg.durationMs);
  const stages = stageMeans(stagesBefore, stagesBefore && (await stageTotals(server.http)));
  return stages ? { ...summary, server_stage_ms: stages } : summary;
}

const stamp = () => new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");

/** Writes results to --out when given (tests), otherwise to bench/results/. */
async function save(name: string, json: unknown, markdown: string): Promise<string[]> {
  if (!opt.out) return writeResults(name, json, markdown);
  await mkdir(opt.out, { recursive: true });
  const written = [];
  for (const [ext, text] of [
    ["json", JSON.stringify(json, null, 2) + "\n"],
    ["md", markdown + "\n"],
  ] as const) {
    const file = path.join(opt.out, `${name}.${ext}`);
    await writeFile(file, text);
    written.push(file);
  }
  return written;
}

/** "all" or a comma list of scenarios (with :SHARE on the -tag ones). */
function scenarioList(text: string) {
  const names = text.trim() === "all" ? Object.keys(SCENARIOS) : text.split(",").map((s) => s.trim());
  return names.map((s) => parseScenario(s, Number(opt.share)));
}

function targetList(text: string): Target[] {
  const targets = text.split(",").map((t) => t.trim());
  for (const t of targets) if (t !== "grpc" && t !== "http") throw new Error(`--target is grpc, http or grpc,http, not ${t}`);
  return targets as Target[];
}

/** The servers' CPU profiles over what ran between start() and stop(), summarised. */
function profiler(servers: Server[], dir: string) {
  return {
    async start() {
      if (!opt["cpu-prof"]) return;
      await Promise.all(servers.map((s) => s.control!({ type: "profile-start" }, "profile-started")));
    },
    async stop(tag: string): Promise<Record<string, ProfileSummary> | undefined> {
      if (!opt["cpu-prof"]) return undefined;
      const out: Record<string, ProfileSummary> = {};
      for (const s of servers) {
        const file = path.join(dir, `${s.label}-${tag}.cpuprofile`);
        await s.control!({ type: "profile-stop", path: file }, "profile-written");
        out[s.label] = await summariseProfile(file, s.root);
      }
      return out;
    },
  };
}

function profileMarkdown(label: string, p: ProfileSummary): string {
  return [
    `CPU profile of the ${label} server (${p.file}): ${p.busy_ms} ms busy of ${p.total_ms} ms, GC ${p.gc_ms} ms, ${p.ours_pct}% of busy time in src/`,
    "",
    markdownTable(
      ["our function (self time)", "location", "self ms", "% of busy"],
      p.ours.slice(0, 15).map((f) => [f.function, f.location, f.self_ms, f.self_pct]),
    ),
    "",
    markdownTable(
      ["any function (self time)", "location", "self ms", "% of busy"],
      p.top.slice(0, 15).map((f) => [f.function, f.location, f.self_ms, f.self_pct]),
    ),
  ].join("\n");
}

interface MedianRow {
  scenario: string;
  target: Target;
  mode: string;
  load: string;
  rounds: number;
  requests_per_s: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** The median of rounds of one row: requests/s and each percentile the median of the rounds', errors summed. */
function medianSummary(rounds: Summary[]): Summary {
  if (rounds.length === 1) return rounds[0];
  const m = (key: "requests_per_s" | "ok_per_s" | "p50_ms" | "p90_ms" | "p99_ms" | "p999_ms" | "mean_ms") => median(rounds.map((r) => r[key]));
  const errors: Record<string, number> = {};
  for (const r of rounds) for (const [code, n] of Object.entries(r.errors)) errors[code] = (errors[code] ?? 0) + n;
  return {
    requests: rounds.reduce((a, r) => a + r.requests, 0),
    ok: rounds.reduce((a, r) => a + r.ok, 0),
    requests_per_s: round(m("requests_per_s"), 1),
    ok_per_s: round(m("ok_per_s"), 1),
    p50_ms: round(m("p50_ms"), 3),
    p90_ms: round(m("p90_ms"), 3),
    p99_ms: round(m("p99_ms"), 3),
    p999_ms: round(m("p999_ms"), 3),
    max_ms: Math.max(...rounds.map((r) => r.max_ms)),
    mean_ms: round(m("mean_ms"), 3),
    errors,
    dropped: rounds.reduce((a, r) => a + r.dropped, 0),
    ...(rounds.every((r) => r.server_stage_ms)
      ? {
          server_stage_ms: Object.fromEntries(
            Object.keys(rounds[0].server_stage_ms!).map((stage) => [stage, round(median(rounds.map((r) => r.server_stage_ms![stage] ?? 0)), 3)]),
          ),
        }
      : {}),
  };
}

/** One row per scenario, target and load: the median of its rounds. */
function medianRows(rows: { scenario: string; target: Target; mode: string; load: string; summary: Summary }[]): MedianRow[] {
  const groups = new Map<string, typeof rows>();
  for (const r of rows) {
    const key = `${r.scenario}|${r.target}|${r.load}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  return [...groups.values()].map((g) => {
    const m = medianSummary(g.map((r) => r.summary));
    return {
      scenario: g[0].scenario,
      target: g[0].target,
      mode: g[0].mode,
      load: g[0].load,
      rounds: g.length,
      requests_per_s: m.requests_per_s,
      p50_ms: m.p50_ms,
      p99_ms: m.p99_ms,
      errors: m.requests - m.ok,
    };
  });
}

function medianTable(m: MedianRow[]): string {
  return markdownTable(
    ["scenario", "target", "mode", "load", "rounds", "req/s", "p50 ms", "p99 ms", "failed calls"],
    m.map((r) => [r.scenario, r.target, r.mode, r.load, r.rounds, r.requests_per_s, r.p50_ms, r.p99_ms, r.errors]),
  );
}

/** gRPC against HTTP for every scenario and load measured over both. */
function ratioLines(m: MedianRow[]): string[] {
  const pairs = m.filter((r) => r.target === "grpc").flatMap((g) => {
    const h = m.find((r) => r.target === "http" && r.scenario === g.scenario && r.load === g.load);
    return h ? [[g, h] as const] : [];
  });
  if (pairs.length === 0) return [];
  return [
    "",
    "HTTP bridge against gRPC, same server, same run" + (m[0].rounds > 1 ? " (medians of the rounds)" : "") + ":",
    "",
    markdownTable(
      ["scenario", "load", "gRPC req/s", "HTTP req/s", "gRPC/HTTP req/s", "HTTP/gRPC p50", "HTTP/gRPC p99"],
      pairs.map(([g, h]) => [g.scenario, g.load, g.requests_per_s, h.requests_per_s, round(g.requests_per_s / h.requests_per_s, 2), round(h.p50_ms / g.p50_ms, 2), round(h.p99_ms / g.p99_ms, 2)]),
    ),
  ];
}

/** This tree's server on the seeded data set, or the running one at --address. */
async function setUp(cleanup: Cleanup, images: number, scenarios: string[]) {
  let server: Server;
  let ids: string[];
  let dataset: unknown;
  if (opt.address) {
    const address = loopback(opt.address);
    if (opt["cpu-prof"]) throw new Error("--cpu-prof needs a server the harness starts (no --address)");
    server = { label: "running", root: REPO_ROOT, commit: "running server", grpc: address, http: opt.http ? loopback(opt.http) : address, facts: {} };
    if (opt.ids) ids = opt.ids.split(",");
    else {
      const facts = await ensureTemplate(REPO_ROOT, images);
      ids = await queryIds(facts.template, 2000);
      dataset = facts;
    }
  } else {
    const facts = await ensureTemplate(REPO_ROOT, images);
    dataset = facts;
    ids = await queryIds(facts.template, Math.min(2000, facts.public_images));
    server = await startServer(cleanup, "current", REPO_ROOT, facts.template, await modelDir(cleanup), opt["server-env"]);
  }
  server.prepared = await prepare(server.grpc, opt["admin-key"]!, scenarios);
  return { server, ids, dataset };
}

// ---------------------------------------------------------------------------------------------

await runBenchmark(`bench:load ${command}`, async (cleanup) => {
  const images = Number(opt.images);
  if (!Number.isInteger(images) || images < 100) throw new Error("--images must be an integer >= 100");

  if (command === "seed") {
    // With --base, the template a compare against that build uses (migrated by the base build).
    const facts = await ensureTemplate(opt.base ? worktreeFor(opt.base, "glimpse-base") : REPO_ROOT, images);
    console.log(JSON.stringify(facts, null, 2));
    return;
  }

  if (command === "replicas") {
    const given = (flag: string) => argv.some((a) => a === flag || a.startsWith(`${flag}=`));
    if (opt.rate && opt.concurrency) throw new Error("--concurrency (closed loop) or --rate (open loop), not both");
    const concurrency = Number(opt.concurrency ?? "16");
    if (!opt.rate && (!Number.isInteger(concurrency) || concurrency < 1)) throw new Error(`bad --concurrency ${opt.concurrency} (a positive integer)`);
    const target = opt.target as Target;
    if (target !== "grpc" && target !== "http") throw new Error("replicas takes one --target: grpc or http");
    const { json, markdown } = await runReplicas(cleanup, {
      replicas: Number(opt.replicas),
      // A smaller default than the single server's: every replica holds the whole index.
      images: given("--images") ? images : 20_000,
      scenario: opt.scenario ?? "mixed",
      target,
      concurrency: opt.rate ? undefined : concurrency,
      rate: opt.rate ? rate(opt.rate) : undefined,
      warmupMs: duration(opt.warmup!),
      durationMs: duration(opt.duration!),
      killAtMs: duration(opt["kill-at"]!),
      downMs: duration(opt.down!),
      restartTimeoutMs: duration(opt["restart-timeout"]!),
      probeTimeoutMs: duration(opt["probe-timeout"]!),
      workers: Number(opt.workers),
      k: Number(opt.k),
      timeoutMs: duration(opt.timeout!),
      maxRequests: Number(opt["max-requests"]),
      maxInFlight: Number(opt["max-in-flight"]),
      indexCache: !opt["no-index-cache"],
      redisUrl: opt.redis!,
      adminKey: opt["admin-key"]!,
      commit: commitOf(REPO_ROOT),
      argv,
    });
    const written = await save(`load-replicas-${stamp()}`, json, markdown);
    console.log(markdown);
    console.log(`wrote ${written.join(", ")}`);
    return;
  }

  if (command === "run" || command === "sweep") {
    const text = opt.scenario ?? (command === "sweep" ? opt.scenarios : undefined);
    if (!text) throw new Error("--scenario is required: one, a comma list or all (" + Object.keys(SCENARIOS).join(", ") + ")");
    const scenarios = scenarioList(text);
    const targets = targetList(opt.target!);
    if (opt.rate && opt.concurrency) throw new Error("--concurrency (closed loop) or --rate (open loop), not both");
    const loads: { concurrency?: number; rate?: number }[] = opt.rate
      ? opt.rate.split(",").map((r) => ({ rate: rate(r) }))
      : (opt.concurrency ?? "16").split(",").map((c) => {
          const n = Number(c);
          if (!Number.isInteger(n) || n < 1) throw new Error(`bad --concurrency ${c} (a positive integer)`);
          return { concurrency: n };
        });
    // A sweep's probes are short unless --duration says otherwise.
    const durationMs = duration(command === "sweep" && !argv.some((a) => a.startsWith("--duration")) ? "5s" : opt.duration!);
    const warmupMs = duration(command === "sweep" && !argv.some((a) => a.startsWith("--warmup")) ? "1s" : opt.warmup!);
    const environment = await runEnvironment();
    const loadBefore = os.loadavg().map((x) => round(x));
    const { server, ids, dataset } = await setUp(cleanup, images, scenarios.map((s) => s.scenario));
    const pool = await WorkerPool.start(Number(opt.workers), cleanup);
    const profileDir = await mkdtemp(path.join(os.tmpdir(), "glimpse-load-prof-"));
    const prof = profiler([server], profileDir);
    const skipped: string[] = [];
    const pairs = scenarios.flatMap((sc) =>
      targets.flatMap((target) => {
        if (target === "http" && !SCENARIOS[sc.scenario].http) {
          skipped.push(`${sc.name} over http (no bridge route)`);
          return [];
        }
        return [{ sc, target }];
      }),
    );
    for (const s of skipped) console.log(`skipped: ${s}`);
    const machine = `${environment.cpu} x ${environment.cores} cores, ${environment.memory_gib} GiB; node ${environment.node}, PostgreSQL ${environment.postgres}`;

    if (command === "run") {
      const rows: { round: number; scenario: string; target: Target; mode: string; load: string; summary: Summary; profile?: Record<string, ProfileSummary> }[] = [];
      const repeat = Number(opt.repeat);
      if (!Number.isInteger(repeat) || repeat < 1 || repeat > 20) throw new Error("--repeat is 1..20");
      const plan = pairs.flatMap((p) => loads.map((load) => ({ ...p, load })));
      for (let round = 1; round <= repeat; round++) {
        for (const { sc, target, load } of round % 2 === 1 ? plan : [...plan].reverse()) {
          const cfg: RunConfig = { scenario: sc.scenario, name: sc.name, share: sc.share, target, mode: load.rate ? "open" : "closed", ...load, durationMs, warmupMs };
          const loadText = cfg.concurrency !== undefined ? `c=${cfg.concurrency}` : `${cfg.rate}/s`;
          await prof.start();
          const summary = await measure(pool, server, cfg, ids, opt.key);
          const profile = await prof.stop(`${sc.name.replace(":", "-")}-${target}-${loadText.replace(/[=/]/g, "")}-round${round}`);
          rows.push({ round, scenario: sc.name, target, mode: cfg.mode, load: loadText, summary, profile });
          console.log(`  ${repeat > 1 ? `round ${round}: ` : ""}${sc.name} ${target} ${cfg.mode} ${loadText}: ${summary.requests_per_s} req/s, p50 ${summary.p50_ms} ms, p99 ${summary.p99_ms} ms, errors ${errorsText(summary)}${summary.dropped ? `, dropped ${summary.dropped}` : ""}`);
          if (profile) console.log(profileMarkdown(server.label, profile.current ?? Object.values(profile)[0]));
        }
      }
      const table = markdownTable(
        ["round", "scenario", "target", "mode", "load", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "dropped"],
        rows.map((r) => [r.round, r.scenario, r.target, r.mode, r.load, r.summary.requests_per_s, ms(r.summary.p50_ms), ms(r.summary.p90_ms), ms(r.summary.p99_ms), ms(r.summary.max_ms), errorsText(r.summary), r.summary.dropped]),
      );
      const medians = medianRows(rows);
      const loadAfter = os.loadavg().map((x) => round(x));
      const markdown = [
        `# Load run: ${server.commit}`,
        "",
        `- ${environment.date}; ${machine}`,
        `- ${pool.size} worker processes, ${warmupMs / 1000} s warm-up + ${durationMs / 1000} s per row, k = ${opt.k}, per-call timeout ${opt.timeout}`,
        `- load average (1, 5, 15 min) before ${loadBefore.join(" ")}, after ${loadAfter.join(" ")}`,
        ...skipped.map((s) => `- skipped: ${s}`),
        "",
        ...(repeat > 1 ? ["Median of the rounds:", "", medianTable(medians), "", "Every round:", ""] : []),
        table,
        ...ratioLines(medians),
        ...rows.filter((r) => r.profile).map((r) => `\n## ${r.scenario} ${r.target} ${r.load}\n\n${profileMarkdown(server.label, Object.values(r.profile!)[0])}`),
      ].join("\n");
      const written = await save(
        `load-run-${stamp()}`,
        { benchmark: "load", environment, load_average_before: loadBefore, load_average_after: loadAfter, config: { duration_ms: durationMs, warmup_ms: warmupMs, workers: pool.size, k: Number(opt.k), repeat, argv }, server, dataset, skipped, medians, rows },
        markdown,
      );
      console.log(markdown);
      console.log(`wrote ${written.join(", ")}`);
      return;
    }

    // sweep
    const p99Ms = duration(opt.p99!);
    const deadline = Date.now() + duration(opt.budget!);
    const results = [];
    for (const { sc, target } of pairs) {
      const probe = (r: number) => measure(pool, server, { scenario: sc.scenario, name: sc.name, share: sc.share, target, mode: "open", rate: r, durationMs, warmupMs }, ids, opt.key);
      const result = await sweep(
        async (r) => {
          const s = await probe(r);
          console.log(`  ${sc.name} ${target} ${r}/s: ${s.ok_per_s} ok/s, p50 ${s.p50_ms} ms, p99 ${s.p99_ms} ms, errors ${errorsText(s)}${s.dropped ? `, dropped ${s.dropped}` : ""}`);
          return s;
        },
        { p99Ms, startRate: rate(opt["start-rate"]!), maxRate: rate(opt["max-rate"]!), maxProbes: Number(opt.probes), deadline, precision: 1.1 },
      );
      console.log(`${sc.name} ${target}: ${result.best ? `holds ${result.best.rate}/s` : "held at no rate tried"} (${result.stopped})`);
      results.push({ scenario: sc.name, target, ...result });
    }
    const table = markdownTable(
      ["scenario", "target", "highest rate held", "p50 ms", "p99 ms", "first rate not held", "why not", "probes", "stopped"],
      results.map((r) => [
        r.scenario,
        r.target,
        r.best ? `${r.best.rate}/s` : "none",
        r.best?.summary.p50_ms ?? "",
        r.best?.summary.p99_ms ?? "",
        r.limit ? `${r.limit.rate}/s` : "",
        r.limit?.why ?? "",
        r.probes.length,
        r.stopped,
      ]),
    );
    const loadAfter = os.loadavg().map((x) => round(x));
    const markdown = [
      `# Load sweep: ${server.commit}, p99 <= ${p99Ms} ms`,
      "",
      `- ${environment.date}; ${machine}`,
      `- open loop, latency from the intended send time; ${pool.size} worker processes, ${warmupMs / 1000} s warm-up + ${durationMs / 1000} s per probe; a rate holds with no errors, none dropped, p99 <= ${p99Ms} ms and >= 95% of it answered`,
      `- load average (1, 5, 15 min) before ${loadBefore.join(" ")}, after ${loadAfter.join(" ")}`,
      ...skipped.map((s) => `- skipped: ${s}`),
      "",
      table,
    ].join("\n");
    const written = await save(
      `load-sweep-${stamp()}`,
      { benchmark: "load-sweep", environment, load_average_before: loadBefore, load_average_after: loadAfter, config: { p99_ms: p99Ms, duration_ms: durationMs, warmup_ms: warmupMs, workers: pool.size, argv }, server, dataset, skipped, results },
      markdown,
    );
    console.log(markdown);
    console.log(`wrote ${written.join(", ")}`);
    return;
  }

  // compare
  if (!opt.base) throw new Error("compare needs --base <commit or worktree directory>");
  const scenarios = scenarioList(opt.scenarios!);
  const concurrencies = (opt.concurrency ?? "1,16,64").split(",").map(Number);
  const target = opt.target as Target;
  if (target !== "grpc" && target !== "http") throw new Error("compare takes one --target: grpc or http");
  const durationMs = duration(opt.duration!);
  const warmupMs = duration(opt.warmup!);
  const environment = await runEnvironment();
  const loadBefore = os.loadavg().map((x) => round(x));
  const baseRoot = worktreeFor(opt.base, "glimpse-base");
  // By default the working tree as it is (uncommitted changes included); --current REF measures a commit.
  const currentRoot = opt.current ? worktreeFor(opt.current, "glimpse-at") : REPO_ROOT;
  // The oldest build migrates the template; the current one migrates its copy forward at start.
  const dataset = await ensureTemplate(baseRoot, images);
  const ids = await queryIds(dataset.template, 2000);
  const model = await modelDir(cleanup);
  const pgvector = await pgvectorAvailable();
  const pgvectorNote = pgvector
    ? `pgvector ${pgvector} is available on this server, but this harness has no pgvector series yet; series skipped`
    : "pgvector not installed on this machine; series skipped";
  console.log(pgvectorNote);
  // Both servers start together (each builds its index from the embeddings table) and stay up;
  // the runs alternate between them so both see the same machine state.
  const [base, current] = await Promise.all([
    startServer(cleanup, "base", baseRoot, dataset.template, model, opt["base-env"]),
    startServer(cleanup, "current", currentRoot, dataset.template, model, opt["current-env"]),
  ]);
  for (const server of [base, current]) server.prepared = await prepare(server.grpc, opt["admin-key"]!, scenarios.map((s) => s.scenario));
  const pool = await WorkerPool.start(Number(opt.workers), cleanup);
  const prof = profiler([base, current], await mkdtemp(path.join(os.tmpdir(), "glimpse-load-prof-")));
  await prof.start();
  const rows: {
    scenario: string;
    concurrency: number;
    base: Summary;
    current: Summary;
    ratio_rps: number;
    ratio_p50: number;
    ratio_p99: number;
    /** 1-minute load average of the machine after the pair of runs (other work on it shows here). */
    load_average_1m: number;
    /** With --repeat: every round's summary, of which base and current are the medians. */
    rounds?: Record<string, Summary[]>;
  }[] = [];
  const repeat = Number(opt.repeat);
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > 20) throw new Error("--repeat is 1..20");
  let flip = false;
  for (const sc of scenarios) {
    for (const c of concurrencies) {
      const cfg: RunConfig = { scenario: sc.scenario, name: sc.name, share: sc.share, target, mode: "closed", concurrency: c, durationMs, warmupMs };
      const rounds: Record<string, Summary[]> = { base: [], current: [] };
      for (let round = 1; round <= repeat; round++) {
        // Alternate which build goes first, so neither always follows the other's load.
        const order = flip ? [current, base] : [base, current];
        flip = !flip;
        for (const server of order) {
          const s = await measure(pool, server, cfg, ids);
          rounds[server.label].push(s);
          console.log(`  ${repeat > 1 ? `round ${round}: ` : ""}${sc.name} c=${c} ${server.label}: ${s.requests_per_s} req/s, p50 ${s.p50_ms} ms, p99 ${s.p99_ms} ms, errors ${errorsText(s)}`);
        }
      }
      const results = { base: medianSummary(rounds.base), current: medianSummary(rounds.current) };
      rows.push({
        scenario: sc.name,
        concurrency: c,
        base: results.base,
        current: results.current,
        ratio_rps: round(results.current.requests_per_s / results.base.requests_per_s, 2),
        ratio_p50: round(results.current.p50_ms / results.base.p50_ms, 2),
        ratio_p99: round(results.current.p99_ms / results.base.p99_ms, 2),
        load_average_1m: round(os.loadavg()[0]),
        ...(repeat > 1 ? { rounds } : {}),
      });
    }
  }
  const profiles = await prof.stop("compare");
  const table = markdownTable(
    ["scenario", "c", "base req/s", "base p50 ms", "base p99 ms", "current req/s", "current p50 ms", "current p99 ms", "req/s after/before", "p50 after/before", "server rank ms (base / current)", "server walk ms (base / current)", "errors (base / current)", "load avg 1m"],
    rows.map((r) => [
      r.scenario,
      r.concurrency,
      r.base.requests_per_s,
      r.base.p50_ms,
      r.base.p99_ms,
      r.current.requests_per_s,
      r.current.p50_ms,
      r.current.p99_ms,
      r.ratio_rps,
      r.ratio_p50,
      `${r.base.server_stage_ms?.rank ?? "-"} / ${r.current.server_stage_ms?.rank ?? "-"}`,
      `${r.base.server_stage_ms?.walk ?? "-"} / ${r.current.server_stage_ms?.walk ?? "-"}`,
      `${errorsText(r.base)} / ${errorsText(r.current)}`,
      r.load_average_1m,
    ]),
  );
  const markdown = [
    `# Load comparison: base ${base.commit} vs current ${current.commit}`,
    "",
    `- ${environment.date}; node ${environment.node}, PostgreSQL ${environment.postgres}; ${environment.cpu} x ${environment.cores} cores, ${environment.memory_gib} GiB`,
    `- data: ${dataset.images} images (${dataset.public_images} public) over ${Object.keys(dataset.images_by_owner).length} accounts; tags ${SHARE_TAGS.map((t) => `${t.tag} ${dataset.tag_rows[t.tag] ?? 0}`).join(", ")}; ${DIMENSION}-d clustered unit vectors`,
    `- ${target}, closed loop, ${pool.size} worker processes, ${warmupMs / 1000} s warm-up + ${durationMs / 1000} s per run, k = ${opt.k}; runs alternate between the builds; both servers up throughout` +
      (repeat > 1 ? `; ${repeat} rounds per row, each figure the median of its rounds (p50 ranges below)` : ""),
    `- ${pgvectorNote}`,
    `- load average (1, 5, 15 min) before ${loadBefore.join(" ")}, after ${os.loadavg().map((x) => round(x)).join(" ")} (the machine is shared: other processes' work shows in both builds' figures alike, as the runs alternate)`,
    "",
    table,
    ...oneCallerBound(rows),
    ...(repeat > 1
      ? [
          "",
          "p50 ms of every round (base / current):",
          "",
          ...rows.map((r) => `- ${r.scenario} c=${r.concurrency}: ${r.rounds!.base.map((s) => s.p50_ms).join(", ")} / ${r.rounds!.current.map((s) => s.p50_ms).join(", ")}`),
        ]
      : []),
    ...Object.entries(profiles ?? {}).map(([label, p]) => `\n## ${label}\n\n${profileMarkdown(label, p)}`),
  ].join("\n");
  const json = {
    benchmark: "load-compare",
    profiles,
    environment,
    config: { scenarios: scenarios.map((s) => s.name), concurrencies, target, duration_ms: durationMs, warmup_ms: warmupMs, workers: pool.size, k: Number(opt.k), repeat },
    dataset,
    servers: { base, current },
    pgvector: pgvectorNote,
    rows,
  };
  const written = await save(`load-compare-${stamp()}`, json, markdown);
  console.log(markdown);
  console.log(`wrote ${written.join(", ")}`);
});
