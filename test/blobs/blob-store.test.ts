import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileBlobStore } from "../../src/blobs/blob-store.js";
import { DomainError } from "../../src/errors.js";

const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** The DomainError `promise` rejects with; fails the test when it resolves. */
async function rejection(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DomainError);
  return error as DomainError;
}

describe("FileBlobStore", () => {
  let root: string;
  let store: FileBlobStore;

  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), "glimpse-blobs-"));
    store = new FileBlobStore(root);
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("stores, reads, lists and deletes blobs by their sha256", async () => {
    const a = Buffer.from("first image");
    const b = Buffer.from("second image");
    const keyA = await store.put(a);
    const keyB = await store.put(b, sha(b));

    expect(keyA).toBe(sha(a));
    expect(await store.get(keyA)).toEqual(a);
    expect(await store.has(keyB)).toBe(true);
    expect(await store.list()).toEqual([keyA, keyB].sort());

    await store.delete(keyA);
    expect(await store.has(keyA)).toBe(false);
    expect(await store.list()).toEqual([keyB]);
    await store.delete(keyA); // deleting again is fine
  });

  it("fans out as <root>/ab/cd/<sha256>", async () => {
    const key = await store.put(Buffer.from("fan out"));
    const expected = path.join(root, key.slice(0, 2), key.slice(2, 4), key);
    expect(store.pathOf(key)).toBe(expected);
    expect(await readFile(expected, "utf8")).toBe("fan out");
  });

  it("keeps one copy of identical content", async () => {
    const bytes = Buffer.from("same bytes");
    const [k1, k2] = await Promise.all([store.put(bytes), store.put(bytes)]);
    expect(k1).toBe(k2);
    expect(await store.put(bytes)).toBe(k1);
    expect(await store.list()).toEqual([k1]);
    expect(await readdir(path.dirname(store.pathOf(k1)))).toEqual([k1]);
  });

  it("leaves nothing behind in tmp/ once a put resolves", async () => {
    const bytes = Buffer.alloc(1 << 20, 3);
    const key = await store.put(bytes);
    expect((await readFile(store.pathOf(key))).equals(bytes)).toBe(true);
    expect(await readdir(path.join(root, "tmp"))).toEqual([]);
  });

  it("refuses content that does not match the declared sha256", async () => {
    const error = await rejection(store.put(Buffer.from("real"), sha(Buffer.from("claimed"))));
    expect(error.code).toBe("INTERNAL");
    expect(await store.list()).toEqual([]);
  });

  it("rejects malformed sha256 values, so no path can escape the root", async () => {
    for (const bad of ["../../etc/passwd", "ABC", "A".repeat(64), "0".repeat(63), `${"0".repeat(62)}/x`]) {
      expect(() => store.pathOf(bad)).toThrow(DomainError);
      const error = await rejection(store.get(bad));
      expect(error.code).toBe("INVALID_ARGUMENT");
      expect(error.violations[0].field).toBe("sha256");
    }
    await rejection(store.put(Buffer.from("x"), "not-a-hash"));
  });

  it("answers NOT_FOUND for a missing blob", async () => {
    const error = await rejection(store.get("0".repeat(64)));
    expect(error.code).toBe("NOT_FOUND");
    expect(await store.has("0".repeat(64))).toBe(false);
  });

  it("lists nothing for a root that does not exist yet", async () => {
    expect(await new FileBlobStore(path.join(root, "never-created")).list()).toEqual([]);
  });

  it("iterates every blob with its modification time, ignoring foreign files", async () => {
    const a = await store.put(Buffer.from("entry a"));
    const b = await store.put(Buffer.from("entry b"));
    const lastWeek = new Date(Date.now() - 7 * 24 * 60 * 60 * 1000);
    await utimes(store.pathOf(a), lastWeek, lastWeek);
    // Not blobs: a temp file, a stray name in a fan-out directory, a foreign top-level folder.
    await mkdir(path.join(root, "tmp"), { recursive: true });
    await writeFile(path.join(root, "tmp", `${a}.partial`), "half");
    await writeFile(path.join(path.dirname(store.pathOf(b)), "notes.txt"), "x");
    await mkdir(path.join(root, "zz"), { recursive: true });

    const seen = new Map<string, Date>();
    for await (const entry of store.entries()) seen.set(entry.sha256, entry.modifiedAt);
    expect([...seen.keys()].sort()).toEqual([a, b].sort());
    expect(Math.abs(seen.get(a)!.getTime() - lastWeek.getTime())).toBeLessThan(1000);
    expect(Date.now() - seen.get(b)!.getTime()).toBeLessThan(60_000);
    for await (const entry of new FileBlobStore(path.join(root, "never-created")).entries()) {
      throw new Error(`unexpected blob ${entry.sha256}`);
    }
  });

  it("sweepTemp removes only temp files older than an hour", async () => {
    const tmp = path.join(root, "tmp");
    await mkdir(tmp, { recursive: true });
    const stale = path.join(tmp, "stale-write");
    const fresh = path.join(tmp, "write-in-progress");
    await writeFile(stale, "half");
    await writeFile(fresh, "half");
    const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    await utimes(stale, twoHoursAgo, twoHoursAgo);
    const kept = await store.put(Buffer.from("stored blob"));

    expect(await store.sweepTemp()).toBe(1);
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(fresh)).toBe(true);
    expect(await store.has(kept)).toBe(true);
  });
});
