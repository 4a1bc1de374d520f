import { createHash, randomBytes, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { DomainError } from "../errors.js";
import type { Logger } from "../logging/logger.js";
import { modelFileUrl, type ModelEntry, type ModelFile } from "./registry.js";

/**
 * Downloads a registry model into the model cache:
 *
 *   <cacheDir>/<id>/                 installed model: its files and glimpse-model.json
 *   <cacheDir>/.partial/<id>/*.part  downloads in progress; a later pull resumes them (HTTP Range)
 *   <cacheDir>/.partial/<id>.lock    held by the one pull of <id> that is running
 *   <cacheDir>/.tmp-<id>-<random>/   the next install, renamed to <id> once complete and synced
 *
 * Concurrent pulls of one model (threads of one process, processes on one host, hosts sharing
 * the cache) take turns on the lock file: the second waits, then finds the model installed.
 * A lock whose holder died (its pid is gone, or it stopped refreshing the lock's mtime for
 * LOCK_STALE_MS) is taken over. Every file is checked against its sha256 before it is
 * installed, so even a broken lock can fail a pull but never install a corrupt model.
 */

/** Name of the manifest written into an installed model directory. */
export const MANIFEST_FILE = "glimpse-model.json";

/** One step of a download, for progress displays. */
export interface PullProgress {
  /** Local file name (`ModelFile.name`). */
  file: string;
  /** Bytes of the file on disk so far, including those of an earlier, resumed attempt. */
  receivedBytes: number;
  /** Size of the whole file when the server or the registry says it. */
  totalBytes?: number;
  /** True once the file is complete and its sha256 verified. */
  done: boolean;
}

/** How and where `pullModel` downloads. */
export interface PullOptions {
  /** Model cache directory (GLIMPSE_MODEL_CACHE). */
  cacheDir: string;
  /** Host the files are fetched from (GLIMPSE_MODEL_BASE_URL); default https://huggingface.co. */
  baseUrl?: string;
  /** Aborts the pull; what was downloaded stays for the next pull to resume. */
  signal?: AbortSignal;
  /** Called as bytes arrive (often: displays should throttle) and when each file is verified. */
  onProgress?(p: PullProgress): void;
  logger?: Logger;
  /** HTTP client; the global fetch by default. */
  fetch?: typeof fetch;
  /**
   * Retries of a file after a network error, HTTP 5xx or 429, each resuming; default 3. A host
   * that cannot be reached at all (offline) is not retried.
   */
  retries?: number;
}

/** Contents of `glimpse-model.json`. */
export interface ModelManifest {
  id: string;
  dimension: number;
  files: { name: string; sha256: string; bytes: number }[];
}

const DEFAULT_BASE_URL = "https://huggingface.co";
const DEFAULT_RETRIES = 3;
/** A transfer that delivers nothing for this long is dropped and resumed. */
const STALL_MS = 60_000;
const LOCK_POLL_MS = 250;
const LOCK_HEARTBEAT_MS = 5_000;
const LOCK_STALE_MS = 30_000;
const MAX_RETRY_DELAY_MS = 30_000;

/** The directory a model is installed in: `<cacheDir>/<id>`. */
export function modelDirectory(cacheDir: string, id: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(id)) {
    throw new DomainError("INVALID_ARGUMENT", `model id ${JSON.stringify(id)} may hold only letters, digits, '.', '_' and '-'`);
  }
  return path.join(cacheDir, id);
}

/**
 * Whether `entry` is installed: its directory has a manifest naming the same files with the
 * same sha256, and each file is there with the size the manifest records. Files are hashed
 * when they are installed, not again here (hundreds of MiB on every start).
 */
export async function isModelInstalled(cacheDir: string, entry: ModelEntry): Promise<boolean> {
  const dir = modelDirectory(cacheDir, entry.id);
  const manifest = await readManifest(dir);
  if (!manifest || manifest.id !== entry.id || manifest.dimension !== entry.dimension) return false;
  if (manifest.files.length !== entry.files.length) return false;
  for (const file of entry.files) {
    const listed = manifest.files.find((f) => f.name === file.name);
    if (!listed || listed.sha256 !== file.sha256) return false;
    if ((await sizeOf(path.join(dir, file.name))) !== listed.bytes) return false;
  }
  return true;
}

