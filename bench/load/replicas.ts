/**
 * The `replicas` mode of the load harness: N glimpse replicas as separate processes
 * (`node --import tsx src/cli/main.ts serve`, configured by the environment, as an operator
 * runs them) on one copy of the seeded template database, one s3rver on loopback for the blobs
 * and Redis for the rate-limit buckets, driven round-robin from the worker processes; after
 * `--kill-at` one replica is killed with SIGKILL and started again. It reports, per phase
 * (before the kill, while the replica is down, after it is ready again), requests/s, latency
 * and errors by status (by replica too); the restarted replica's time to ready and how its
 * index loaded (snapshot + log replay); and the cross-replica visibility lag under that load:
 * an upload acknowledged on replica A with wait_for_index, searched for on replica B until
 * found, then deleted on A and searched for on B until gone. A probe that outlasts
 * `--probe-timeout` is counted as a timeout, never waited on further.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { createChannel, createClient, Metadata } from "nice-grpc";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { writeClipTestModel } from "../../test/fixtures/clip-test-model.js";
import { freePort, reachable, Replica, type LogRecord } from "../../test/helpers/replicas.js";
import { startS3Server, TEST_BUCKET } from "../../test/helpers/s3.js";
import { markdownTable, REPO_ROOT, round, runEnvironment, type Cleanup } from "../lib.js";
import { freshImage } from "./calls.js";
import { indexCacheDir, keepIndex } from "./index-cache.js";
import { WorkerPool } from "./pool.js";
import { prepare } from "./prepare.js";
import { outcomeOf, SCENARIOS, type ScenarioSpec, type Target } from "./scenarios.js";
import { ADMIN_KEY, cloneTemplate, DIMENSION, ensureTemplate, MODEL_ID, queryIds, tagForShare, USERS } from "./seed.js";
import type { RunReply } from "./worker.js";

/** What `npm run bench:load -- replicas` was asked to do (main.ts parses the flags). */
export interface ReplicasConfig {
  replicas: number;
  images: number;
  /** A scenario of scenarios.ts; `name:share` for the -tag ones. */
  scenario: string;
  target: Target;
  /** Closed loop callers, or (when rate is set) none. */
  concurrency?: number;
  /** Open loop calls per second. */
  rate?: number;
  warmupMs: number;
  /** Measured load in all; extended when the restarted replica is ready too late for an after phase. */
  durationMs: number;
  /** Measured load before the kill. */
  killAtMs: number;
  /** How long the killed replica stays down before it is started again. */
  downMs: number;
  restartTimeoutMs: number;
  /** How long a probe waits for its image to show (or go) on replica B. */
  probeTimeoutMs: number;
  workers: number;
  k: number;
  timeoutMs: number;
  maxRequests: number;
  maxInFlight: number;
  indexCache: boolean;
  redisUrl: string;
  adminKey: string;
  /** The tree's commit, as the other modes name it. */
  commit: string;
  argv: string[];
}

/**
 * Measured load the run keeps after the restarted replica is ready, however late that is: as
 * long as before the kill (--kill-at), and at least this.
 */
const MIN_AFTER_MS = 5_000;
/** A probe's searches on B: how often. */
const PROBE_POLL_MS = 20;
/** Pause between probes. */
const PROBE_PAUSE_MS = 200;
/** PostgreSQL connections per replica (the shared server allows 100 in all). */
const DB_POOL_MAX = 8;
/**
 * The workers' and probes' gRPC channels try a dead replica again at most 1 s apart: grpc-js's
 * default backoff grows to 120 s, which would keep failing calls to a replica long after it is
 * back (what any client of restartable replicas configures).
 */
const GRPC_OPTIONS = { "grpc.initial_reconnect_backoff_ms": 250, "grpc.max_reconnect_backoff_ms": 1000 };

const PHASES = ["before kill", "while down", "after restart"] as const;
type Phase = (typeof PHASES)[number];

/** One phase's calls, all replicas together. */
interface PhaseSummary {
  phase: Phase;
  window_s: number;
  calls: number;
  ok: number;
  requests_per_s: number;
  ok_per_s: number;
  /** Latency of the calls answered OK (a call refused at once by a dead replica would pull these down). */
  ok_p50_ms: number;
  ok_p90_ms: number;
  ok_p99_ms: number;
  ok_max_ms: number;
  /** Non-OK outcomes by status name (gRPC), status code (HTTP) or client error code. */
  errors: Record<string, number>;
  /** Calls and non-OK outcomes by replica name. */
  by_replica: Record<string, { calls: number; errors: Record<string, number> }>;
}

