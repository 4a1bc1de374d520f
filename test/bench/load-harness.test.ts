/**
 * The load harness keeps working: it seeds a tiny data set, starts glimpse as a child process,
 * drives every scenario over gRPC and over the HTTP bridge from a worker process for a couple
 * of seconds each, and writes its results; then a two-probe sweep. No figure is asserted (load
 * figures belong in bench/results/), only that every call answered OK and the files exist.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, inject, it } from "vitest";
import { SCENARIOS } from "../../bench/load/scenarios.js";

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, "../..");

interface Row {
  scenario: string;
  target: string;
  summary: { requests: number; ok: number; errors: Record<string, number>; dropped: number };
}

describe("bench/load", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  async function harness(args: string[]): Promise<{ json: Record<string, unknown>; files: string[] }> {
    const out = await mkdtemp(path.join(os.tmpdir(), "glimpse-load-test-"));
    dirs.push(out);
    await run(process.execPath, ["--import", "tsx", "bench/load/main.ts", ...args, "--images", "200", "--workers", "1", "--out", out], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: inject("adminDatabaseUrl") },
      maxBuffer: 64 * 2 ** 20,
      timeout: 280_000,
    });
    const files = (await readdir(out)).sort();
    const json = JSON.parse(await readFile(path.join(out, files.find((f) => f.endsWith(".json"))!), "utf8")) as Record<string, unknown>;
    return { json, files };
  }

  it("runs every scenario over gRPC and HTTP with no failed call and writes its results", { timeout: 300_000 }, async () => {
    const { json, files } = await harness(["run", "--scenario", "all", "--target", "grpc,http", "--concurrency", "2", "--duration", "2s", "--warmup", "0.5s"]);
    expect(files.some((f) => /^load-run-.*\.json$/.test(f))).toBe(true);
    expect(files.some((f) => /^load-run-.*\.md$/.test(f))).toBe(true);
    const rows = json.rows as Row[];
    const expected = Object.entries(SCENARIOS).flatMap(([name, def]) => {
      const shown = name.endsWith("-tag") ? `${name}:0.01` : name;
      return def.http ? [`${shown} grpc`, `${shown} http`] : [`${shown} grpc`];
    });
    expect(rows.map((r) => `${r.scenario} ${r.target}`).sort()).toEqual(expected.sort());
    for (const r of rows) {
      expect({ row: `${r.scenario} ${r.target}`, errors: r.summary.errors }).toEqual({ row: `${r.scenario} ${r.target}`, errors: {} });
      expect(r.summary.ok, `${r.scenario} ${r.target}: calls answered`).toBeGreaterThan(0);
    }
  });

  it("sweeps open-loop rates and reports the highest held under the p99 bound", { timeout: 120_000 }, async () => {
    // A generous bound: the point is the sweep's mechanics, not this machine's speed.
    const { json } = await harness(["sweep", "--scenario", "get-image", "--target", "grpc", "--start-rate", "10/s", "--probes", "2", "--p99", "2000ms", "--duration", "1s", "--warmup", "0.2s"]);
    const [result] = json.results as { probes: { rate: number }[]; stopped: string }[];
    expect(result.probes.map((p) => p.rate)).toEqual([10, 20]);
    expect(result.stopped).toMatch(/probe count bound/);
  });
});
