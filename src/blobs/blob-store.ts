import { createHash, randomUUID } from "node:crypto";
import { mkdir, open, opendir, readdir, readFile, rename, rm, stat, unlink } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { systemClock, type Clock } from "../clock.js";
import { DomainError, invalidArgument, notFound } from "../errors.js";

/** One stored blob and when its file was last written. */
export interface BlobEntry {
  sha256: string;
  modifiedAt: Date;
}

/** Bytes `start` to `end` of a blob, both inclusive. */
export interface BlobRange {
  start: number;
  end: number;
}

/** A blob being read: its whole size, the bytes this read covers, and a stream of them. */
export interface BlobRead {
  size: number;
  start: number;
  /** Last byte sent (inclusive); `start - 1` for an empty blob. */
  end: number;
  body: Readable;
}

/**
 * Image bytes keyed by their SHA-256, so identical uploads share one copy: as files on one
 * machine ({@link FileBlobStore}) or as objects in S3-compatible storage that several
 * replicas share (S3BlobStore).
 */
export interface BlobStore {
  /** Stores bytes under their sha256 (hex) and returns it; storing existing content is a no-op. */
  put(bytes: Uint8Array, sha256?: string): Promise<string>;
  /** The stored bytes; DomainError NOT_FOUND when there is no such blob. */
  get(sha256: string): Promise<Buffer>;
  /**
   * Streams a blob, or the range of it (which must start inside it; its end is cut at the
   * last byte), without holding it in memory. DomainError NOT_FOUND when there is no such blob.
   */
  read(sha256: string, range?: BlobRange): Promise<BlobRead>;
  /** Whether a blob with this hash is stored. */
  has(sha256: string): Promise<boolean>;
  /** Removes a blob; removing a missing one is not an error. */
  delete(sha256: string): Promise<void>;
  /** Every stored sha256 (tests and maintenance use it). */
  list(): Promise<string[]>;
  /**
   * Every stored blob with its modification time, read directory by directory as the caller
   * iterates, so millions of blobs are never held at once. Blobs added or removed meanwhile
   * may or may not appear.
   */
  entries(): AsyncIterable<BlobEntry>;
  /**
   * Removes partial writes older than `maxAgeMs` (left behind by a crash); younger ones may
   * belong to a write in progress. Returns how many were removed.
   */
  sweepTemp(maxAgeMs?: number): Promise<number>;
  /** Releases connections (nothing, for files). */
  close(): Promise<void>;
}

/** What a blob key looks like. */
export const SHA256_HEX = /^[0-9a-f]{64}$/;
const FAN_OUT = /^[0-9a-f]{2}$/;
/** Default age after which a partial write is taken for abandoned. */
export const ONE_HOUR_MS = 60 * 60 * 1000;

/**
 * Blobs as files under `<root>/ab/cd/<sha256>`; two levels of fan-out keep directories small
 * at millions of images. Writes land in `<root>/tmp/` first and are renamed into place, so a
 * blob's final path only ever holds complete content.
 */
export class FileBlobStore implements BlobStore {
  private readonly root: string;
  private readonly tmpDir: string;

  /** `clock` only decides which temp files `sweepTemp` considers stale. */
  constructor(
    root: string,
    private readonly clock: Clock = systemClock,
  ) {
    this.root = path.resolve(root);
    this.tmpDir = path.join(this.root, "tmp");
  }

  /**
   * Hashes the bytes even when `sha256` is given: hashing costs far less than the write,
   * and a wrong caller-supplied hash would file content under another image's key.
   * A mismatch is a bug in the caller, hence INTERNAL.
   */
  async put(bytes: Uint8Array, sha256?: string): Promise<string> {
    if (sha256 !== undefined) checkSha256(sha256);
    const actual = createHash("sha256").update(bytes).digest("hex");
    if (sha256 !== undefined && sha256 !== actual) {
      throw new DomainError("INTERNAL", "blob content does not match its declared sha256", {
        cause: new Error(`declared ${sha256}, computed ${actual}`),
      });
    }
    const finalPath = this.pathOf(actual);
    if (await exists(finalPath)) return actual;

    await mkdir(this.tmpDir, { recursive: true });
    const tmpPath = path.join(this.tmpDir, `${actual}.${randomUUID()}`);
    try {
      const file = await open(tmpPath, "wx");
      try {
        await file.writeFile(bytes);
        await file.sync();
      } finally {
        await file.close();
      }
      await mkdir(path.dirname(finalPath), { recursive: true });
      // Concurrent puts of the same content each rename their own complete copy; the last
      // one wins, and every one of them is the same bytes.
      await rename(tmpPath, finalPath);
    } catch (error) {
      await rm(tmpPath, { force: true });
      throw error;
    }
    // Without syncing the directory the rename itself could be lost in a crash, leaving the
    // catalogue pointing at a blob that never reached the disk.
    await syncDirectory(path.dirname(finalPath));
    return actual;
  }

