/**
 * The server's memory under hostile uploads. glimpse runs as a child process
 * (`node --import tsx src/cli/main.ts serve`, its own scratch database and data directory, a
 * random admin key, free ports); the uploads come from a second child, the load process, so
 * neither a stalled client nor the server stalls this process, which only samples and probes.
 * Every scenario gets a freshly started server, so its VmHWM (the kernel's peak RSS of the
 * process) belongs to that scenario alone:
 *
 *   1. ten concurrent keyless 32 MiB JSON uploads (POST /v1/images, base64 of 24 MiB of random
 *      bytes, with Content-Length) over raw node:http;
 *   2. the same ten uploads with the admin key;
 *   3. ten concurrent keyed multipart uploads of a 20 MiB random file (not an image);
 *   4. ten concurrent keyless UploadImage calls over gRPC (nice-grpc, one channel each) with
 *      32 MiB of content, the same bytes on the wire as 1.
 *
 * The server's VmRSS is read from /proc/<pid>/status every 50 ms. Per scenario: RSS before,
 * the peak while it ran, VmHWM, RSS 2 s and 10 s after the last answer, the wall time until
 * every answer arrived, the server's CPU time over it, the answers (status, message,
 * Retry-After, how much of its body each HTTP client had handed to the kernel when its answer
 * came), and the latency of a small GET /v1/images?pageSize=1 with the admin key issued every
 * 100 ms while the scenario ran (and, for comparison, for 1 s on the idle server before it).
 *
 *   npm run bench:upload-rss          (node --import tsx bench/upload-rss.ts)
 *   node --import tsx bench/upload-rss.ts --prev /tmp/glimpse-prev [--only 1,2 (writes nothing)]
 *   node --import tsx bench/upload-rss.ts --render    (the .md again from the .json)
 *
 * `--prev DIR` runs the same scenarios, side by side, against another checkout (say an
 * earlier commit in a git worktree, with `npm install` and `npm run build:native` done there).
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { ClientError, createChannel, createClient, Status } from "nice-grpc";
import { ImageServiceDefinition } from "../src/gen/glimpse/image/v1/image_service.js";
import {
  createTempDatabase,
  createTempDir,
  environmentMarkdown,
  markdownTable,
  percentile,
  REPO_ROOT,
  RESULTS_DIR,
  round,
  runBenchmark,
  runEnvironment,
  startTimer,
  writeResults,
  type Cleanup,
  type RunEnvironment,
} from "./lib.js";

const MiB = 1024 * 1024;
const CONCURRENCY = 10;
/** Raw bytes in each JSON upload; base64 makes the body 32 MiB. */
const JSON_CONTENT_BYTES = 24 * MiB;
/** The multipart file. */
const MULTIPART_FILE_BYTES = 20 * MiB;
/** Content of each gRPC upload: the JSON body's size, so the same bytes travel. */
const GRPC_CONTENT_BYTES = 32 * MiB;
const SAMPLE_EVERY_MS = 50;
const PROBE_EVERY_MS = 100;
const AFTER_MS = 2000;
/** A later look, to tell memory given back slowly from memory kept. */
const LATE_AFTER_MS = 10_000;
/** Time a fresh server idles (after a few warm-up reads) before its baseline is read. */
const SETTLE_MS = 1500;
/** Writes of a body go out in slices this big, each acknowledged when the kernel took it. */
const WRITE_SLICE = 256 * 1024;
/** The admin key's rate limit: the probe sends 10 requests a second, the default is 60 a minute. */
const RATE_LIMIT_PER_MINUTE = 100_000;

// ---------------------------------------------------------------------------------------------
// Arguments