interface ProbeRecord {
  n: number;
  /** Epoch ms at which A acknowledged the upload (absent when it failed). */
  acked_at?: number;
  phase?: Phase;
  /** UploadImage with wait_for_index on A. */
  upload_ms?: number;
  /** From A's acknowledgement to the first search on B that finds the image. */
  visible_ms?: number;
  visible_timeout?: boolean;
  /** From A's DeleteImage answer to the first search on B that no longer finds it. */
  gone_ms?: number;
  gone_timeout?: boolean;
  /** Searches on B that failed while polling (e.g. B down). */
  search_errors: number;
  error?: string;
}

const pct = (sorted: number[], p: number) =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
const na = (x: number) => (Number.isNaN(x) ? "n/a" : x);
const errorsText = (e: Record<string, number>) =>
  Object.keys(e).length === 0 ? "none" : Object.entries(e).map(([k, v]) => `${k} ${v}`).join(", ");

function checkConfig(cfg: ReplicasConfig): void {
  if (!Number.isInteger(cfg.replicas) || cfg.replicas < 2 || cfg.replicas > 8) throw new Error("--replicas is 2..8");
  if (cfg.killAtMs <= 0 || cfg.killAtMs >= cfg.durationMs) throw new Error("--kill-at must fall inside --duration");
  const host = new URL(cfg.redisUrl).hostname.replace(/^\[|\]$/g, "");
  if (!["127.0.0.1", "localhost", "::1"].includes(host)) throw new Error(`--redis must be on loopback, not ${cfg.redisUrl}`);
  const def = SCENARIOS[cfg.scenario.split(":")[0]];
  if (!def) throw new Error(`unknown scenario ${cfg.scenario}`);
  if (cfg.target === "http" && !def.http) throw new Error(`${cfg.scenario} has no HTTP route`);
}