  async get(sha256: string): Promise<Buffer> {
    try {
      return await readFile(this.pathOf(sha256));
    } catch (error) {
      if (isMissing(error)) throw notFound("blob", sha256);
      throw error;
    }
  }

  async read(sha256: string, range?: BlobRange): Promise<BlobRead> {
    const file = this.pathOf(sha256);
    let handle;
    try {
      handle = await open(file, "r");
    } catch (error) {
      if (isMissing(error)) throw notFound("blob", sha256);
      throw error;
    }
    try {
      const { size } = await handle.stat();
      const start = range?.start ?? 0;
      const end = Math.min(range?.end ?? size - 1, size - 1);
      if (range && start >= size) throw new DomainError("FAILED_PRECONDITION", `blob ${sha256} has no byte ${start}`);
      // The stream owns the open handle from here: a blob deleted meanwhile is still read whole.
      const body = handle.createReadStream({ start, end: Math.max(end, start), autoClose: true });
      return { size, start, end, body };
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  async has(sha256: string): Promise<boolean> {
    return exists(this.pathOf(sha256));
  }

  async delete(sha256: string): Promise<void> {
    try {
      await unlink(this.pathOf(sha256));
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
  }

  /** Throws INVALID_ARGUMENT unless `sha256` is 64 lower-case hex digits, so no path escapes root. */
  pathOf(sha256: string): string {
    checkSha256(sha256);
    return path.join(this.root, sha256.slice(0, 2), sha256.slice(2, 4), sha256);
  }

  async list(): Promise<string[]> {
    const found: string[] = [];
    for await (const { sha256 } of this.files()) found.push(sha256);
    return found.sort();
  }

  async *entries(): AsyncGenerator<BlobEntry> {
    for await (const { sha256, file } of this.files()) {
      try {
        yield { sha256, modifiedAt: (await stat(file)).mtime };
      } catch (error) {
        // Deleted between the directory read and the stat.
        if (!isMissing(error)) throw error;
      }
    }
  }

  /** The blob files, one fan-out directory at a time. */
  private async *files(): AsyncGenerator<{ sha256: string; file: string }> {
    for (const first of await dirNames(this.root)) {
      if (!FAN_OUT.test(first)) continue; // skips tmp/ and anything foreign
      for (const second of await dirNames(path.join(this.root, first))) {
        if (!FAN_OUT.test(second)) continue;
        const dir = path.join(this.root, first, second);
        let handle;
        try {
          handle = await opendir(dir);
        } catch (error) {
          if (isMissing(error)) continue;
          throw error;
        }
        for await (const entry of handle) {
          const name = entry.name;
          if (SHA256_HEX.test(name) && name.startsWith(first + second)) yield { sha256: name, file: path.join(dir, name) };
        }
      }
    }
  }

  /**
   * Removes temp files older than `maxAgeMs` (default one hour), which only a crashed or
   * killed write leaves behind; younger ones may belong to a write in progress.
   * Returns how many were removed. Age is judged by this store's clock against file times.
   */
  async sweepTemp(maxAgeMs: number = ONE_HOUR_MS): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.tmpDir);
    } catch (error) {
      if (isMissing(error)) return 0;
      throw error;
    }
    const cutoff = this.clock.now().getTime() - maxAgeMs;
    let removed = 0;
    for (const name of names) {
      const file = path.join(this.tmpDir, name);
      try {
        if ((await stat(file)).mtimeMs >= cutoff) continue;
        await rm(file, { force: true });
        removed++;
      } catch (error) {
        // A write that finished between readdir and stat has renamed its file away.
        if (!isMissing(error)) throw error;
      }
    }
    return removed;
  }

  async close(): Promise<void> {}
}

/** Throws INVALID_ARGUMENT unless `sha256` is 64 lower-case hex digits. */
export function checkSha256(sha256: string): void {
  if (!SHA256_HEX.test(sha256)) {
    throw invalidArgument({ field: "sha256", description: "must be 64 lower-case hexadecimal digits" });
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (error) {
    if (isMissing(error)) return false;
    throw error;
  }
}

/** Subdirectory names of `dir`, or none when it does not exist yet. */
async function dirNames(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (error) {
    if (isMissing(error)) return [];
    throw error;
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}