const args = process.argv.slice(2);
const argValue = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const prevIndex = args.indexOf("--prev");
const prevDir = prevIndex >= 0 ? path.resolve(args[prevIndex + 1] ?? "") : undefined;
if (prevDir !== undefined && !existsSync(path.join(prevDir, "src", "cli", "main.ts"))) {
  console.error(`--prev ${prevDir}: not a glimpse checkout (no src/cli/main.ts)`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// The child server

interface CodeVersion {
  key: string;
  label: string;
  dir: string;
  commit: string;
  /** Uncommitted changes under src/ that the run included. */
  dirty: boolean;
}

interface Server {
  pid: number;
  child: ChildProcess;
  httpPort: number;
  grpcPort: number;
  /** The child's output lines (its log at level warn), newest last. */
  lines: string[];
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  exit: Promise<void>;
}

function describe(dir: string, key: string): CodeVersion {
  const git = (...a: string[]) => execFileSync("git", ["-C", dir, ...a], { encoding: "utf8" }).trim();
  const commit = git("rev-parse", "--short", "HEAD");
  const dirty = git("status", "--porcelain", "--", "src", "package.json").length > 0;
  return { key, label: `${commit}${dirty ? " + uncommitted changes" : ""}`, dir, commit, dirty };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

interface ServerSetup {
  version: CodeVersion;
  databaseUrl: string;
  dataDir: string;
  adminKey: string;
}

async function startServer(setup: ServerSetup): Promise<Server> {
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const env: NodeJS.ProcessEnv = {};
  // Only what the child needs to run (PATH, HOME, locale), none of this shell's GLIMPSE_*.
  for (const name of ["PATH", "HOME", "LANG", "TMPDIR", "USER"]) if (process.env[name]) env[name] = process.env[name];
  Object.assign(env, {
    DATABASE_URL: setup.databaseUrl,
    GLIMPSE_DATA_DIR: setup.dataDir,
    GLIMPSE_ADMIN_KEY: setup.adminKey,
    GLIMPSE_GRPC_HOST: "127.0.0.1",
    GLIMPSE_GRPC_PORT: String(grpcPort),
    GLIMPSE_HTTP_PORT: String(httpPort),
    GLIMPSE_LOG_LEVEL: "warn",
    GLIMPSE_MODEL_AUTO_PULL: "false",
    GLIMPSE_RATE_LIMIT_PER_MINUTE: String(RATE_LIMIT_PER_MINUTE),
  });
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "serve"], {
    cwd: setup.version.dir,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const server: Server = { pid: child.pid!, child, httpPort, grpcPort, lines: [], exited: undefined, exit: Promise.resolve() };
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) server.lines.push(line.slice(0, 2000));
    if (server.lines.length > 500) server.lines.splice(0, server.lines.length - 500);
  };
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  server.exit = new Promise((resolve) =>
    child.once("exit", (code, signal) => {
      server.exited = { code, signal };
      resolve();
    }),
  );
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (server.exited) throw new Error(`server exited while starting (${JSON.stringify(server.exited)}):\n${server.lines.slice(-20).join("\n")}`);
    const status = await get(httpPort, "/readyz").then((r) => r.status, () => 0);
    if (status === 200) return server;
    await sleep(100);
  }
  await stopServer(server);
  throw new Error(`server not ready after 120 s:\n${server.lines.slice(-20).join("\n")}`);
}

async function stopServer(server: Server): Promise<void> {
  if (server.exited) return;
  server.child.kill("SIGTERM");
  const killed = setTimeout(() => server.child.kill("SIGKILL"), 15_000);
  await server.exit;
  clearTimeout(killed);
}

// ---------------------------------------------------------------------------------------------
// Memory of the child

interface ProcMemory {
  rssKb: number;
  hwmKb: number;
}

function readMemory(pid: number): ProcMemory | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN);
  return { rssKb: field("VmRSS"), hwmKb: field("VmHWM") };
}

/** CPU seconds (user + system, all threads) the process has used. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the command name.
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Reads VmRSS every SAMPLE_EVERY_MS until stopped. */
function sampleMemory(pid: number): { samples: { ms: number; rssKb: number }[]; stop(): void } {
  const elapsed = startTimer();
  const samples: { ms: number; rssKb: number }[] = [];
  const take = () => {
    const m = readMemory(pid);
    if (m) samples.push({ ms: elapsed(), rssKb: m.rssKb });
  };
  take();
  const timer = setInterval(take, SAMPLE_EVERY_MS);
  return { samples, stop: () => clearInterval(timer) };
}