/**
 * Downloads, verifies and installs `entry` under `options.cacheDir`, resuming what an earlier
 * pull left, and returns the installed directory. Does nothing (no request) when the model is
 * already installed. Files found in an incomplete `<cacheDir>/<id>` (a copy made by hand, for
 * instance) are used when their sha256 matches, without asking the server.
 * @throws DomainError UNAVAILABLE when the host cannot be reached (at once, without retries:
 *   offline) or keeps failing,
 *   FAILED_PRECONDITION on a checksum mismatch (naming the file and both hashes) or a refused
 *   request, NOT_FOUND when the host has no such file, CANCELLED when `signal` aborts.
 */
export async function pullModel(entry: ModelEntry, options: PullOptions): Promise<string> {
  const dir = modelDirectory(options.cacheDir, entry.id);
  if (await isModelInstalled(options.cacheDir, entry)) return dir;
  const baseUrl = options.baseUrl ?? DEFAULT_BASE_URL;
  const pull: Pull = {
    entry,
    dir,
    cacheDir: options.cacheDir,
    partialDir: path.join(options.cacheDir, ".partial", entry.id),
    baseUrl,
    origin: originOf(baseUrl),
    signal: options.signal,
    report: (p) => options.onProgress?.(p),
    logger: options.logger?.child({ model: entry.id }),
    fetch: options.fetch ?? globalThis.fetch,
    retries: options.retries ?? DEFAULT_RETRIES,
  };
  if (pull.signal?.aborted) throw cancelled(pull);
  await fs.mkdir(pull.partialDir, { recursive: true });
  const release = await acquireLock(pull);
  try {
    if (await isModelInstalled(pull.cacheDir, entry)) return dir;
    await removeLeftovers(pull);
    const sizes: number[] = [];
    for (const file of entry.files) sizes.push(await obtain(pull, file));
    await install(pull, sizes);
    pull.logger?.info("model installed", { dir });
    return dir;
  } finally {
    await release();
  }
}

/** Everything one pull works with. */
interface Pull {
  entry: ModelEntry;
  dir: string;
  cacheDir: string;
  partialDir: string;
  baseUrl: string;
  origin: string;
  signal: AbortSignal | undefined;
  report(p: PullProgress): void;
  logger: Logger | undefined;
  fetch: typeof fetch;
  retries: number;
}

/** A failure worth retrying: the next attempt resumes where this one stopped. */
class TransientError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
  }
}

/** Brings `file` into its verified `.part` and returns its size. */
async function obtain(pull: Pull, file: ModelFile): Promise<number> {
  const part = path.join(pull.partialDir, `${file.name}.part`);
  const copy = path.join(pull.dir, file.name);
  if ((await sizeOf(copy)) !== undefined && (await hashFile(copy)) === file.sha256) {
    await fs.rename(copy, part);
    pull.logger?.info("using the file already in the model directory", { file: file.name });
    return done(pull, file, part);
  }
  const size = await sizeOf(part);
  if (size !== undefined && size === file.bytes) {
    // As long as the file: check it before asking the server anything.
    return verified(pull, file, part, await hashFile(part), size);
  }
  if (size !== undefined && file.bytes !== undefined && size > file.bytes) await fs.rm(part, { force: true });
  return download(pull, file, part);
}

/** Downloads `file` into `part`, retrying transient failures with backoff, resuming each time. */
async function download(pull: Pull, file: ModelFile, part: string): Promise<number> {
  const url = modelFileUrl(pull.baseUrl, pull.entry, file);
  let furthest = (await sizeOf(part)) ?? 0;
  let failures = 0;
  for (;;) {
    try {
      return await attempt(pull, file, part, url);
    } catch (err) {
      if (!(err instanceof TransientError)) throw err;
      const size = (await sizeOf(part)) ?? 0;
      // An attempt that got further than any before it earns a fresh set of retries.
      if (size > furthest) {
        furthest = size;
        failures = 0;
      }
      failures++;
      if (failures > pull.retries) throw new DomainError("UNAVAILABLE", err.message, { cause: err.cause ?? err });
      const wait = Math.min(err.retryAfterMs ?? 500 * 2 ** (failures - 1), MAX_RETRY_DELAY_MS);
      pull.logger?.warn(size > 0 ? "download interrupted, resuming" : "download failed, retrying", { file: file.name, bytes: size, retry: failures, delayMs: wait, error: err.message });
      try {
        await delay(wait, undefined, { signal: pull.signal });
      } catch {
        throw cancelled(pull);
      }
    }
  }
}

