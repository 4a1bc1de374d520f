/**
 * A glimpse server for the load harness, run as a child process of bench/load/main.ts (forked,
 * with an IPC channel): it starts the app of the build at --root (this tree or a base commit's
 * worktree) exactly as `glimpse serve` does, except for two options the environment cannot set
 * (a rate limit above 100,000/min, so the limiter never answers for the server) and a silent
 * log. Sends {type: "ready", grpcPort, httpPort, ...} once search is ready; stops on SIGTERM,
 * SIGINT or when the parent goes away.
 *
 * On {type: "profile-start"} it starts V8's CPU profiler (what `node --cpu-prof` runs, but only
 * over the measured calls, not the start and index build); on {type: "profile-stop", path} it
 * writes the .cpuprofile there and answers {type: "profile-written", path}.
 *
 *   node --import tsx bench/load/server.ts --root DIR --database-url URL --data-dir DIR --model DIR --admin-key KEY [--env GLIMPSE_X=v ...]
 */
import { writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    root: { type: "string" },
    "database-url": { type: "string" },
    "data-dir": { type: "string" },
    model: { type: "string" },
    "admin-key": { type: "string" },
    "grpc-port": { type: "string", default: "0" },
    "http-port": { type: "string", default: "0" },
    // Not warn: slow-call lines under deliberate overload would drown the harness's output.
    "log-level": { type: "string", default: "error" },
    // GLIMPSE_* settings for this server (KEY=VALUE, repeatable): what `glimpse serve` would read
    // from its environment. The harness's own environment is not passed on.
    env: { type: "string", multiple: true, default: [] },
  },
});

const env: Record<string, string> = {};
for (const pair of values.env ?? []) {
  const eq = pair.indexOf("=");
  if (!pair.startsWith("GLIMPSE_") || eq < 0) throw new Error(`--env takes GLIMPSE_NAME=value, not ${pair}`);
  env[pair.slice(0, eq)] = pair.slice(eq + 1);
}

const root = path.resolve(values.root ?? ".");
const load = (rel: string) => import(pathToFileURL(path.join(root, rel)).href);
const send = (msg: unknown) => process.send?.(msg);

interface App {
  grpcPort: number;
  httpPort: number;
  searchReady?: Promise<void>;
  stop(): Promise<void>;
}

let app: App | undefined;
let stopping = false;
async function stop(code: number) {
  if (stopping) return;
  stopping = true;
  try {
    await app?.stop();
  } finally {
    process.exit(code);
  }
}
process.on("SIGTERM", () => void stop(0));
process.on("SIGINT", () => void stop(0));
process.on("disconnect", () => void stop(0));

let profiler: Session | undefined;
process.on("message", (msg: { type: string; path?: string }) => {
  void (async () => {
    if (msg.type === "profile-start" && !profiler) {
      profiler = new Session();
      profiler.connect();
      await profiler.post("Profiler.enable");
      // 250 us between samples (the default is 1 ms): calls here take about a millisecond.
      await profiler.post("Profiler.setSamplingInterval", { interval: 250 });
      await profiler.post("Profiler.start");
      send({ type: "profile-started" });
    } else if (msg.type === "profile-stop" && profiler && msg.path) {
      const { profile } = await profiler.post("Profiler.stop");
      profiler.disconnect();
      profiler = undefined;
      await writeFile(msg.path, JSON.stringify(profile));
      send({ type: "profile-written", path: msg.path });
    }
  })().catch((err) => send({ type: "profile-error", message: String(err) }));
});

try {
  const { startApp } = await load("src/app.ts");
  const { loadOptions } = await load("src/config/options.ts");
  const { createLogger } = await load("src/logging/logger.ts");
  const started = Date.now();
  const options = loadOptions(env, [], {
    dataDir: values["data-dir"],
    databaseUrl: values["database-url"],
    grpcHost: "127.0.0.1",
    grpcPort: Number(values["grpc-port"]),
    httpPort: Number(values["http-port"]),
    logLevel: values["log-level"],
    shutdownGraceMs: 2000,
    model: values.model,
    modelAutoPull: false,
    adminKey: values["admin-key"],
    // Load measures the service, not the limiter (the environment caps this at 100,000/min).
    rateLimitPerMinute: 10_000_000,
  });
  app = (await startApp(options, { logger: createLogger(values["log-level"]) })) as App;
  const servingMs = Date.now() - started;
  await app.searchReady;
  send({
    type: "ready",
    pid: process.pid,
    grpcPort: app.grpcPort,
    httpPort: app.httpPort,
    serving_s: servingMs / 1000,
    search_ready_s: (Date.now() - started) / 1000,
    rss_mib: Math.round(process.memoryUsage().rss / 2 ** 20),
  });
} catch (err) {
  send({ type: "error", message: String((err as Error)?.stack ?? err) });
  await stop(1);
}
