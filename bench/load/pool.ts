/**
 * The load harness's worker processes (bench/load/worker.ts, forked with an IPC channel): each
 * run is split between them (callers or rate) and their replies come back together.
 */
import { fork, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { REPO_ROOT, type Cleanup } from "../lib.js";
import type { RunReply, RunRequest } from "./worker.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Forked load workers; one run at a time. */
export class WorkerPool {
  private readonly children: ChildProcess[] = [];
  private runId = 0;
  private running: { runId: number; used: ChildProcess[] } | undefined;

  /** Forks `count` workers; `cleanup` stops them. */
  static async start(count: number, cleanup: Cleanup): Promise<WorkerPool> {
    const pool = new WorkerPool();
    cleanup.add("stop load workers", async () => pool.stop());
    await Promise.all(
      Array.from({ length: count }, async () => {
        const child = fork(path.join(HERE, "worker.ts"), [], {
          cwd: REPO_ROOT,
          execArgv: ["--import", "tsx"],
          serialization: "advanced",
          stdio: ["ignore", "inherit", "inherit", "ipc"],
        });
        pool.children.push(child);
        await new Promise<void>((resolve, reject) => {
          child.once("message", () => resolve());
          child.once("exit", (code) => reject(new Error(`load worker exited (${code}) before starting`)));
        });
      }),
    );
    return pool;
  }

  /** Number of worker processes. */
  get size() {
    return this.children.length;
  }

  /** Sends one run to every worker (each its share of callers or rate) and merges the replies. */
  async run(base: Omit<RunRequest, "type" | "runId" | "concurrency" | "rate" | "phaseMs" | "maxRequests">, total: { concurrency?: number; rate?: number; maxRequests: number }) {
    const runId = ++this.runId;
    // Never more workers than callers.
    const used = total.concurrency !== undefined ? this.children.slice(0, Math.min(this.children.length, total.concurrency)) : this.children;
    this.running = { runId, used };
    const replies = await Promise.all(
      used.map(
        (child, w) =>
          new Promise<RunReply>((resolve, reject) => {
            const onMessage = (msg: RunReply) => {
              if (msg.type !== "result" || msg.runId !== runId) return;
              child.off("message", onMessage);
              child.off("exit", onExit);
              resolve(msg);
            };
            const onExit = (code: number | null) => reject(new Error(`load worker exited (${code}) during a run`));
            child.on("message", onMessage);
            child.once("exit", onExit);
            const share = (n: number) => Math.floor(n / used.length) + (w < n % used.length ? 1 : 0);
            const interval = total.rate ? 1000 / (total.rate / used.length) : 0;
            child.send({
              ...base,
              type: "run",
              runId,
              concurrency: total.concurrency !== undefined ? share(total.concurrency) : 0,
              rate: total.rate ? total.rate / used.length : 0,
              phaseMs: (interval * w) / used.length,
              maxRequests: Math.max(1, share(total.maxRequests)),
            } satisfies RunRequest);
          }),
      ),
    );
    const failed = replies.find((r) => r.error);
    if (failed) throw new Error(`load worker failed: ${failed.error}`);
    return replies;
  }

  /** Ends the run in progress now (its calls still out get their timeout); run() then resolves. */
  end() {
    if (!this.running) return;
    for (const child of this.running.used) if (child.connected) child.send({ type: "end", runId: this.running.runId });
  }

  /** Tells every worker to exit. */
  stop() {
    for (const child of this.children) if (child.connected) child.send({ type: "exit" });
    for (const child of this.children) if (child.exitCode === null) child.kill("SIGTERM");
  }
}