/** Runs the replicas mode; returns the JSON and Markdown of its result for main.ts to save. */
export async function runReplicas(cleanup: Cleanup, cfg: ReplicasConfig): Promise<{ json: unknown; markdown: string }> {
  checkConfig(cfg);
  if (!(await reachable(cfg.redisUrl))) throw new Error(`no Redis at ${cfg.redisUrl} (the replicas share their rate-limit buckets there; --redis URL)`);
  const environment = await runEnvironment();
  const loadBefore = os.loadavg().map((x) => round(x));
  const [scenario, shareText] = cfg.scenario.split(":");
  const tag = scenario.endsWith("-tag") ? tagForShare(Number(shareText ?? "0.01")) : undefined;

  // Shared parts: one database, one S3 server, one Redis prefix.
  const dataset = await ensureTemplate(REPO_ROOT, cfg.images);
  const ids = await queryIds(dataset.template, Math.min(2000, dataset.public_images));
  const db = await cloneTemplate(dataset.template, "replicas");
  cleanup.add(`drop database ${db.name}`, () => db.drop());
  const s3 = await startS3Server();
  cleanup.add("stop s3rver", () => s3.stop());
  const root = await mkdtemp(path.join(os.tmpdir(), "glimpse-load-replicas-"));
  cleanup.add(`remove ${root}`, () => rm(root, { recursive: true, force: true }));
  const modelDir = path.join(root, "model");
  await writeClipTestModel(modelDir, { dimension: DIMENSION });
  await writeFile(path.join(modelDir, "glimpse-model.json"), JSON.stringify({ id: MODEL_ID }));
  const run = randomBytes(4).toString("hex");
  const env: Record<string, string> = {
    DATABASE_URL: db.url,
    GLIMPSE_DB_POOL_MAX: String(DB_POOL_MAX),
    GLIMPSE_BLOBS: `s3://${TEST_BUCKET}/load-replicas-${run}`,
    GLIMPSE_S3_ENDPOINT: s3.endpoint,
    GLIMPSE_S3_REGION: "us-east-1",
    GLIMPSE_S3_FORCE_PATH_STYLE: "true",
    // s3rver's built-in credentials.
    AWS_ACCESS_KEY_ID: "S3RVER",
    AWS_SECRET_ACCESS_KEY: "S3RVER",
    GLIMPSE_REDIS_URL: cfg.redisUrl,
    GLIMPSE_REDIS_PREFIX: `glimpse-load-${run}:`,
    GLIMPSE_ADMIN_KEY: cfg.adminKey,
    GLIMPSE_MODEL: modelDir,
    GLIMPSE_MODEL_AUTO_PULL: "false",
    GLIMPSE_EMBED_THREADS: "1",
    // The most the environment allows; Redis holds one bucket per key for all replicas.
    GLIMPSE_RATE_LIMIT_PER_MINUTE: "100000",
    // A batch the killed replica had claimed for embedding goes to another within the run.
    GLIMPSE_INDEX_CLAIM_LEASE_S: "10",
    // The default: one line per call, to the replica's log file (and "vector index loaded").
    GLIMPSE_LOG_LEVEL: "info",
  };
  const replicas: Replica[] = [];
  for (let i = 0; i < cfg.replicas; i++) {
    const dataDir = path.join(root, `r${i}`);
    await mkdir(dataDir, { recursive: true });
    replicas.push(new Replica(`r${i}`, await freePort(), await freePort(), dataDir, env));
  }
  cleanup.add("stop replicas", async () => {
    await Promise.all(replicas.map((r) => r.stop()));
  });

  // Start: from the cached index snapshot of this template when there is one; otherwise the
  // first replica builds its index from the table and its snapshot seeds the others (and the cache).
  const startAll = performance.now();
  const cached = cfg.indexCache ? await indexCacheDir(dataset.template, REPO_ROOT) : undefined;
  const hadCache = cached !== undefined && existsSync(path.join(cached, "ok"));
  let snapshotFrom: string | undefined = hadCache ? path.join(cached!, "index") : undefined;
  let rest = replicas;
  if (!hadCache) {
    console.log(`replicas: no cached index snapshot for ${dataset.template}; r0 builds its index from the table first`);
    replicas[0].start();
    await replicas[0].waitReady(15 * 60_000);
    if (cached) {
      await keepIndex(replicas[0].dataDir, cached);
      if (existsSync(path.join(cached, "ok"))) snapshotFrom = path.join(cached, "index");
    }
    rest = replicas.slice(1);
  }
  for (const r of rest) {
    if (snapshotFrom) await cp(snapshotFrom, path.join(r.dataDir, "index"), { recursive: true });
    r.start();
  }
  await Promise.all(rest.map((r) => r.waitReady(15 * 60_000)));
  const startS = round((performance.now() - startAll) / 1000, 1);
  const firstLoads = await Promise.all(replicas.map(async (r) => (await r.indexLoads())[0]));
  console.log(`replicas: ${replicas.length} ready in ${startS} s (${firstLoads.map((l, i) => `r${i} index from ${l?.source}`).join(", ")})`);

  const prepared = await prepare(replicas[0].address, cfg.adminKey, [scenario]);
  const pool = await WorkerPool.start(cfg.workers, cleanup);
  const def = SCENARIOS[scenario];
  const addresses = replicas.map((r) => (cfg.target === "grpc" ? r.address : `127.0.0.1:${r.httpPort}`));
  const spec: ScenarioSpec = {
    scenario,
    target: cfg.target,
    address: addresses[0],
    addresses,
    key: def.key === "user" ? USERS[0].secret : cfg.adminKey,
    ids,
    tag,
    contentIds: prepared.contentIds,
    k: cfg.k,
    timeoutMs: cfg.timeoutMs,
    grpcOptions: GRPC_OPTIONS,
  };

  // The run: warm-up, load, the kill, the restart, load until the end; probes alongside.
  const victim = replicas[replicas.length - 1];
  const [probeA, probeB] = [replicas[0], replicas[1]];
  const startAt = Date.now() + 500;
  const measureFrom = startAt + cfg.warmupMs;
  // The workers' own bound; the run normally ends earlier, by pool.end().
  const boundMs = cfg.durationMs + cfg.downMs + cfg.restartTimeoutMs + Math.max(MIN_AFTER_MS, cfg.killAtMs) + 10_000;
  const running = pool.run(
    { spec, mode: cfg.rate ? "open" : "closed", startAt, warmupMs: cfg.warmupMs, durationMs: boundMs, maxInFlight: cfg.maxInFlight, detail: true },
    { concurrency: cfg.rate ? undefined : cfg.concurrency, rate: cfg.rate, maxRequests: cfg.maxRequests },
  );
  // A worker failing shows when the run is awaited; until then, do not let it go unhandled.
  running.catch(() => {});
  let probing = true;
  // Probes start with the warm-up (the first upload also warms the embedder); one acknowledged
  // in the warm-up counts before the kill.
  const probes = sleep(Math.max(0, startAt - Date.now())).then(() =>
    probeLoop(probeA, probeB, USERS[1].secret, ids[0], run, cfg.probeTimeoutMs, () => probing),
  );
  probes.catch(() => {});
  let readyAt = Number.NaN;
  let killedAt = Number.NaN;
  let restartedAt = Number.NaN;
  let endAt = Number.NaN;
  try {
    await sleep(Math.max(0, measureFrom + cfg.killAtMs - Date.now()));
    killedAt = Date.now();
    await victim.kill("SIGKILL");
    console.log(`replicas: ${victim.name} killed (SIGKILL) at +${round((killedAt - measureFrom) / 1000, 1)} s`);
    await sleep(cfg.downMs);
    restartedAt = Date.now();
    victim.start();
    await victim.waitReady(cfg.restartTimeoutMs);
    readyAt = Date.now();
    console.log(`replicas: ${victim.name} ready again ${round((readyAt - restartedAt) / 1000, 1)} s after its restart`);
    endAt = Math.max(measureFrom + cfg.durationMs, readyAt + Math.max(MIN_AFTER_MS, cfg.killAtMs));
    await sleep(Math.max(0, endAt - Date.now()));
  } finally {
    pool.end();
    probing = false;
  }
  const replies = await running;
  const probeRecords = await probes;
  const loadAfter = os.loadavg().map((x) => round(x));

  // Figures.
  const bounds: Record<Phase, [number, number]> = {
    "before kill": [measureFrom, killedAt],
    "while down": [killedAt, readyAt],
    "after restart": [readyAt, endAt],
  };
  const phaseOf = (t: number): Phase | undefined => PHASES.find((p) => t >= bounds[p][0] && t < bounds[p][1]);
  const phases = summarisePhases(replies, bounds, replicas.map((r) => r.name));
  const victimRoute = replicas.length - 1;
  const firstOk = firstOkOn(replies, victimRoute, restartedAt);
  for (const p of probeRecords) if (p.acked_at !== undefined) p.phase = phaseOf(p.acked_at) ?? (p.acked_at >= endAt ? "after restart" : "before kill");
  const lag = summariseProbes(probeRecords);
  const restart = await restartFacts(victim, killedAt, restartedAt, readyAt);
  const logs = await logCounts(replicas);
  const commit = cfg.commit;
  const loadText = cfg.rate ? `open loop, ${cfg.rate}/s` : `closed loop, c=${cfg.concurrency}`;
  const at = (t: number) => `+${round((t - measureFrom) / 1000, 1)} s`;
  const machine = `${environment.cpu} x ${environment.cores} cores, ${environment.memory_gib} GiB; node ${environment.node}, PostgreSQL ${environment.postgres}`;

  const markdown = [
    `# Load on ${replicas.length} replicas, one killed and restarted: ${commit}`,
    "",
    `- ${environment.date}; ${machine}`,
    `- load average (1, 5, 15 min) before ${loadBefore.join(" ")}, after ${loadAfter.join(" ")}`,
    `- data: ${dataset.images} images (${dataset.public_images} public), ${DIMENSION}-d; one copy of the template shared by every replica; blobs in s3rver at ${s3.endpoint}; rate limits in Redis at ${cfg.redisUrl} (prefix glimpse-load-${run}:)`,
    `- replicas: \`node --import tsx src/cli/main.ts serve\` each, own data directory, index from ${hadCache ? "the cached snapshot" : "the table (r0), its snapshot for the others"}; all ready ${startS} s after the first start`,
    `- load: ${scenario}${tag ? ` (tag ${tag})` : ""} over ${cfg.target}, ${loadText}, ${pool.size} worker processes, round-robin over the ${replicas.length} replicas by call number, no retry elsewhere (a call routed to the killed replica fails); ${cfg.warmupMs / 1000} s warm-up, per-call timeout ${cfg.timeoutMs / 1000} s; gRPC channels reconnect at most 1 s apart`,
    `- timeline: ${victim.name} killed with SIGKILL at ${at(killedAt)}, started again at ${at(restartedAt)}, ready at ${at(readyAt)}; load ended at ${at(endAt)}`,
    `- restart: ready ${restart.ready_s} s after its start (first log line ${restart.first_log_s} s, gRPC listening ${restart.listening_s} s, index loaded ${restart.index_loaded_s} s: from ${restart.index?.source}, ${restart.index?.replayed} log entries replayed, ${restart.index?.vectors} vectors, ${restart.index?.ms} ms); first OK call routed to it sent ${firstOk === undefined ? "never" : `${round((firstOk - restartedAt) / 1000, 2)} s after its start (${firstOk >= readyAt ? `${round((firstOk - readyAt) / 1000, 2)} s after it was ready` : `${round((readyAt - firstOk) / 1000, 2)} s before its index was: calls other than search are served once gRPC listens`})`}`,
    "",
    "Per phase (by the time each call was answered or failed; latency of the calls answered OK):",
    "",
    markdownTable(
      ["phase", "window s", "calls", "req/s", "ok/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", `errors on ${victim.name} (killed)`],
      phases.map((p) => [p.phase, p.window_s, p.calls, p.requests_per_s, p.ok_per_s, na(p.ok_p50_ms), na(p.ok_p90_ms), na(p.ok_p99_ms), na(p.ok_max_ms), errorsText(p.errors), errorsText(p.by_replica[victim.name]?.errors ?? {})]),
    ),
    "",
    "Calls (errors) by replica:",
    "",
    markdownTable(
      ["phase", ...replicas.map((r) => r.name)],
      phases.map((p) => [p.phase, ...replicas.map((r) => { const x = p.by_replica[r.name]; return `${x.calls} (${Object.values(x.errors).reduce((a, b) => a + b, 0)})`; })]),
    ),
    "",
    `Visibility lag: upload on ${probeA.name} (gRPC, wait_for_index, ordinary key ${USERS[1].username}, a tag of its own), then SearchImages on ${probeB.name} filtered on that tag every ${PROBE_POLL_MS} ms until found; then DeleteImage on ${probeA.name} and search on ${probeB.name} until gone; ${PROBE_PAUSE_MS} ms between probes, --probe-timeout ${cfg.probeTimeoutMs / 1000} s. Phase by the upload's acknowledgement.`,
    "",
    markdownTable(
      ["phase", "probes", "upload p50 ms", "visible p50 ms", "p99 ms", "max ms", "not visible in time", "gone p50 ms", "p99 ms", "max ms", "not gone in time", "failed", "search errors on B"],
      lag.map((l) => [l.phase, l.probes, na(l.upload_p50_ms), na(l.visible_p50_ms), na(l.visible_p99_ms), na(l.visible_max_ms), l.visible_timeouts, na(l.gone_p50_ms), na(l.gone_p99_ms), na(l.gone_max_ms), l.gone_timeouts, l.failed, l.search_errors]),
    ),
    ...(logs.length ? ["", "Warnings and errors in the replicas' logs:", "", markdownTable(["replica", "level: message", "lines"], logs.map((l) => [l.replica, l.message, l.count]))] : []),
  ].join("\n");

  const json = {
    benchmark: "load-replicas",
    environment,
    load_average_before: loadBefore,
    load_average_after: loadAfter,
    commit,
    config: { ...cfg, adminKey: undefined, workers: pool.size },
    dataset,
    shared: { database: db.name, s3: s3.endpoint, redis: cfg.redisUrl, redis_prefix: `glimpse-load-${run}:` },
    replicas: replicas.map((r, i) => ({ name: r.name, grpc: r.address, http: `127.0.0.1:${r.httpPort}`, first_index_load: firstLoads[i] })),
    start_s: startS,
    index_from_cache: hadCache,
    timeline_s: { killed: round((killedAt - measureFrom) / 1000, 2), restarted: round((restartedAt - measureFrom) / 1000, 2), ready: round((readyAt - measureFrom) / 1000, 2), ended: round((endAt - measureFrom) / 1000, 2) },
    killed: victim.name,
    restart: { ...restart, first_ok_after_start_s: firstOk === undefined ? null : round((firstOk - restartedAt) / 1000, 3) },
    phases,
    lag,
    probes: probeRecords,
    logs,
  };
  return { json, markdown };
}

