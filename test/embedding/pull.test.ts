import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runModelCommand, type CommandOutput } from "../../src/cli/model.js";
import { ConfigError, loadOptions } from "../../src/config/options.js";
import { isModelInstalled, MANIFEST_FILE, modelDirectory, pullModel, type PullProgress } from "../../src/embedding/pull.js";
import { findModel, MODELS, modelFileUrl, type ModelEntry } from "../../src/embedding/registry.js";
import { DomainError } from "../../src/errors.js";
import { createLogger } from "../../src/logging/logger.js";
import { testLogger } from "../helpers/log.js";

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** Deterministic bytes that do not repeat, so an offset mistake changes the hash. */
function fixtureBytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

const VOCAB = Buffer.from(JSON.stringify({ "a</w>": 0, "b</w>": 1, "<|startoftext|>": 2, "<|endoftext|>": 3 }));
const WEIGHTS = fixtureBytes(300_000, 7);
const REPO = "Xenova/tiny-test-clip";

/** A registry entry for the fixture files, as the real registry would describe them. */
function tinyEntry(overrides: Partial<ModelEntry> = {}): ModelEntry {
  return {
    id: "tiny-test-clip",
    description: "test fixture",
    repository: REPO,
    revision: "main",
    dimension: 8,
    files: [
      { name: "vocab.json", source: "vocab.json", sha256: sha256(VOCAB), bytes: VOCAB.length },
      { name: "vision_model.onnx", source: "onnx/vision_model.onnx", sha256: sha256(WEIGHTS) },
    ],
    ...overrides,
  };
}

interface Seen {
  path: string;
  range: string | undefined;
}

/** How the fixture host misbehaves, per source path; each rule applies to the first request only unless noted. */
interface Faults {
  /** Send the headers of the whole file and this many bytes, then hold the response until `cut()`. */
  cutAfter?: Record<string, number>;
  /** Answer this status (with Retry-After: 0) instead. */
  status?: Record<string, number>;
  /** Send this many bytes, then hold the connection open without sending more (every request). */
  stallAfter?: Record<string, number>;
  /** Ignore Range headers (every request). */
  ignoreRange?: boolean;
}

/** A model host on 127.0.0.1:0 serving `/<repo>/resolve/main/<source>` with Range support. */
class FixtureHost {
  readonly seen: Seen[] = [];
  faults: Faults = {};
  private readonly files = new Map<string, Buffer>([
    ["vocab.json", VOCAB],
    ["onnx/vision_model.onnx", WEIGHTS],
  ]);
  private readonly used = new Set<string>();
  private held: ServerResponse[] = [];
  private server!: Server;
  baseUrl = "";