/** One HTTP request for the rest of `file`. */
async function attempt(pull: Pull, file: ModelFile, part: string, url: string): Promise<number> {
  const offset = (await sizeOf(part)) ?? 0;
  const stall = new AbortController();
  const signal = pull.signal ? AbortSignal.any([pull.signal, stall.signal]) : stall.signal;
  let timer = setTimeout(() => stall.abort(), STALL_MS);
  const alive = () => {
    clearTimeout(timer);
    timer = setTimeout(() => stall.abort(), STALL_MS);
  };
  const failure = (err: unknown, during: string): unknown => {
    if (pull.signal?.aborted) return cancelled(pull);
    if (stall.signal.aborted) return new TransientError(`no data from ${pull.origin} for ${STALL_MS / 1000} s while downloading ${file.name}`);
    if (err instanceof DomainError || err instanceof TransientError) return err;
    return new TransientError(`${during}: ${describe(err)}`, undefined, err);
  };
  try {
    const headers: Record<string, string> = { "accept-encoding": "identity" };
    if (offset > 0) headers.range = `bytes=${offset}-`;
    let response: Response;
    try {
      response = await pull.fetch(url, { headers, signal });
    } catch (err) {
      // No route to the host at all (no DNS, nothing listening, no network): the machine is
      // offline, which retrying within seconds does not change.
      if (!pull.signal?.aborted && !stall.signal.aborted && isUnreachable(err)) {
        throw new DomainError("UNAVAILABLE", `could not reach ${pull.origin}: ${describe(err)}`, { cause: err });
      }
      throw failure(err, `could not reach ${pull.origin}`);
    }
    const { status } = response;
    if (status === 416 && offset > 0) {
      // Nothing past the end: the part already holds the whole file.
      await response.body?.cancel();
      return verified(pull, file, part, await hashFile(part), offset);
    }
    if (status !== 200 && status !== 206) {
      await response.body?.cancel().catch(() => {});
      const message = `${url} answered HTTP ${status}`;
      if (status === 429 || status >= 500) throw new TransientError(message, retryAfterMs(response));
      throw new DomainError(status === 404 ? "NOT_FOUND" : "FAILED_PRECONDITION", message);
    }
    let start = 0;
    let total = file.bytes;
    if (status === 206) {
      const range = parseContentRange(response.headers.get("content-range"));
      if (!range || range.start !== offset) {
        await response.body?.cancel().catch(() => {});
        await fs.rm(part, { force: true });
        throw new TransientError(`${pull.origin} sent another range of ${file.name} than the one asked for; starting the file again`);
      }
      start = offset;
      total = range.total ?? total;
    } else {
      if (offset > 0) pull.logger?.info("the server ignored the range request; downloading from the start", { file: file.name });
      total = contentLength(response) ?? total;
    }

    const hash = createHash("sha256");
    if (start > 0) await hashInto(part, hash);
    const handle = await fs.open(part, start > 0 ? "a" : "w");
    let received = start;
    try {
      pull.report({ file: file.name, receivedBytes: received, totalBytes: total, done: false });
      if (start > 0) pull.logger?.info("resuming download", { file: file.name, from: start });
      alive();
      for await (const chunk of response.body ?? []) {
        alive();
        const bytes = chunk as Uint8Array;
        hash.update(bytes);
        await handle.write(bytes).catch((err: unknown) => {
          throw new DomainError("INTERNAL", `could not write ${part}: ${describe(err)}`, { cause: err });
        });
        received += bytes.length;
        pull.report({ file: file.name, receivedBytes: received, totalBytes: total, done: false });
      }
      await handle.sync();
    } catch (err) {
      throw failure(err, `the download of ${file.name} from ${pull.origin} broke off`);
    } finally {
      await handle.close();
    }
    if (total !== undefined && received < total) {
      throw new TransientError(`the download of ${file.name} from ${pull.origin} ended after ${received} of ${total} bytes`);
    }
    return verified(pull, file, part, hash.digest("hex"), received);
  } finally {
    clearTimeout(timer);
  }
}