/** Per phase: calls answered in it (or failed), their outcomes and the OK calls' latency; by replica too. */
function summarisePhases(replies: RunReply[], bounds: Record<Phase, [number, number]>, names: string[]): PhaseSummary[] {
  return PHASES.map((phase) => {
    const [from, to] = bounds[phase];
    const okMs: number[] = [];
    const errors: Record<string, number> = {};
    const byReplica = Object.fromEntries(names.map((n) => [n, { calls: 0, errors: {} as Record<string, number> }]));
    let calls = 0;
    for (const r of replies) {
      const d = r.detail!;
      for (let i = 0; i < d.sentAt.length; i++) {
        // By the answer's time: a call out when the replica died fails after the kill.
        const answeredAt = d.sentAt[i] + r.samples[i];
        if (!(answeredAt >= from && answeredAt < to)) continue;
        calls++;
        const name = names[d.route[i]];
        byReplica[name].calls++;
        const outcome = d.names[d.outcome[i]];
        if (outcome === "OK") okMs.push(r.samples[i]);
        else {
          errors[outcome] = (errors[outcome] ?? 0) + 1;
          byReplica[name].errors[outcome] = (byReplica[name].errors[outcome] ?? 0) + 1;
        }
      }
    }
    okMs.sort((a, b) => a - b);
    const windowS = Math.max(0.001, (to - from) / 1000);
    return {
      phase,
      window_s: round(windowS, 1),
      calls,
      ok: okMs.length,
      requests_per_s: round(calls / windowS, 1),
      ok_per_s: round(okMs.length / windowS, 1),
      ok_p50_ms: round(pct(okMs, 50), 1),
      ok_p90_ms: round(pct(okMs, 90), 1),
      ok_p99_ms: round(pct(okMs, 99), 1),
      ok_max_ms: round(okMs.length ? okMs[okMs.length - 1] : Number.NaN, 1),
      errors,
      by_replica: byReplica,
    };
  });
}

