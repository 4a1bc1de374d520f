import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer, Socket } from "node:net";
import path from "node:path";
import { freePort as kernelPort } from "../../src/store/embedded.js";

/** The repository root, where `src/cli/main.ts` lives. */
const ROOT = path.resolve(import.meta.dirname, "../..");

/** Lowest port the kernel hands to outbound connections and to listen(0) (Linux's ip_local_port_range). */
function ephemeralLow(): number {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

const PORTS_FROM = 20_000;
const handedOut = new Set<number>();

/** Whether a listener can bind the loopback port now. */
function bindable(port: number): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/**
 * A loopback port that was free a moment ago, for a replica to bind (and bind again when it
 * restarts). Taken below the kernel's ephemeral range: a port there (what listen(0) gives) can
 * meanwhile become the local end of any outbound connection a test running beside this one
 * opens, and the replica then exits with its port in use. Nothing takes a port below the range
 * unless it asks for that port.
 */
export async function freePort(): Promise<number> {
  const below = ephemeralLow();
  for (let tries = 0; below - PORTS_FROM > 1000 && tries < 100; tries++) {
    const port = PORTS_FROM + Math.floor(Math.random() * (below - PORTS_FROM));
    if (handedOut.has(port) || !(await bindable(port))) continue;
    handedOut.add(port);
    return port;
  }
  // A range that leaves no room below it: what listen(0) gives.
  return kernelPort();
}

/** One parsed line of a replica's JSON log. */
export type LogRecord = Record<string, unknown> & { msg: string; level: string };

/**
 * One glimpse replica run as its own process, exactly as an operator runs it
 * (`node --import tsx src/cli/main.ts serve`), configured through the environment. Its log
 * (stdout and stderr) is appended to `<dataDir>/replica.log` by the operating system, so a
 * replica killed with SIGKILL still leaves every line it wrote.
 */
export class Replica {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** Number of times the process was started. */
  starts = 0;

  constructor(
    readonly name: string,
    readonly grpcPort: number,
    readonly httpPort: number,
    readonly dataDir: string,
    private readonly env: Record<string, string>,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.grpcPort}`;
  }

  get httpUrl(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  get logFile(): string {
    return path.join(this.dataDir, "replica.log");
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts the process (it is not ready yet; see {@link waitReady}). */
  start(): void {
    if (this.running) throw new Error(`${this.name} is already running`);
    this.starts++;
    const log = openSync(this.logFile, "a");
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "serve"], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "",
        ...this.env,
        GLIMPSE_DATA_DIR: this.dataDir,
        GLIMPSE_GRPC_HOST: "127.0.0.1",
        GLIMPSE_GRPC_PORT: String(this.grpcPort),
        GLIMPSE_HTTP_PORT: String(this.httpPort),
      },
      stdio: ["ignore", log, log],
    });
    closeSync(log);
    this.child = child;
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
  }

  /** Waits until /readyz answers 200 and the search index has loaded; fails early if the process exits. */
  async waitReady(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    const start = this.starts;
    for (;;) {
      if (!this.running) throw new Error(`${this.name} exited while starting:\n${await this.logTail()}`);
      const ready = await fetch(`${this.httpUrl}/readyz`, { signal: AbortSignal.timeout(5000) }).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ready && (await this.indexLoads()).length >= start) return;
      if (Date.now() > until) throw new Error(`${this.name} not ready after ${timeoutMs} ms:\n${await this.logTail()}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  /** Kills the process with `signal` and waits for it to be gone. */
  async kill(signal: NodeJS.Signals): Promise<void> {
    if (!this.running) return;
    this.child!.kill(signal);
    await this.exited;
  }

  /** Stops the process gracefully (SIGTERM), killing it if it does not exit in time. */
  async stop(timeoutMs = 15_000): Promise<void> {
    if (!this.running) return;
    this.child!.kill("SIGTERM");
    const timer = setTimeout(() => this.child?.kill("SIGKILL"), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Every JSON line of the log so far (lines that are not JSON are skipped). */
  async log(): Promise<LogRecord[]> {
    const text = await readFile(this.logFile, "utf8").catch(() => "");
    const records: LogRecord[] = [];
    for (const line of text.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        records.push(JSON.parse(line) as LogRecord);
      } catch {
        // a line cut short by SIGKILL
      }
    }
    return records;
  }

  /** The "vector index loaded" lines, one per start that got that far, oldest first. */
  async indexLoads(): Promise<LogRecord[]> {
    return (await this.log()).filter((r) => r.msg === "vector index loaded");
  }

  /** A Prometheus counter or sum from /metrics (summed over label sets); 0 when absent. */
  async metric(name: string): Promise<number> {
    const text = await (await fetch(`${this.httpUrl}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
    let total = 0;
    for (const line of text.split("\n")) {
      if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) total += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
    return total;
  }

  private async logTail(): Promise<string> {
    const text = await readFile(this.logFile, "utf8").catch(() => "");
    return text.split("\n").slice(-30).join("\n");
  }
}

/** Whether something accepts connections at a URL's host and port (Redis's 6379 when none is given). */
export async function reachable(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = new Socket();
    socket.setTimeout(2000);
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
    socket.once("timeout", () => (socket.destroy(), resolve(false)));
    socket.connect(Number(port || 6379), hostname);
  });
}