/** Accepts `part` when `actual` is the expected sha256; otherwise deletes it and fails. */
async function verified(pull: Pull, file: ModelFile, part: string, actual: string, size: number): Promise<number> {
  if (actual !== file.sha256) {
    await fs.rm(part, { force: true });
    throw new DomainError(
      "FAILED_PRECONDITION",
      `checksum mismatch for ${file.name} of model ${pull.entry.id}: expected sha256 ${file.sha256}, got ${actual}; ` +
        "the download was deleted, pull again to fetch it anew",
    );
  }
  return done(pull, file, part, size);
}

async function done(pull: Pull, file: ModelFile, part: string, size?: number): Promise<number> {
  const bytes = size ?? (await sizeOf(part)) ?? 0;
  pull.report({ file: file.name, receivedBytes: bytes, totalBytes: bytes, done: true });
  return bytes;
}

/**
 * Moves the verified parts into a fresh temp directory with the manifest, syncs it, and renames
 * it to `<cacheDir>/<id>` (moving an incomplete directory of that name aside first, since a
 * rename cannot replace a non-empty directory).
 */
async function install(pull: Pull, sizes: number[]): Promise<void> {
  const { entry, cacheDir, dir } = pull;
  const tmp = path.join(cacheDir, `.tmp-${entry.id}-${randomBytes(6).toString("hex")}`);
  await fs.mkdir(tmp);
  try {
    for (const file of entry.files) {
      const target = path.join(tmp, file.name);
      await fs.rename(path.join(pull.partialDir, `${file.name}.part`), target);
      await syncPath(target);
    }
    const manifest: ModelManifest = {
      id: entry.id,
      dimension: entry.dimension,
      files: entry.files.map((f, i) => ({ name: f.name, sha256: f.sha256, bytes: sizes[i] })),
    };
    await fs.writeFile(path.join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + "\n");
    await syncPath(path.join(tmp, MANIFEST_FILE));
    await syncPath(tmp);
    let stale: string | undefined;
    if ((await sizeOf(dir)) !== undefined) {
      stale = path.join(cacheDir, `.stale-${entry.id}-${randomBytes(6).toString("hex")}`);
      await fs.rename(dir, stale);
    }
    await fs.rename(tmp, dir);
    await syncPath(cacheDir);
    if (stale) await fs.rm(stale, { recursive: true, force: true });
  } catch (err) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw err;
  }
  await fs.rm(pull.partialDir, { recursive: true, force: true });
}

/** Removes temp and stale directories an earlier, killed pull of this model left behind. */
async function removeLeftovers(pull: Pull): Promise<void> {
  const id = pull.entry.id.replace(/[.]/g, "\\.");
  const leftover = new RegExp(`^\\.(tmp|stale)-${id}-[0-9a-f]{12}$`);
  for (const name of await fs.readdir(pull.cacheDir)) {
    if (leftover.test(name)) await fs.rm(path.join(pull.cacheDir, name), { recursive: true, force: true });
  }
}

/** Lock tokens this process holds or is taking, so its own live locks never look stale. */
const ownTokens = new Set<string>();