const mib = (kb: number) => round(kb / 1024, 1);

// ---------------------------------------------------------------------------------------------
// HTTP helpers

function get(port: number, target: string, headers: http.OutgoingHttpHeaders = {}, agent?: http.Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: target, headers, agent: agent ?? false, timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}

/** One answer to a hostile upload. */
interface Answer {
  /** HTTP status, gRPC status name, or `error <code>` when no answer came. */
  status: string;
  message: string;
  retryAfter?: string;
  /** Body bytes the kernel had taken from this client when its answer arrived (HTTP only). */
  sentBeforeAnswer?: number;
  ms: number;
}

/**
 * Sends one request with `body` (in slices, each counted once the kernel took it) and resolves
 * with the answer once it has fully arrived; the request is dropped then, whether or not its
 * body was all sent. A connection cut before any answer is an `error` answer.
 */
function upload(port: number, headers: http.OutgoingHttpHeaders, body: Buffer): Promise<Answer> {
  const elapsed = startTimer();
  return new Promise((resolve) => {
    let flushed = 0;
    let settled = false;
    let sentBeforeAnswer: number | undefined;
    const done = (answer: Omit<Answer, "ms" | "sentBeforeAnswer">) => {
      if (settled) return;
      settled = true;
      resolve({ ...answer, sentBeforeAnswer: sentBeforeAnswer ?? flushed, ms: round(elapsed()) });
      req.destroy();
    };
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/v1/images",
        agent: false,
        headers: { ...headers, "content-length": body.length },
      },
      (res) => {
        sentBeforeAnswer = flushed;
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        const finish = () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let message = text;
          try {
            message = (JSON.parse(text) as { message?: string }).message ?? text;
          } catch {
            /* not JSON: keep the text */
          }
          const retryAfter = res.headers["retry-after"];
          done({ status: String(res.statusCode), message: message.slice(0, 300), ...(retryAfter ? { retryAfter: String(retryAfter) } : {}) });
        };
        res.on("end", finish);
        res.on("close", finish);
        res.on("error", finish);
      },
    );
    req.on("error", (error: NodeJS.ErrnoException) => done({ status: `error ${error.code ?? error.message}`, message: error.message }));
    // Slices with backpressure: a server that does not read stalls the writes, as it would a real client's.
    let offset = 0;
    const pump = () => {
      while (offset < body.length && !settled) {
        const slice = body.subarray(offset, offset + WRITE_SLICE);
        offset += slice.length;
        const more = req.write(slice, (error) => {
          if (!error) flushed += slice.length;
        });
        if (!more) return void req.once("drain", pump);
      }
      if (!settled) req.end();
    };
    pump();
  });
}

