import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccountServiceDefinition } from "../../src/gen/glimpse/account/v1/account_service.js";
import { Visibility } from "../../src/gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import type { TestAccount, TestApp } from "../helpers/app.js";
import { solidImage } from "../helpers/images.js";
import { startSearchTestApp } from "../helpers/search.js";

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `glimpse` command (through bin/glimpse.js, as installed) and collects its output. */
function glimpse(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["bin/glimpse.js", ...args], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c) => (stderr += c));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs the tasks three at a time (each is a Node process starting), in order of the results. */
async function inBatches<T>(tasks: (() => Promise<T>)[]): Promise<T[]> {
  const results: T[] = [];
  for (let i = 0; i < tasks.length; i += 3) results.push(...(await Promise.all(tasks.slice(i, i + 3).map((task) => task()))));
  return results;
}

/** Each test starts several Node processes; on a loaded machine each takes seconds. */
const SLOW = 240_000;

const RED = { r: 255, g: 0, b: 0 };
const BLUE = { r: 0, g: 0, b: 255 };
const GREEN = { r: 0, g: 255, b: 0 };

describe("glimpse CLI against a running server", { timeout: SLOW }, () => {
  let t: TestApp;
  let user: TestAccount;
  let work: string;
  let env: NodeJS.ProcessEnv;
  const tree = () => path.join(work, "photos");

  beforeAll(async () => {
    t = await startSearchTestApp();
    user = await t.newAccount({ credits: 10 });
    work = await mkdtemp(path.join(tmpdir(), "glimpse-cli-"));
    env = { GLIMPSE_ADDRESS: t.address, GLIMPSE_API_KEY: user.key, XDG_CACHE_HOME: path.join(work, "cache") };
    // photos/animals/dogs/red.png (+ sidecar), photos/animals/cats/blue.png, photos/green.png,
    // photos/animals/green-copy.png (the same bytes), photos/notes.txt, photos/broken.jpg.
    await mkdir(path.join(tree(), "animals", "dogs"), { recursive: true });
    await mkdir(path.join(tree(), "animals", "cats"), { recursive: true });
    await writeFile(path.join(tree(), "animals", "dogs", "red.png"), await solidImage(32, 32, RED, "png", 1));
    await writeFile(
      path.join(tree(), "animals", "dogs", "red.png.json"),
      JSON.stringify({ tags: ["favourite"], visibility: "public", meta: { camera: "test" } }),
    );
    await writeFile(path.join(tree(), "animals", "cats", "blue.png"), await solidImage(32, 32, BLUE, "png", 2));
    const green = await solidImage(32, 32, GREEN, "png", 3);
    await writeFile(path.join(tree(), "green.png"), green);
    await writeFile(path.join(tree(), "animals", "green-copy.png"), green);
    await writeFile(path.join(tree(), "notes.txt"), "not an image");
    await writeFile(path.join(tree(), "broken.jpg"), Buffer.from("this is not a JPEG at all"));
  });
  afterAll(async () => {
    await t?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function listMine() {
    const { images } = await t.client(ImageServiceDefinition, user.key).listImages({ pageSize: 100 });
    return images.filter((i) => i.owner === user.id);
  }

  it("ingests a folder tree: tags from folders and sidecars, duplicates and non-images skipped, refusals named", async () => {
    const run = await glimpse(["ingest", tree(), "--wait-for-index", "--concurrency", "2"], env);
    expect(run.code, run.stderr).toBe(1); // broken.jpg was refused
    expect(run.stdout).toMatch(/^ingested\s+3$/m);
    expect(run.stdout).toMatch(/^deduplicated\s+1$/m);
    expect(run.stdout).toMatch(/^refused\s+1$/m);
    expect(run.stdout).toMatch(/^\s+broken\.jpg: INVALID_ARGUMENT: content: /m);
    expect(run.stdout).toMatch(/^failed\s+0$/m);
    expect(run.stdout).toMatch(/^not images\s+1 skipped$/m);
    // Not a terminal: plain progress lines with counts, bytes and rate.
    expect(run.stderr).toMatch(/^ingest: 5\/5 files, [\d.]+ (B|KiB)\/[\d.]+ (B|KiB), /m);

    const images = await listMine();
    expect(images).toHaveLength(3);
    const byName = new Map(images.map((i) => [i.fileName, i]));
    const red = byName.get("red.png")!;
    expect(red.tags.sort()).toEqual(["animals", "dogs", "favourite"]);
    expect(red.visibility).toBe(Visibility.VISIBILITY_PUBLIC);
    expect(red.meta).toEqual({ camera: "test" });
    expect(byName.get("blue.png")!.tags.sort()).toEqual(["animals", "cats"]);
    expect(byName.get("blue.png")!.visibility).toBe(Visibility.VISIBILITY_PRIVATE);
    // One of green.png and animals/green-copy.png was stored, the other was its duplicate.
    const greens = images.filter((i) => i.fileName.startsWith("green"));
    expect(greens).toHaveLength(1);
  });

  it("run again, sends nothing that is stored; with the journal ignored, the request ids still store nothing twice", async () => {
    const again = await glimpse(["ingest", tree(), "--json"], env);
    expect(again.code, again.stderr).toBe(1);
    const summary = JSON.parse(again.stdout);
    expect(summary).toMatchObject({ ingested: 0, deduplicated: 0, storedBefore: 4, failed: [], bytesSent: 0 });
    expect(summary.refused).toHaveLength(1);

    const fresh = await glimpse(["ingest", tree(), "--json", "--fresh"], env);
    const resent = JSON.parse(fresh.stdout);
    expect(resent.ingested).toBe(0);
    expect(resent.storedBefore + resent.deduplicated).toBe(4);
    expect(await listMine()).toHaveLength(3);
  });

  it("interrupted, continues where it stopped when run again", async () => {
    const other = await t.newAccount();
    const otherEnv = { ...env, GLIMPSE_API_KEY: other.key };
    const dir = path.join(work, "many");
    await mkdir(dir, { recursive: true });
    for (let i = 0; i < 10; i++) await writeFile(path.join(dir, `img-${i}.png`), await solidImage(48, 48, { r: 20 * i, g: 100, b: 50 }, "png", 100 + i));

    const child = spawn(process.execPath, ["bin/glimpse.js", "ingest", dir, "--concurrency", "1", "--json"], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...otherEnv },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (c) => (stdout += c));
    // Interrupted as soon as the first file is done (the first progress line).
    child.stderr.setEncoding("utf8").on("data", function onData(c: string) {
      if (c.includes("ingest: ")) {
        child.stderr.off("data", onData);
        child.kill("SIGINT");
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(code).toBe(130);
    const first = JSON.parse(stdout);
    expect(first.ingested).toBeGreaterThanOrEqual(1);
    expect(first.ingested).toBeLessThan(10);
    expect(first.notAttempted).toBeGreaterThan(0);

    const rerun = await glimpse(["ingest", dir, "--json"], otherEnv);
    expect(rerun.code, rerun.stderr).toBe(0);
    const second = JSON.parse(rerun.stdout);
    // What the first run stored is not sent again (an upload cut off in flight may have been
    // stored all the same: its request id answers with that image).
    expect(second.storedBefore).toBeGreaterThanOrEqual(first.ingested);
    expect(second.ingested + second.storedBefore).toBe(10);
    const { images } = await t.client(ImageServiceDefinition, other.key).listImages({ pageSize: 100 });
    expect(images.filter((i) => i.owner === other.id)).toHaveLength(10);
  });

  it("searches by prompt and by likeness: a ranked table and JSON", async () => {
    const table = await glimpse(["search", "red", "--limit", "3"], env);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trim().split("\n");
    expect(lines[0].split(/\s+/)).toEqual(["RANK", "ID", "SCORE", "TAGS", "URL"]);
    const red = (await listMine()).find((i) => i.fileName === "red.png")!;
    expect(lines[1].split(/\s+/).slice(0, 2)).toEqual(["1", red.id]);
    expect(lines[1]).toContain("animals,dogs,favourite");
    expect(lines[1]).toContain(`/v1/images/${red.id}/content`);

    const json = await glimpse(["search", "blue", "--json", "--tag", "animals"], env);
    expect(json.code, json.stderr).toBe(0);
    const results = JSON.parse(json.stdout) as { id: string; score: number; tags: string[] }[];
    expect(results.every((r) => r.tags.includes("animals"))).toBe(true);
    expect(results[0].tags).toContain("cats");

    const like = await glimpse(["search", "--like", path.join(tree(), "animals", "dogs", "red.png"), "--json", "--threshold", "0.9"], env);
    expect(like.code, like.stderr).toBe(0);
    expect((JSON.parse(like.stdout) as { id: string }[]).map((r) => r.id)).toEqual([red.id]);
  });

  it("generates an image into --out and says what it cost and what is left", async () => {
    const out = path.join(work, "generated.png");
    const run = await glimpse(["generate", "a red square", "--model", "local:gradient", "--aspect", "16:9", "--out", out], env);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/credits charged 1, left 9/);
    const meta = await sharp(await readFile(out)).metadata();
    expect(meta.width! / meta.height!).toBeCloseTo(16 / 9, 1);
  });

  it("lists, shows and deletes images, and lists keys", async () => {
    const list = await glimpse(["images", "list", "--tag", "dogs"], env);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/red\.png\s+animals,dogs,favourite/);
    const red = (await listMine()).find((i) => i.fileName === "red.png")!;
    const out = path.join(work, "red-copy.png");
    const get = await glimpse(["images", "get", red.id, "--out", out], env);
    expect(get.code, get.stderr).toBe(0);
    expect(get.stdout).toMatch(/^meta\s+\{"camera":"test"\}$/m);
    expect(await readFile(out)).toEqual(await readFile(path.join(tree(), "animals", "dogs", "red.png")));

    const blue = (await listMine()).find((i) => i.fileName === "blue.png")!;
    const removed = await glimpse(["images", "rm", blue.id], env);
    expect(removed.code, removed.stderr).toBe(0);
    const gone = await glimpse(["images", "get", blue.id], env);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/NOT_FOUND/);
    expect(gone.stderr.split("\n").filter(Boolean)).toHaveLength(1);

    const { apiKeys } = await t.client(AccountServiceDefinition, user.key).listApiKeys({});
    const keys = await glimpse(["keys", "list"], env);
    expect(keys.code, keys.stderr).toBe(0);
    expect(keys.stdout).toContain(apiKeys[0].id);
  });

  it("answers usage errors with status 2 and the command's usage, failures with 1", async () => {
    const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
      [["search"], env, /give a prompt or --like/],
      [["search", "red", "--limit", "0"], env, /--limit must be between 1 and 250/],
      [["search", "red", "--bogus"], env, /unknown flag --bogus/],
      [["ingest", path.join(work, "missing")], env, /is not a directory/],
      [["generate", "x"], env, /--model is required/],
      [["images", "frobnicate"], env, /unknown images command/],
      [["nope"], env, /unknown command "nope"/],
      [["search", "red"], { GLIMPSE_ADDRESS: t.address }, /an API key is needed: pass --key or set GLIMPSE_API_KEY/],
    ];
    const runs = await inBatches(cases.map(([args, e]) => () => glimpse(args, e)));
    runs.forEach((run, i) => {
      expect(run.code, `${cases[i][0].join(" ")}: ${run.stderr}`).toBe(2);
      expect(run.stderr).toMatch(cases[i][2]);
      expect(run.stderr).toContain("usage: glimpse");
    });
    const refused = await glimpse(["search", "red", "--key", "glk_not-a-real-key-at-all-000000"], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^glimpse search: UNAUTHENTICATED: /);
    expect(refused.stderr).not.toMatch(/\n\s+at /);
  });
});