/** Takes `<cacheDir>/.partial/<id>.lock`, waiting while another live pull holds it. */
async function acquireLock(pull: Pull): Promise<() => Promise<void>> {
  const lockPath = `${pull.partialDir}.lock`;
  const token = randomBytes(8).toString("hex");
  const owner = JSON.stringify({ pid: process.pid, host: os.hostname(), token, since: new Date().toISOString() });
  let announced = false;
  for (;;) {
    ownTokens.add(token);
    try {
      await fs.writeFile(lockPath, owner, { flag: "wx" });
      break;
    } catch (err) {
      ownTokens.delete(token);
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    if (await lockIsStale(lockPath)) {
      pull.logger?.warn("taking over the lock of a pull that is no longer running", { lock: lockPath });
      await fs.rm(lockPath, { force: true });
      continue;
    }
    if (!announced) pull.logger?.warn("waiting for another pull of this model to finish", { lock: lockPath });
    announced = true;
    try {
      await delay(LOCK_POLL_MS, undefined, { signal: pull.signal });
    } catch {
      throw cancelled(pull);
    }
  }
  const heartbeat = setInterval(() => {
    const now = new Date();
    fs.utimes(lockPath, now, now).catch(() => {});
  }, LOCK_HEARTBEAT_MS);
  heartbeat.unref();
  return async () => {
    clearInterval(heartbeat);
    ownTokens.delete(token);
    await fs.rm(lockPath, { force: true });
  };
}

async function lockIsStale(lockPath: string): Promise<boolean> {
  let text: string;
  let mtimeMs: number;
  try {
    text = await fs.readFile(lockPath, "utf8");
    mtimeMs = (await fs.stat(lockPath)).mtimeMs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false; // released meanwhile: try again
    throw err;
  }
  if (Date.now() - mtimeMs > LOCK_STALE_MS) return true;
  let holder: { pid?: number; host?: string; token?: string };
  try {
    holder = JSON.parse(text);
  } catch {
    return false; // still being written
  }
  if (holder.host !== os.hostname() || typeof holder.pid !== "number") return false;
  if (holder.pid === process.pid) return !ownTokens.has(holder.token ?? "");
  try {
    process.kill(holder.pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

async function readManifest(dir: string): Promise<ModelManifest | undefined> {
  try {
    const manifest = JSON.parse(await fs.readFile(path.join(dir, MANIFEST_FILE), "utf8")) as ModelManifest;
    return Array.isArray(manifest?.files) ? manifest : undefined;
  } catch {
    return undefined;
  }
}

function cancelled(pull: Pull): DomainError {
  return new DomainError("CANCELLED", `pull of model ${pull.entry.id} cancelled; pull again to resume`, { cause: pull.signal?.reason });
}

async function sizeOf(file: string): Promise<number | undefined> {
  try {
    return (await fs.stat(file)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

async function hashInto(file: string, hash: Hash): Promise<void> {
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
}

async function hashFile(file: string): Promise<string> {
  const hash = createHash("sha256");
  await hashInto(file, hash);
  return hash.digest("hex");
}

/** fsync a file or directory, so a rename that follows is not ordered before its contents. */
async function syncPath(target: string): Promise<void> {
  const handle = await fs.open(target, "r");
  try {
    await handle.sync();
  } catch (err) {
    // Some platforms and file systems cannot sync a directory; the data is synced regardless.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EISDIR" && code !== "EINVAL" && code !== "EPERM") throw err;
  } finally {
    await handle.close();
  }
}

function parseContentRange(header: string | null): { start: number; total?: number } | undefined {
  const match = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header?.trim() ?? "");
  if (!match) return undefined;
  return { start: Number(match[1]), total: match[3] === "*" ? undefined : Number(match[3]) };
}

function contentLength(response: Response): number | undefined {
  const header = response.headers.get("content-length");
  return header !== null && /^\d+$/.test(header) ? Number(header) : undefined;
}

/** Retry-After as milliseconds (seconds or an HTTP date), when the server sent one. */
function retryAfterMs(response: Response): number | undefined {
  const header = response.headers.get("retry-after")?.trim();
  if (!header) return undefined;
  if (/^\d+$/.test(header)) return Number(header) * 1000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function originOf(baseUrl: string): string {
  try {
    return new URL(baseUrl).origin;
  } catch {
    return baseUrl;
  }
}

/** An error's message with its cause's, since fetch reports every network failure as "fetch failed". */
/** Error codes that mean the host cannot be reached from here, rather than a failure on the way. */
const UNREACHABLE_CODES = new Set(["ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH"]);

/** Whether a failed fetch never reached the host: a name that does not resolve, a refused or unroutable connection. */
function isUnreachable(err: unknown): boolean {
  const cause = (err as { cause?: { code?: string; errors?: { code?: string }[] } } | undefined)?.cause;
  const codes = [cause?.code, ...(cause?.errors ?? []).map((e) => e.code)];
  return codes.some((code) => code !== undefined && UNREACHABLE_CODES.has(code));
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause as (Error & { code?: string; errors?: Error[] }) | undefined;
  const inner = cause?.message || cause?.code || cause?.errors?.[0]?.message;
  return inner && inner !== err.message ? `${err.message} (${inner})` : err.message;
}
