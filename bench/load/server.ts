/**
 * A glimpse server for the load harness, run as a child process of bench/load/main.ts (forked,
 * with an IPC channel): it starts the app of the build at --root (this tree or a base commit's
 * worktree) exactly as `glimpse serve` does, except for two options the environment cannot set
 * (a rate limit above 100,000/min, so the limiter never answers for the server) and a silent
 * log. Sends {type: "ready", grpcPort, httpPort, ...} once search is ready; stops on SIGTERM,
 * SIGINT or when the parent goes away.
 *
 *   node --import tsx bench/load/server.ts --root DIR --database-url URL --data-dir DIR --model DIR --admin-key KEY
 */
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
    "log-level": { type: "string", default: "warn" },
  },
});

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

try {
  const { startApp } = await load("src/app.ts");
  const { loadOptions } = await load("src/config/options.ts");
  const { createLogger } = await load("src/logging/logger.ts");
  const started = Date.now();
  const options = loadOptions({}, [], {
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