/** Send time (epoch ms) of the first call routed to `route` after `since` that answered OK. */
function firstOkOn(replies: RunReply[], route: number, since: number): number | undefined {
  let first: number | undefined;
  for (const r of replies) {
    const d = r.detail!;
    const ok = d.names.indexOf("OK");
    for (let i = 0; i < d.sentAt.length; i++) {
      if (d.route[i] === route && d.outcome[i] === ok && d.sentAt[i] >= since && (first === undefined || d.sentAt[i] < first)) first = d.sentAt[i];
    }
  }
  return first;
}

/**
 * Probes until `going()` turns false: each uploads a fresh PNG with a tag of its own on A
 * (wait_for_index), searches B for that tag until the image shows, deletes it on A and
 * searches B until it is gone. Each wait is bounded by `timeoutMs`.
 */
async function probeLoop(a: Replica, b: Replica, key: string, likeId: string, run: string, timeoutMs: number, going: () => boolean): Promise<ProbeRecord[]> {
  const metadata = Metadata({ authorization: `Bearer ${key}` });
  const channelA = createChannel(a.address, undefined, GRPC_OPTIONS);
  const channelB = createChannel(b.address, undefined, GRPC_OPTIONS);
  const onA = createClient(ImageServiceDefinition, channelA, { "*": { metadata } });
  const onB = createClient(ImageServiceDefinition, channelB, { "*": { metadata } });
  const records: ProbeRecord[] = [];
  /** Milliseconds until B's search for `tag` gives a count `done` accepts, or undefined after timeoutMs. */
  const poll = async (tag: string, done: (count: number) => boolean, rec: ProbeRecord): Promise<number | undefined> => {
    const start = performance.now();
    for (;;) {
      const left = timeoutMs - (performance.now() - start);
      if (left <= 0) return undefined;
      try {
        const { results } = await onB.searchImages(
          { query: { $case: "likeImageId", value: likeId }, limit: 1, filter: { tags: [tag] } } as never,
          { signal: AbortSignal.timeout(Math.max(1, Math.min(5000, left))) },
        );
        if (done(results.length)) return performance.now() - start;
      } catch {
        rec.search_errors++;
      }
      await sleep(PROBE_POLL_MS);
    }
  };
  try {
    for (let n = 0; going(); n++) {
      const tag = `load-lag-${run}-${n}`;
      const rec: ProbeRecord = { n, search_errors: 0 };
      records.push(rec);
      try {
        const content = await freshImage();
        const t = performance.now();
        const { image } = await onA.uploadImage(
          { content, fileName: `probe-${n}.png`, tags: ["load-probe", tag], waitForIndex: true } as never,
          { signal: AbortSignal.timeout(timeoutMs) },
        );
        rec.upload_ms = round(performance.now() - t, 1);
        rec.acked_at = Date.now();
        const visible = await poll(tag, (count) => count > 0, rec);
        if (visible === undefined) rec.visible_timeout = true;
        else rec.visible_ms = round(visible, 1);
        await onA.deleteImage({ id: image!.id }, { signal: AbortSignal.timeout(timeoutMs) });
        // Gone from a search that never found it says nothing: only timed when it showed.
        if (visible !== undefined) {
          const gone = await poll(tag, (count) => count === 0, rec);
          if (gone === undefined) rec.gone_timeout = true;
          else rec.gone_ms = round(gone, 1);
        }
      } catch (err) {
        rec.error = `${outcomeOf(err)}: ${(err as Error)?.message ?? err}`.slice(0, 300);
      }
      await sleep(PROBE_PAUSE_MS);
    }
  } finally {
    channelA.close();
    channelB.close();
  }
  return records;
}