describe("glimpse --help, --version and config", { timeout: SLOW }, () => {
  it("takes --help on every command and prints the version", async () => {
    const commands = [
      ["serve"], ["config"], ["model"], ["model", "pull"], ["keys"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"],
      ["ingest"], ["search"], ["generate"], ["images"], ["images", "list"], ["images", "get"], ["images", "rm"],
    ];
    const runs = await inBatches(commands.map((c) => () => glimpse([...c, "--help"])));
    runs.forEach((run, i) => {
      expect(run.code, `${commands[i].join(" ")} --help: ${run.stderr}`).toBe(0);
      expect(run.stdout).toMatch(/^usage: glimpse /);
    });
    const { version } = JSON.parse(await readFile("package.json", "utf8"));
    const v = await glimpse(["--version"]);
    expect(v.code).toBe(0);
    expect(v.stdout).toBe(`glimpse ${version}\n`);
  });

  it("config shows each option's value in effect and where it came from", async () => {
    const run = await glimpse(["config", "--grpc-port", "6000", "--json"], {
      GLIMPSE_HTTP_PORT: "9999",
      GLIMPSE_ADMIN_KEY: "glk_a-secret-that-must-not-be-printed",
    });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).not.toContain("a-secret-that-must-not-be-printed");
    const rows = new Map((JSON.parse(run.stdout) as { env: string; value: string; source: string }[]).map((r) => [r.env, r]));
    expect(rows.get("GLIMPSE_GRPC_PORT")).toMatchObject({ value: "6000", source: "flag" });
    expect(rows.get("GLIMPSE_HTTP_PORT")).toMatchObject({ value: "9999", source: "environment" });
    expect(rows.get("GLIMPSE_PUBLIC_URL")).toMatchObject({ value: "http://127.0.0.1:9999", source: "default" });
    expect(rows.get("GLIMPSE_LOG_LEVEL")).toMatchObject({ value: "info", source: "default" });
    expect(rows.get("GLIMPSE_ADMIN_KEY")).toMatchObject({ value: "(set)", source: "environment" });

    const table = await glimpse(["config"], { GLIMPSE_LOG_LEVEL: "warn" });
    expect(table.stdout).toMatch(/^GLIMPSE_LOG_LEVEL\s+warn\s+environment$/m);
    const bad = await glimpse(["config"], { GLIMPSE_GRPC_PORT: "many" });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("GLIMPSE_GRPC_PORT must be an integer");
  });
});