  async start(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.baseUrl = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  /** Destroys the connections of responses held by `cutAfter`: the transfer breaks off mid-file. */
  cut(): void {
    for (const res of this.held.splice(0)) res.socket?.destroy();
  }

  requestsFor(source: string): Seen[] {
    return this.seen.filter((s) => s.path === source);
  }

  private once(kind: string, source: string): boolean {
    const key = `${kind}:${source}`;
    if (this.used.has(key)) return false;
    this.used.add(key);
    return true;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const prefix = `/${REPO}/resolve/main/`;
    const source = (req.url ?? "").startsWith(prefix) ? req.url!.slice(prefix.length) : "";
    this.seen.push({ path: source, range: req.headers.range });
    const body = this.files.get(source);
    if (!body) {
      res.writeHead(404).end("not found");
      return;
    }
    const status = this.faults.status?.[source];
    if (status !== undefined && this.once("status", source)) {
      res.writeHead(status, { "retry-after": "0" }).end("try later");
      return;
    }
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    if (range && !this.faults.ignoreRange) {
      start = Number(range[1]);
      if (start >= body.length) {
        res.writeHead(416, { "content-range": `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, {
        "content-length": body.length - start,
        "content-range": `bytes ${start}-${body.length - 1}/${body.length}`,
      });
    } else {
      res.writeHead(200, { "content-length": body.length });
    }
    const cut = this.faults.cutAfter?.[source];
    if (cut !== undefined && this.once("cut", source)) {
      res.write(body.subarray(start, start + cut));
      this.held.push(res);
      return;
    }
    const stall = this.faults.stallAfter?.[source];
    if (stall !== undefined) {
      res.write(body.subarray(start, start + stall));
      return;
    }
    res.end(body.subarray(start));
  }
}

let host: FixtureHost;
let cacheDir: string;

beforeEach(async () => {
  host = new FixtureHost();
  await host.start();
  cacheDir = await mkdtemp(path.join(tmpdir(), "glimpse-models-"));
});

afterEach(async () => {
  await host.stop();
  await rm(cacheDir, { recursive: true, force: true });
});

/**
 * Pulls from the fixture host. A transfer held by `cutAfter` is cut once the client reports
 * (after writing them) all the bytes it was sent, so the break lands at a known offset.
 */
function pull(entry: ModelEntry, extra: Partial<Parameters<typeof pullModel>[1]> = {}) {
  return pullModel(entry, {
    cacheDir,
    baseUrl: host.baseUrl,
    logger: testLogger(),
    ...extra,
    onProgress: (p) => {
      const source = entry.files.find((f) => f.name === p.file)?.source ?? "";
      const cut = host.faults.cutAfter?.[source];
      if (cut !== undefined && p.receivedBytes === cut && !p.done) host.cut();
      extra.onProgress?.(p);
    },
  });
}

async function failure(promise: Promise<unknown>): Promise<DomainError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DomainError);
  return err as DomainError;
}

const partOf = (entry: ModelEntry, name: string) => path.join(cacheDir, ".partial", entry.id, `${name}.part`);

async function expectInstalled(entry: ModelEntry): Promise<void> {
  const dir = modelDirectory(cacheDir, entry.id);
  expect(await readFile(path.join(dir, "vocab.json"))).toEqual(VOCAB);
  expect(sha256(await readFile(path.join(dir, "vision_model.onnx")))).toBe(sha256(WEIGHTS));
  expect(await isModelInstalled(cacheDir, entry)).toBe(true);
}

describe("pullModel", () => {
  it("downloads every file, verifies it and installs the model with its manifest", async () => {
    const entry = tinyEntry();
    const events: PullProgress[] = [];
    expect(await isModelInstalled(cacheDir, entry)).toBe(false);

    const dir = await pull(entry, { onProgress: (p) => events.push(p) });

    expect(dir).toBe(path.join(cacheDir, "tiny-test-clip"));
    await expectInstalled(entry);
    const manifest = JSON.parse(await readFile(path.join(dir, MANIFEST_FILE), "utf8"));
    expect(manifest).toEqual({
      id: "tiny-test-clip",
      dimension: 8,
      files: [
        { name: "vocab.json", sha256: sha256(VOCAB), bytes: VOCAB.length },
        { name: "vision_model.onnx", sha256: sha256(WEIGHTS), bytes: WEIGHTS.length },
      ],
    });
    expect((await readdir(dir)).sort()).toEqual([MANIFEST_FILE, "vision_model.onnx", "vocab.json"]);
    // Nothing half-done is left beside it.
    expect((await readdir(cacheDir)).filter((n) => n.startsWith(".tmp-") || n.startsWith(".stale-"))).toEqual([]);
    expect(existsSync(path.join(cacheDir, ".partial", entry.id))).toBe(false);
    expect(existsSync(path.join(cacheDir, ".partial", `${entry.id}.lock`))).toBe(false);

    const finals = events.filter((e) => e.done);
    expect(finals).toEqual([
      { file: "vocab.json", receivedBytes: VOCAB.length, totalBytes: VOCAB.length, done: true },
      { file: "vision_model.onnx", receivedBytes: WEIGHTS.length, totalBytes: WEIGHTS.length, done: true },
    ]);
    const weights = events.filter((e) => e.file === "vision_model.onnx" && !e.done);
    expect(weights.at(-1)).toMatchObject({ receivedBytes: WEIGHTS.length, totalBytes: WEIGHTS.length });
  });

  it("does nothing, without a request, when the model is already installed", async () => {
    const entry = tinyEntry();
    await pull(entry);
    const requests = host.seen.length;

    expect(await pull(entry)).toBe(modelDirectory(cacheDir, entry.id));
    expect(host.seen.length).toBe(requests);
  });

  it("refuses a file whose sha256 does not match, naming it and both hashes, and installs nothing", async () => {
    const wrong = "0".repeat(64);
    const entry = tinyEntry();
    entry.files[1] = { ...entry.files[1], sha256: wrong };

    const err = await failure(pull(entry));

    expect(err.code).toBe("FAILED_PRECONDITION");
    expect(err.message).toContain("vision_model.onnx");
    expect(err.message).toContain(`expected sha256 ${wrong}`);
    expect(err.message).toContain(`got ${sha256(WEIGHTS)}`);
    expect(existsSync(modelDirectory(cacheDir, entry.id))).toBe(false);
    expect(await isModelInstalled(cacheDir, entry)).toBe(false);
    expect(existsSync(partOf(entry, "vision_model.onnx"))).toBe(false);
    // One download, no retry loop.
    expect(host.requestsFor("onnx/vision_model.onnx")).toHaveLength(1);
  });

  it("resumes a transfer cut off mid-file with a Range request", async () => {
    host.faults.cutAfter = { "onnx/vision_model.onnx": 100_000 };
    const entry = tinyEntry();

    await pull(entry);

    const requests = host.requestsFor("onnx/vision_model.onnx");
    expect(requests.map((r) => r.range)).toEqual([undefined, "bytes=100000-"]);
    await expectInstalled(entry);
  });

  it("keeps an interrupted download for a later pull to resume", async () => {
    host.faults.cutAfter = { "onnx/vision_model.onnx": 120_000 };
    const entry = tinyEntry();

    const err = await failure(pull(entry, { retries: 0 }));
    expect(err.code).toBe("UNAVAILABLE");
    expect(err.message).toContain("vision_model.onnx");
    expect((await stat(partOf(entry, "vision_model.onnx"))).size).toBe(120_000);
    expect(await isModelInstalled(cacheDir, entry)).toBe(false);

    await pull(entry);

    expect(host.requestsFor("onnx/vision_model.onnx").map((r) => r.range)).toEqual([undefined, "bytes=120000-"]);
    // The finished small file was kept, not fetched again.
    expect(host.requestsFor("vocab.json")).toHaveLength(1);
    await expectInstalled(entry);
  });

  it("starts a file over when the server ignores the Range header", async () => {
    host.faults.cutAfter = { "onnx/vision_model.onnx": 50_000 };
    host.faults.ignoreRange = true;
    const entry = tinyEntry();

    await pull(entry);

    expect(host.requestsFor("onnx/vision_model.onnx").map((r) => r.range)).toEqual([undefined, "bytes=50000-"]);
    // Appending the full answer to the part would have failed the checksum.
    await expectInstalled(entry);
  });

  it("treats 416 to a resume request as a complete part and verifies it", async () => {
    const entry = tinyEntry();
    await mkdir(path.dirname(partOf(entry, "vision_model.onnx")), { recursive: true });
    await writeFile(partOf(entry, "vision_model.onnx"), WEIGHTS);

    await pull(entry);

    expect(host.requestsFor("onnx/vision_model.onnx").map((r) => r.range)).toEqual([`bytes=${WEIGHTS.length}-`]);
    await expectInstalled(entry);
  });

  it("retries after 503 and 429", async () => {
    host.faults.status = { "onnx/vision_model.onnx": 503, "vocab.json": 429 };
    const entry = tinyEntry();

    await pull(entry);

    expect(host.requestsFor("vocab.json")).toHaveLength(2);
    expect(host.requestsFor("onnx/vision_model.onnx")).toHaveLength(2);
    await expectInstalled(entry);
  });

  it("gives up at once on 404", async () => {
    const entry = tinyEntry();
    entry.files[1] = { ...entry.files[1], source: "onnx/missing.onnx" };

    const err = await failure(pull(entry));

    expect(err.code).toBe("NOT_FOUND");
    expect(err.message).toContain("onnx/missing.onnx");
    expect(err.message).toContain("404");
    expect(host.requestsFor("onnx/missing.onnx")).toHaveLength(1);
  });

  it("says which host it could not reach", async () => {
    const unreachable = new FixtureHost();
    await unreachable.start();
    const baseUrl = unreachable.baseUrl;
    await unreachable.stop();

    const err = await failure(pull(tinyEntry(), { baseUrl, retries: 0 }));

    expect(err.code).toBe("UNAVAILABLE");
    expect(err.message).toContain(`could not reach ${baseUrl}`);
    expect(err.message).toContain("ECONNREFUSED");
  });

  it("gives up at once, without retries, on a host that cannot be reached (offline)", async () => {
    const unreachable = new FixtureHost();
    await unreachable.start();
    const refused = unreachable.baseUrl;
    await unreachable.stop();
    // A name that never resolves (RFC 6761) and a port nothing listens on.
    for (const baseUrl of ["http://glimpse-model-host.invalid", refused]) {
      const warnings: string[] = [];
      const logger = createLogger("warn", (line) => warnings.push(line));
      const err = await failure(pull(tinyEntry(), { baseUrl, retries: 3, logger }));
      expect(err.code, baseUrl).toBe("UNAVAILABLE");
      expect(err.message).toContain(`could not reach ${baseUrl}`);
      expect(warnings, baseUrl).toEqual([]);
    }
  });

  it("stops when aborted, installs nothing, and the next pull resumes", async () => {
    host.faults.stallAfter = { "onnx/vision_model.onnx": 64_000 };
    const entry = tinyEntry();
    const controller = new AbortController();

    const err = await failure(
      pull(entry, {
        signal: controller.signal,
        onProgress: (p) => {
          if (p.file === "vision_model.onnx" && p.receivedBytes >= 64_000) controller.abort();
        },
      }),
    );

    expect(err.code).toBe("CANCELLED");
    expect(existsSync(modelDirectory(cacheDir, entry.id))).toBe(false);
    expect(existsSync(path.join(cacheDir, ".partial", `${entry.id}.lock`))).toBe(false);
    expect((await stat(partOf(entry, "vision_model.onnx"))).size).toBe(64_000);

    host.faults.stallAfter = {};
    await pull(entry);
    expect(host.requestsFor("onnx/vision_model.onnx").at(-1)?.range).toBe("bytes=64000-");
    await expectInstalled(entry);
  });

  it("replaces an incomplete model directory, keeping the files in it that verify", async () => {
    const entry = tinyEntry();
    const dir = modelDirectory(cacheDir, entry.id);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "vocab.json"), VOCAB); // copied by hand
    await writeFile(path.join(dir, "vision_model.onnx"), WEIGHTS.subarray(0, 1000)); // truncated
    await writeFile(path.join(dir, "notes.txt"), "left over");
    expect(await isModelInstalled(cacheDir, entry)).toBe(false);

    await pull(entry);

    expect(host.requestsFor("vocab.json")).toHaveLength(0);
    expect(host.requestsFor("onnx/vision_model.onnx")).toHaveLength(1);
    expect((await readdir(dir)).sort()).toEqual([MANIFEST_FILE, "vision_model.onnx", "vocab.json"]);
    await expectInstalled(entry);
  });

  it("lets concurrent pulls of one model share one download", async () => {
    const entry = tinyEntry();

    const dirs = await Promise.all([pull(entry), pull(entry), pull(entry)]);

    expect(new Set(dirs)).toEqual(new Set([modelDirectory(cacheDir, entry.id)]));
    expect(host.requestsFor("vocab.json")).toHaveLength(1);
    expect(host.requestsFor("onnx/vision_model.onnx")).toHaveLength(1);
    await expectInstalled(entry);
  });

  it("takes over the lock of a pull that died", async () => {
    const entry = tinyEntry();
    await mkdir(path.join(cacheDir, ".partial"), { recursive: true });
    // A pid far above any pid_max, so no process has it.
    const dead = { pid: 2 ** 30, host: (await import("node:os")).hostname(), token: "gone", since: new Date().toISOString() };
    await writeFile(path.join(cacheDir, ".partial", `${entry.id}.lock`), JSON.stringify(dead));

    await pull(entry);

    await expectInstalled(entry);
  });

  it("refuses model ids that are not plain names", () => {
    expect(() => modelDirectory(cacheDir, "../escape")).toThrow(/model id/);
  });
});

/** Collects what a command writes. */
function output(isTTY = false): CommandOutput & { text: string } {
  const out = {
    text: "",
    isTTY,
    write(chunk: string) {
      out.text += chunk;
      return true;
    },
  };
  return out;
}

describe("glimpse model", () => {
  const registry = () => [tinyEntry()];
  const env = () => ({ GLIMPSE_MODEL_CACHE: cacheDir, GLIMPSE_MODEL_BASE_URL: host.baseUrl, GLIMPSE_LOG_LEVEL: "warn" });

  it("pulls a model with progress lines, then lists it as installed", async () => {
    const stdout = output();
    const stderr = output();

    const code = await runModelCommand(["pull", "tiny-test-clip"], { env: env(), registry: registry(), stdout, stderr });

    expect(code).toBe(0);
    expect(stdout.text).toBe(`installed tiny-test-clip in ${path.join(cacheDir, "tiny-test-clip")}\n`);
    const steps = stderr.text.split("\n").filter((l) => /^vision_model\.onnx: \d+% \(\d+\/293 KiB\)$/.test(l));
    expect(steps.length).toBeGreaterThan(0);
    expect(steps.length).toBeLessThanOrEqual(9); // about one line per tenth, not one per chunk
    expect(stderr.text).toContain("vision_model.onnx: done, 293 KiB, sha256 verified");
    expect(stderr.text).not.toContain("\r");
    await expectInstalled(tinyEntry());

    const list = output();
    expect(await runModelCommand(["list"], { env: env(), registry: registry(), stdout: list, stderr })).toBe(0);
    const [header, row] = list.text.split("\n");
    expect(header.split(/\s+/)).toEqual(["ID", "DIMENSION", "INSTALLED", "FILES"]);
    expect(row.split(/\s+/).slice(0, 3)).toEqual(["tiny-test-clip", "8", "yes"]);
    expect(row).toContain("vocab.json, vision_model.onnx");
    expect(list.text).toContain(`model cache: ${cacheDir}`);

    const again = output();
    expect(await runModelCommand(["pull", "tiny-test-clip"], { env: env(), registry: registry(), stdout: again, stderr })).toBe(0);
    expect(again.text).toContain("already installed");
  });

  it("redraws one line per file on a terminal", async () => {
    const stderr = output(true);

    const code = await runModelCommand(["pull", "tiny-test-clip"], { env: env(), registry: registry(), stdout: output(), stderr });

    expect(code).toBe(0);
    const lines = stderr.text.split("\n").filter((l) => l !== "");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^\r.*vocab\.json/);
    expect(lines[1].split("\r").at(-1)).toMatch(/^vision_model\.onnx +done {2}293\/293 KiB/);
  });

  it("lists a model that is not installed", async () => {
    const list = output();
    expect(await runModelCommand(["list"], { env: env(), registry: registry(), stdout: list, stderr: output() })).toBe(0);
    expect(list.text.split("\n")[1].split(/\s+/).slice(0, 3)).toEqual(["tiny-test-clip", "8", "no"]);
  });

  it("fails with what to do when the host cannot be reached", async () => {
    const unreachable = new FixtureHost();
    await unreachable.start();
    const baseUrl = unreachable.baseUrl;
    await unreachable.stop();
    const stderr = output();

    const code = await runModelCommand(["pull", "tiny-test-clip"], {
      env: { ...env(), GLIMPSE_MODEL_BASE_URL: baseUrl },
      registry: registry(),
      stdout: output(),
      stderr,
      retries: 0,
    });

    expect(code).toBe(1);
    expect(stderr.text).toContain(`glimpse: could not reach ${baseUrl}`);
    expect(stderr.text).toContain(`into ${path.join(cacheDir, "tiny-test-clip")}`);
    expect(stderr.text).toContain("or set GLIMPSE_MODEL to a model directory");
    expect(await isModelInstalled(cacheDir, tinyEntry())).toBe(false);
  });

  it("installs files copied into the model directory without the network", async () => {
    const dir = path.join(cacheDir, "tiny-test-clip");
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "vocab.json"), VOCAB);
    await writeFile(path.join(dir, "vision_model.onnx"), WEIGHTS);

    const code = await runModelCommand(["pull", "tiny-test-clip"], {
      env: { ...env(), GLIMPSE_MODEL_BASE_URL: "http://127.0.0.1:9" },
      registry: registry(),
      stdout: output(),
      stderr: output(),
    });

    expect(code).toBe(0);
    expect(host.seen).toHaveLength(0);
    await expectInstalled(tinyEntry());
  });

  it("exits 2 for an unknown model or subcommand", async () => {
    const stderr = output();
    expect(await runModelCommand(["pull", "nope"], { env: env(), registry: registry(), stdout: output(), stderr })).toBe(2);
    expect(stderr.text).toContain('unknown model "nope"; known models: tiny-test-clip');
    expect(await runModelCommand(["push"], { env: env(), registry: registry(), stdout: output(), stderr })).toBe(2);
    expect(stderr.text).toContain('unknown model command "push"');
  });

  it("exits 130 when cancelled", async () => {
    const controller = new AbortController();
    controller.abort();
    const stderr = output();
    const code = await runModelCommand(["pull", "tiny-test-clip"], {
      env: env(),
      registry: registry(),
      stdout: output(),
      stderr,
      signal: controller.signal,
    });
    expect(code).toBe(130);
    expect(stderr.text).toContain("cancelled");
  });
});

describe("the model registry", () => {
  const tokenizerDir = path.resolve("../shared/models/clip-vit-b32-tokenizer");

  it("describes clip-vit-b32 first, with well-formed files", () => {
    const entry = MODELS[0];
    expect(entry).toMatchObject({ id: "clip-vit-b32", repository: "Xenova/clip-vit-base-patch32", revision: "main", dimension: 512 });
    expect(findModel("clip-vit-b32")).toBe(entry);
    expect(findModel("nope")).toBeUndefined();
    expect(entry.files.map((f) => [f.name, f.source])).toEqual([
      ["vocab.json", "vocab.json"],
      ["merges.txt", "merges.txt"],
      ["text_model.onnx", "onnx/text_model_quantized.onnx"],
      ["vision_model.onnx", "onnx/vision_model.onnx"],
    ]);
    for (const model of MODELS) {
      expect(() => modelDirectory("/cache", model.id)).not.toThrow();
      expect(new Set(model.files.map((f) => f.name)).size).toBe(model.files.length);
      for (const file of model.files) expect(file.sha256).toMatch(/^[0-9a-f]{64}$/);
    }
    expect(modelFileUrl("https://huggingface.co/", entry, entry.files[2])).toBe(
      "https://huggingface.co/Xenova/clip-vit-base-patch32/resolve/main/onnx/text_model_quantized.onnx",
    );
  });

  it.skipIf(!existsSync(tokenizerDir))(
    "lists the sha256 and size of the CLIP tokenizer files (skipped where ../shared/models/clip-vit-b32-tokenizer is absent)",
    async () => {
      for (const name of ["vocab.json", "merges.txt"]) {
        const bytes = await readFile(path.join(tokenizerDir, name));
        const file = MODELS[0].files.find((f) => f.name === name);
        expect(file).toMatchObject({ sha256: sha256(bytes), bytes: bytes.length });
      }
    },
  );
});

describe("model options", () => {
  it("default to clip-vit-b32 from huggingface.co into <dataDir>/models, pulled automatically", () => {
    const options = loadOptions({ GLIMPSE_DATA_DIR: "/srv/glimpse" });
    expect(options).toMatchObject({
      model: "clip-vit-b32",
      modelCacheDir: "/srv/glimpse/models",
      modelAutoPull: true,
      modelBaseUrl: "https://huggingface.co",
    });
  });

  it("accept a model directory, a cache directory, a mirror and auto-pull off", () => {
    const options = loadOptions(
      { GLIMPSE_MODEL_AUTO_PULL: "false", GLIMPSE_MODEL_BASE_URL: "http://mirror.local:8000/hf/" },
      ["--model", tmpdir(), "--model-cache=/var/cache/glimpse"],
    );
    expect(options).toMatchObject({
      model: path.resolve(tmpdir()),
      modelCacheDir: "/var/cache/glimpse",
      modelAutoPull: false,
      modelBaseUrl: "http://mirror.local:8000/hf",
    });
  });

  it("name every bad model variable", () => {
    let error: unknown;
    try {
      loadOptions({ GLIMPSE_MODEL: "clip-vit-b99", GLIMPSE_MODEL_AUTO_PULL: "maybe", GLIMPSE_MODEL_BASE_URL: "ftp://x" });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join("\n");
    expect(problems).toContain("GLIMPSE_MODEL must be a model id (clip-vit-b32) or an existing model directory");
    expect(problems).toContain("GLIMPSE_MODEL_AUTO_PULL must be true or false");
    expect(problems).toContain("GLIMPSE_MODEL_BASE_URL must be an http(s) URL");
  });
});