/** Lag figures per phase of acknowledgement, and for all probes together. */
function summariseProbes(records: ProbeRecord[]) {
  const groups: [string, ProbeRecord[]][] = [...PHASES.map((p) => [p, records.filter((r) => r.phase === p)] as [string, ProbeRecord[]]), ["all", records]];
  return groups.map(([phase, rs]) => {
    const sorted = (xs: (number | undefined)[]) => xs.filter((x): x is number => x !== undefined).sort((a, b) => a - b);
    const upload = sorted(rs.map((r) => r.upload_ms));
    const visible = sorted(rs.map((r) => r.visible_ms));
    const gone = sorted(rs.map((r) => r.gone_ms));
    return {
      phase,
      probes: rs.length,
      upload_p50_ms: round(pct(upload, 50), 1),
      upload_p99_ms: round(pct(upload, 99), 1),
      visible_samples: visible.length,
      visible_p50_ms: round(pct(visible, 50), 1),
      visible_p99_ms: round(pct(visible, 99), 1),
      visible_max_ms: round(visible.length ? visible[visible.length - 1] : Number.NaN, 1),
      visible_timeouts: rs.filter((r) => r.visible_timeout).length,
      gone_samples: gone.length,
      gone_p50_ms: round(pct(gone, 50), 1),
      gone_p99_ms: round(pct(gone, 99), 1),
      gone_max_ms: round(gone.length ? gone[gone.length - 1] : Number.NaN, 1),
      gone_timeouts: rs.filter((r) => r.gone_timeout).length,
      failed: rs.filter((r) => r.error).length,
      search_errors: rs.reduce((a, r) => a + r.search_errors, 0),
    };
  });
}