/** The small read issued every PROBE_EVERY_MS while a scenario runs. */
function startProbe(
  port: number,
  adminKey: string,
): { stop(): Promise<{ latenciesMs: number[]; timeline: [number, number][]; statuses: Record<string, number> }> } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const since = startTimer();
  const latenciesMs: number[] = [];
  /** [issued at, latency] in ms, for each answered probe. */
  const timeline: [number, number][] = [];
  const statuses: Record<string, number> = {};
  const pending = new Set<Promise<void>>();
  const fire = () => {
    const elapsed = startTimer();
    const issued = since();
    const p = get(port, "/v1/images?pageSize=1", { authorization: `Bearer ${adminKey}` }, agent)
      .then(
        (r) => {
          latenciesMs.push(elapsed());
          timeline.push([round(issued, 0), round(elapsed(), 1)]);
          statuses[r.status] = (statuses[r.status] ?? 0) + 1;
        },
        (error: NodeJS.ErrnoException) => {
          const key = `error ${error.code ?? error.message}`;
          statuses[key] = (statuses[key] ?? 0) + 1;
        },
      )
      .finally(() => pending.delete(p));
    pending.add(p);
  };
  fire();
  const timer = setInterval(fire, PROBE_EVERY_MS);
  return {
    async stop() {
      clearInterval(timer);
      await Promise.all(pending);
      agent.destroy();
      return { latenciesMs, timeline, statuses };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Bodies (built once, shared by every request)

function jsonBody(): Buffer {
  const content = randomBytes(JSON_CONTENT_BYTES).toString("base64");
  return Buffer.from(`{"content":"${content}"}`, "latin1");
}

function multipartBody(boundary: string): Buffer {
  return Buffer.concat([
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="content"; filename="noise.bin"\r\n` +
        `Content-Type: application/octet-stream\r\n\r\n`,
    ),
    randomBytes(MULTIPART_FILE_BYTES),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/** Where the load goes. */
interface Target {
  httpPort: number;
  grpcPort: number;
}

interface Scenario {
  key: string;
  label: string;
  run(target: Target, adminKey: string): Promise<Answer[]>;
}

const SCENARIO_LABELS: Record<string, string> = {
  "1_keyless_json": `1. ${CONCURRENCY} keyless JSON uploads, 32 MiB body each (base64 of 24 MiB)`,
  "2_keyed_json": `2. ${CONCURRENCY} keyed JSON uploads, 32 MiB body each (base64 of 24 MiB)`,
  "3_keyed_multipart": `3. ${CONCURRENCY} keyed multipart uploads, 20 MiB random file (not an image)`,
  "4_keyless_grpc": `4. ${CONCURRENCY} keyless gRPC UploadImage, 32 MiB content, one channel each`,
};

/** The scenario `key`, its bodies built (in the load process, once, shared by its requests). */
function scenario(key: string): Scenario {
  const ten = <T>(fn: () => Promise<T>) => Promise.all(Array.from({ length: CONCURRENCY }, fn));
  const label = SCENARIO_LABELS[key];
  switch (key) {
    case "1_keyless_json": {
      const json = jsonBody();
      return { key, label, run: (t) => ten(() => upload(t.httpPort, { "content-type": "application/json" }, json)) };
    }
    case "2_keyed_json": {
      const json = jsonBody();
      return {
        key,
        label,
        run: (t, adminKey) => ten(() => upload(t.httpPort, { "content-type": "application/json", authorization: `Bearer ${adminKey}` }, json)),
      };
    }
    case "3_keyed_multipart": {
      const boundary = `----glimpse-bench-${randomBytes(8).toString("hex")}`;
      const form = multipartBody(boundary);
      const headers = (adminKey: string) => ({ "content-type": `multipart/form-data; boundary=${boundary}`, authorization: `Bearer ${adminKey}` });
      return { key, label, run: (t, adminKey) => ten(() => upload(t.httpPort, headers(adminKey), form)) };
    }
    case "4_keyless_grpc": {
      const grpcContent = randomBytes(GRPC_CONTENT_BYTES);
      return {
        key,
        label,
        run: (t) =>
          ten(async () => {
          const elapsed = startTimer();
            const channel = createChannel(`127.0.0.1:${t.grpcPort}`);
            const client = createClient(ImageServiceDefinition, channel);
            try {
              await client.uploadImage({ content: grpcContent }, { signal: AbortSignal.timeout(120_000) });
              return { status: "OK", message: "", ms: round(elapsed()) };
            } catch (error) {
              if (error instanceof ClientError) return { status: Status[error.code], message: error.details.slice(0, 300), ms: round(elapsed()) };
              return { status: `error ${(error as Error).message}`, message: String(error).slice(0, 300), ms: round(elapsed()) };
            } finally {
              channel.close();
            }
          }),
      };
    }
    default:
      throw new Error(`unknown scenario ${key}`);
  }
}

/** What the load process reports back: its answers, its own wall time and its own stalls. */
interface LoadReport {
  answers: Answer[];
  wallMs: number;
  loopDelayMaxMs: number;
}

/**
 * The load process (`--load <scenario> --http <port> --grpc <port> --key <admin key>`): builds
 * its bodies, says `ready`, fires on `go` (a line on stdin), and prints its LoadReport.
 */
async function loadMain(): Promise<void> {
  const s = scenario(argValue("--load")!);
  const target = { httpPort: Number(argValue("--http")), grpcPort: Number(argValue("--grpc")) };
  const adminKey = argValue("--key")!;
  process.stdout.write("ready\n");
  await new Promise<void>((resolve) => process.stdin.once("data", () => resolve()));
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const wall = startTimer();
  const answers = await s.run(target, adminKey);
  const wallMs = wall();
  loop.disable();
  const report: LoadReport = { answers, wallMs: round(wallMs), loopDelayMaxMs: round(loop.max / 1e6) };
  process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(0));
}

/** Starts the load process for a scenario against `server`; resolves once its bodies are built. */
async function startLoad(key: string, server: Server, adminKey: string): Promise<{ go(): Promise<LoadReport> }> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", path.join(REPO_ROOT, "bench", "upload-rss.ts"), "--load", key, "--http", String(server.httpPort), "--grpc", String(server.grpcPort), "--key", adminKey],
    { cwd: REPO_ROOT, stdio: ["pipe", "pipe", "inherit"] },
  );
  let out = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const waitFor = (test: (text: string) => boolean) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (test(out)) {
          child.stdout!.off("data", onData);
          resolve();
        }
      };
      const onData = (chunk: Buffer) => {
        out += chunk.toString("utf8");
        check();
      };
      child.stdout!.on("data", onData);
      void exited.then((code) => reject(new Error(`load process exited (${code}) before it answered:\n${out}`)));
      check();
    });
  await waitFor((text) => text.includes("ready\n"));
  return {
    async go() {
      child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString("utf8")));
      child.stdin!.write("go\n");
      const code = await exited;
      if (code !== 0) throw new Error(`load process exited with ${code}:\n${out}`);
      return JSON.parse(out.slice(out.indexOf("ready\n") + 6).trim()) as LoadReport;
    },
  };
}

interface ScenarioResult {
  scenario: string;
  label: string;
  version: string;
  rss_baseline_mib: number;
  rss_peak_during_mib: number;
  /** The highest sample in the 10 s after the last answer (work still running after it). */
  rss_peak_after_mib: number;
  vm_hwm_mib: number;
  rss_after_2s_mib: number;
  rss_after_10s_mib: number;
  peak_over_baseline_mib: number;
  /** From the load process's first request to its last answer. */
  wall_ms: number;
  /** CPU time the server used from the start of the load to the last answer (both cores count). */
  server_cpu_s: number;
  /** The load process's longest event-loop stall (a stalled client sends nothing). */
  load_process_loop_delay_max_ms: number;
  /** RSS samples taken, and the longest gap between two (this process's own stalls). */
  samples: number;
  max_sample_gap_ms: number;
  answers: Record<string, number>;
  messages: { status: string; message: string; count: number; retry_after?: string[] }[];
  sent_before_answer_mib: { min: number; median: number; max: number } | undefined;
  answer_ms: { min: number; median: number; max: number };
  probe: { n: number; p50_ms: number; max_ms: number; statuses: Record<string, number>; p90_ms: number;
    over_1s: number;
    /** The slowest probe issued in each second of the scenario (0 where none was answered). */
    max_by_second_ms: number[];
    idle_p50_ms: number; idle_max_ms: number };
  load_average_before: number[];
  server_alive_after: boolean;
  server_exit?: { code: number | null; signal: NodeJS.Signals | null };
  server_log: string[];
}

/** The longest latency of the probes issued in each whole second, from [issued at, latency] pairs. */
function maxBySecond(timeline: [number, number][]): number[] {
  const out: number[] = [];
  for (const [issued, ms] of timeline) {
    const second = Math.floor(issued / 1000);
    while (out.length <= second) out.push(0);
    out[second] = Math.max(out[second], Math.round(ms));
  }
  return out;
}

async function runScenario(version: CodeVersion, setup: ServerSetup, key: string): Promise<ScenarioResult> {
  const server = await startServer(setup);
  try {
    // Warm the read path the probe uses, then let the process settle before the baseline.
    for (let i = 0; i < 5; i++) await get(server.httpPort, "/v1/images?pageSize=1", { authorization: `Bearer ${setup.adminKey}` });
    // The probe's latency on the idle server, for comparison.
    const idleProbe = startProbe(server.httpPort, setup.adminKey);
    await sleep(1000);
    const idle = await idleProbe.stop();
    await sleep(SETTLE_MS);
    const load = await startLoad(key, server, setup.adminKey);
    const loadAverage = os.loadavg().map((x) => round(x));
    const baseline = readMemory(server.pid)!;
    const logFrom = server.lines.length;
    const sampler = sampleMemory(server.pid);
    const probe = startProbe(server.httpPort, setup.adminKey);
    const cpuBefore = cpuSeconds(server.pid);
    const wall = startTimer();
    const report = await load.go();
    const answers = report.answers;
    const wallMs = wall();
    const cpuDuring = cpuSeconds(server.pid) - cpuBefore;
    const duringCount = sampler.samples.length;
    const probed = await probe.stop();
    await sleep(Math.max(0, AFTER_MS - (wall() - wallMs)));
    const after = readMemory(server.pid);
    await sleep(Math.max(0, LATE_AFTER_MS - (wall() - wallMs)));
    sampler.stop();
    const lateAfter = readMemory(server.pid);
    const samples = sampler.samples;
    const during = samples.slice(0, Math.max(1, duringCount));
    const afterSamples = samples.slice(duringCount);
    const gaps = samples.slice(1).map((s, i) => s.ms - samples[i].ms);
    const alive = !server.exited && (await get(server.httpPort, "/readyz").then((r) => r.status === 200, () => false));

    const counts: Record<string, number> = {};
    const messages = new Map<string, { status: string; message: string; count: number; retry_after?: string[] }>();
    for (const a of answers) {
      counts[a.status] = (counts[a.status] ?? 0) + 1;
      const k = `${a.status}\u0000${a.message}`;
      const entry = messages.get(k) ?? { status: a.status, message: a.message, count: 0 };
      entry.count++;
      if (a.retryAfter) (entry.retry_after ??= []).push(a.retryAfter);
      messages.set(k, entry);
    }
    const sent = answers.map((a) => a.sentBeforeAnswer).filter((x): x is number => x !== undefined);
    const times = answers.map((a) => a.ms);
    const peakDuring = Math.max(...during.map((s) => s.rssKb));
    const result: ScenarioResult = {
      scenario: key,
      label: SCENARIO_LABELS[key],
      version: version.key,
      rss_baseline_mib: mib(baseline.rssKb),
      rss_peak_during_mib: mib(peakDuring),
      rss_peak_after_mib: mib(Math.max(0, ...afterSamples.map((s) => s.rssKb))),
      vm_hwm_mib: mib(after?.hwmKb ?? NaN),
      rss_after_2s_mib: mib(after?.rssKb ?? NaN),
      rss_after_10s_mib: mib(lateAfter?.rssKb ?? NaN),
      peak_over_baseline_mib: mib(peakDuring - baseline.rssKb),
      wall_ms: report.wallMs,
      server_cpu_s: round(cpuDuring),
      load_process_loop_delay_max_ms: report.loopDelayMaxMs,
      samples: samples.length,
      max_sample_gap_ms: round(Math.max(0, ...gaps)),
      answers: counts,
      messages: [...messages.values()],
      sent_before_answer_mib: sent.length
        ? { min: round(Math.min(...sent) / MiB, 1), median: round(percentile(sent, 50) / MiB, 1), max: round(Math.max(...sent) / MiB, 1) }
        : undefined,
      answer_ms: { min: round(Math.min(...times)), median: round(percentile(times, 50)), max: round(Math.max(...times)) },
      probe: {
        n: probed.latenciesMs.length,
        p50_ms: round(percentile(probed.latenciesMs, 50)),
        max_ms: round(Math.max(...probed.latenciesMs)),
        statuses: probed.statuses,
        p90_ms: round(percentile(probed.latenciesMs, 90)),
        over_1s: probed.latenciesMs.filter((ms) => ms > 1000).length,
        max_by_second_ms: maxBySecond(probed.timeline),
        idle_p50_ms: round(percentile(idle.latenciesMs, 50)),
        idle_max_ms: round(Math.max(...idle.latenciesMs)),
      },
      load_average_before: loadAverage,
      server_alive_after: alive,
      ...(server.exited ? { server_exit: server.exited } : {}),
      server_log: server.lines.slice(logFrom, logFrom + 20),
    };
    console.log(
      `  ${version.key} ${key}: ${JSON.stringify(counts)} in ${(wallMs / 1000).toFixed(2)} s; ` +
        `server CPU ${result.server_cpu_s} s; RSS ${result.rss_baseline_mib} -> peak ${result.rss_peak_during_mib} (HWM ${result.vm_hwm_mib}) -> ${result.rss_after_2s_mib} MiB; ` +
        `probe p50 ${result.probe.p50_ms} ms, max ${result.probe.max_ms} ms`,
    );
    return result;
  } finally {
    await stopServer(server);
  }
}

interface ResultFile {
  benchmark: string;
  environment: RunEnvironment;
  setup: Record<string, unknown>;
  versions: CodeVersion[];
  results: ScenarioResult[];
}

/** The summary table of a result (also `--render`: rewrites the .md from the .json). */
function renderMarkdown(json: ResultFile): string {
  const { environment, versions, results } = json;
  const probeFailures = (r: ScenarioResult) =>
    Object.entries(r.probe.statuses)
      .filter(([status]) => status.startsWith("error"))
      .reduce((sum, [, n]) => sum + n, 0);
  const rows = results.map((r) => [
    r.label.split(",")[0],
    r.version,
    Object.entries(r.answers)
      .map(([s, n]) => `${n}x ${s}`)
      .join(", "),
    (r.wall_ms / 1000).toFixed(2),
    r.server_cpu_s,
    r.rss_baseline_mib,
    r.rss_peak_during_mib,
    r.vm_hwm_mib,
    r.rss_after_2s_mib,
    r.rss_after_10s_mib,
    r.sent_before_answer_mib ? `${r.sent_before_answer_mib.min}-${r.sent_before_answer_mib.max}` : "-",
    `${r.probe.p50_ms} / ${r.probe.max_ms} (${r.probe.n}${probeFailures(r) ? `, ${probeFailures(r)} failed` : ""})`,
    `${r.probe.idle_p50_ms} / ${r.probe.idle_max_ms}`,
    r.server_alive_after ? "yes" : "NO",
  ]);
  const messageLines = results.flatMap((r) =>
    r.messages.map(
      (m) =>
        `- ${r.scenario} ${r.version}: ${m.count}x ${m.status}${m.retry_after ? ` (Retry-After ${[...new Set(m.retry_after)].join(", ")})` : ""}: ` +
        `${m.message.replace(/\s+/g, " ").slice(0, 160)}`,
    ),
  );
  return [
    "# upload-rss: server memory under hostile uploads",
    "",
    environmentMarkdown(environment),
    ...versions.map((v) => `- ${v.key}: ${v.label}`),
    "",
    "glimpse in a child process, a fresh one per scenario; RSS of the child from /proc every 50 ms (MiB).",
    `Scenarios: ${[...new Set(results.map((r) => r.label))].join("; ")}.`,
    `Load average (1 min) before the scenarios: ${Math.min(...results.map((r) => r.load_average_before[0]))}-${Math.max(...results.map((r) => r.load_average_before[0]))} on ${environment.cores} cores: the times move with it, the memory figures much less.`,
    "\"sent\": MiB of its body each client had handed to the kernel when its answer arrived (min-max).",
    `Probe: GET /v1/images?pageSize=1 with the admin key every ${PROBE_EVERY_MS} ms, p50 / max ms (answered, failed).`,
    "",
    markdownTable(
      ["scenario", "code", "answers", "wall s", "server CPU s", "RSS before", "peak during", "VmHWM", "2 s after", "10 s after", "sent MiB", "probe p50 / max ms", "idle probe p50 / max", "alive"],
      rows,
    ),
    "",
    "Answers:",
    "",
    ...messageLines,
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------

if (args.includes("--load")) {
  await loadMain();
} else if (args.includes("--render")) {
  const json = JSON.parse(readFileSync(path.join(RESULTS_DIR, "upload-rss.json"), "utf8")) as ResultFile;
  console.log(`wrote ${(await writeResults("upload-rss", json, renderMarkdown(json))).join(", ")}`);
} else {
  await runBenchmark("bench:upload-rss", async (cleanup: Cleanup) => {
    const environment = await runEnvironment();
    const versions = [describe(REPO_ROOT, "current")];
    if (prevDir) versions.push(describe(prevDir, "previous"));
    const adminKey = `glk_bench${randomBytes(24).toString("base64url")}`;
    // --only 1,2 runs those scenarios alone, for trying things: it writes no result files.
    const only = argValue("--only")?.split(",");
    const keys = Object.keys(SCENARIO_LABELS).filter((k) => !only || only.includes(k.split("_")[0]));
    const setups: ServerSetup[] = [];
    for (const version of versions) {
      const db = await createTempDatabase("glimpse_bench_rss");
      cleanup.add(`drop database ${db.name}`, () => db.drop());
      const dataDir = await createTempDir(cleanup, `glimpse-bench-rss-${version.key}-`);
      console.log(`${version.key}: ${version.label}, ${version.dir}`);
      setups.push({ version, databaseUrl: db.url, dataDir, adminKey });
    }
    // Scenario by scenario, each code version in turn, so both see the machine as it was then.
    const results: ScenarioResult[] = [];
    for (const key of keys) {
      for (const setup of setups) results.push(await runScenario(setup.version, setup, key));
    }

    const json: ResultFile = {
      benchmark: "upload-rss",
      environment,
      setup: {
        concurrency: CONCURRENCY,
        json_body_bytes: 2 + 12 + Math.ceil(JSON_CONTENT_BYTES / 3) * 4,
        json_content_bytes: JSON_CONTENT_BYTES,
        multipart_file_bytes: MULTIPART_FILE_BYTES,
        grpc_content_bytes: GRPC_CONTENT_BYTES,
        sample_every_ms: SAMPLE_EVERY_MS,
        probe: `GET /v1/images?pageSize=1 with the admin key every ${PROBE_EVERY_MS} ms, keep-alive`,
        after_ms: [AFTER_MS, LATE_AFTER_MS],
        server_env: {
          GLIMPSE_RATE_LIMIT_PER_MINUTE: RATE_LIMIT_PER_MINUTE,
          GLIMPSE_LOG_LEVEL: "warn",
          GLIMPSE_MODEL_AUTO_PULL: false,
          note: "every other option at its default (GLIMPSE_MAX_UPLOAD_BYTES 25 MiB, GLIMPSE_MAX_UPLOAD_BYTES_IN_FLIGHT 256 MiB where the version has it)",
        },
        fresh_server_per_scenario: true,
      },
      versions,
      results,
    };

    const markdown = renderMarkdown(json);
    if (only) return void console.log(markdown);
    const written = await writeResults("upload-rss", json, markdown);
    console.log(`wrote ${written.join(", ")}`);
  });
}
