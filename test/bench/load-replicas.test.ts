/**
 * The load harness's `replicas` mode keeps working: two replicas on a tiny data set, a few
 * seconds of load, one replica killed and restarted. No figure is asserted (they belong in
 * bench/results/), only that the report has its three phases, the restart's time to ready
 * and visibility-lag samples, and that nothing failed while every replica was up.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { reachable } from "../helpers/replicas.js";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, inject, it } from "vitest";

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, "../..");
const REDIS_URL = process.env.GLIMPSE_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

const redisUp = await reachable(REDIS_URL);
if (!redisUp) console.warn(`load-replicas test skipped: no Redis at ${REDIS_URL} (set GLIMPSE_TEST_REDIS_URL)`);

interface Phase {
  phase: string;
  window_s: number;
  calls: number;
  ok: number;
  errors: Record<string, number>;
}

describe.skipIf(!redisUp)("bench/load replicas", () => {
  let out = "";
  afterAll(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  it("kills and restarts one of two replicas under load and reports phases, restart time and lag", { timeout: 240_000 }, async () => {
    out = await mkdtemp(path.join(os.tmpdir(), "glimpse-load-replicas-test-"));
    const args = ["replicas", "--replicas", "2", "--images", "300", "--concurrency", "2", "--workers", "1", "--warmup", "0.5s"];
    args.push("--duration", "3s", "--kill-at", "1.5s", "--probe-timeout", "10s", "--redis", REDIS_URL, "--out", out);
    await run(process.execPath, ["--import", "tsx", "bench/load/main.ts", ...args], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: inject("adminDatabaseUrl") },
      maxBuffer: 64 * 2 ** 20,
      timeout: 220_000,
    });
    const files = (await readdir(out)).sort();
    expect(files.filter((f) => /^load-replicas-.*\.(json|md)$/.test(f))).toHaveLength(2);
    const json = JSON.parse(await readFile(path.join(out, files.find((f) => f.endsWith(".json"))!), "utf8")) as {
      phases: Phase[];
      killed: string;
      restart: { ready_s: number; index: { source: string } };
      lag: { phase: string; visible_samples: number; visible_timeouts: number }[];
      load_average_before: number[];
    };
    expect(json.phases.map((p) => p.phase)).toEqual(["before kill", "while down", "after restart"]);
    for (const p of json.phases) expect(p.window_s, p.phase).toBeGreaterThan(0);
    const [before, , after] = json.phases;
    expect(before.ok).toBeGreaterThan(0);
    expect(before.errors).toEqual({});
    expect(after.ok).toBeGreaterThan(0);
    expect(json.killed).toBe("r1");
    expect(json.restart.ready_s).toBeGreaterThan(0);
    expect(json.restart.index.source).toBe("snapshot");
    const all = json.lag.find((l) => l.phase === "all")!;
    expect(all.visible_samples).toBeGreaterThan(0);
    expect(json.load_average_before).toHaveLength(3);
  });
});