/** How the restarted replica came back: from its log lines after the kill (all the new process's), and the polled readiness. */
async function restartFacts(victim: Replica, killedAt: number, restartedAt: number, readyAt: number) {
  const lines = (await victim.log()).filter((l) => Date.parse(String(l.time)) >= killedAt);
  const since = (line: LogRecord | undefined) => (line ? round((Date.parse(String(line.time)) - restartedAt) / 1000, 2) : null);
  const index = lines.find((l) => l.msg === "vector index loaded");
  return {
    ready_s: round((readyAt - restartedAt) / 1000, 2),
    first_log_s: since(lines[0]),
    listening_s: since(lines.find((l) => l.msg === "gRPC server listening")),
    index_loaded_s: since(index),
    index: index && { source: index.source, replayed: index.replayed, vectors: index.vectors, ms: index.ms, fromSeq: index.fromSeq },
    /** The new process's lines up to its index load, calls left out: what its start spent time on. */
    log: lines
      .slice(0, index ? lines.indexOf(index) + 1 : 40)
      .filter((l) => l.msg !== "call")
      .slice(0, 40)
      .map((l) => ({ ...l, s: since(l) })),
  };
}

/** Warning and error lines of every replica's log, counted by level and message. */
async function logCounts(replicas: Replica[]) {
  const out: { replica: string; message: string; count: number }[] = [];
  for (const r of replicas) {
    const counts = new Map<string, number>();
    for (const line of await r.log()) {
      if (line.level === "warn" || line.level === "error") counts.set(`${line.level}: ${line.msg}`, (counts.get(`${line.level}: ${line.msg}`) ?? 0) + 1);
    }
    for (const [message, count] of counts) out.push({ replica: r.name, message, count });
  }
  return out;
}
