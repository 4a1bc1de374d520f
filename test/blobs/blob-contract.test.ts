import { createHash, randomBytes } from "node:crypto";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { BlobRead, BlobStore } from "../../src/blobs/blob-store.js";
import { FileBlobStore } from "../../src/blobs/blob-store.js";
import { MULTIPART_PART_BYTES, S3BlobStore } from "../../src/blobs/s3-blob-store.js";
import { DomainError } from "../../src/errors.js";
import { freshLocation, startS3Server, useS3rverCredentials, type TestS3Server } from "../helpers/s3.js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

async function bytesOf(read: BlobRead): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of read.body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function rejection(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DomainError);
  return error as DomainError;
}

let s3: TestS3Server;
beforeAll(async () => {
  useS3rverCredentials();
  s3 = await startS3Server();
});
afterAll(async () => {
  await s3?.stop();
});

/** The same promises from both stores: what the catalogue, the bridge and the sweep rely on. */
describe.each(["files", "s3"] as const)("blob store contract: %s", (kind) => {
  let store: BlobStore;
  let dispose: () => Promise<void>;

  beforeEach(async () => {
    if (kind === "s3") {
      const s3Store = new S3BlobStore(freshLocation(s3.endpoint));
      store = s3Store;
      dispose = () => s3Store.close();
    } else {
      const root = await mkdtemp(path.join(tmpdir(), "glimpse-blobs-"));
      store = new FileBlobStore(root);
      dispose = () => rm(root, { recursive: true, force: true });
    }
  });
  afterEach(async () => {
    await dispose();
  });

  it("stores by sha256, keeps one copy of identical bytes, reads, lists and deletes", async () => {
    const a = randomBytes(1000);
    const b = randomBytes(2000);
    expect(await store.put(a)).toBe(sha(a));
    expect(await store.put(a, sha(a))).toBe(sha(a)); // the same bytes again: one copy
    expect(await store.put(b)).toBe(sha(b));
    expect(await store.list()).toEqual([sha(a), sha(b)].sort());
    expect((await store.get(sha(a))).equals(a)).toBe(true);
    expect(await store.has(sha(b))).toBe(true);

    await store.delete(sha(a));
    await store.delete(sha(a)); // deleting a missing blob is fine
    expect(await store.has(sha(a))).toBe(false);
    expect((await rejection(store.get(sha(a)))).code).toBe("NOT_FOUND");
    expect((await rejection(store.read(sha(a)))).code).toBe("NOT_FOUND");
    expect(await store.list()).toEqual([sha(b)]);
  });

  it("refuses a declared hash that does not match, and anything that is not a sha256", async () => {
    const bytes = randomBytes(100);
    expect((await rejection(store.put(bytes, sha(randomBytes(1))))).code).toBe("INTERNAL");
    expect(await store.list()).toEqual([]);
    expect((await rejection(store.get("../../etc/passwd"))).code).toBe("INVALID_ARGUMENT");
    expect((await rejection(store.has("A".repeat(64)))).code).toBe("INVALID_ARGUMENT");
  });

  it("streams a whole blob or one byte range of it, the end cut at the last byte", async () => {
    const bytes = randomBytes(100_000);
    const key = await store.put(bytes);

    const whole = await store.read(key);
    expect([whole.size, whole.start, whole.end]).toEqual([100_000, 0, 99_999]);
    expect((await bytesOf(whole)).equals(bytes)).toBe(true);

    const middle = await store.read(key, { start: 1000, end: 1999 });
    expect([middle.size, middle.start, middle.end]).toEqual([100_000, 1000, 1999]);
    expect((await bytesOf(middle)).equals(bytes.subarray(1000, 2000))).toBe(true);

    const tail = await store.read(key, { start: 99_990, end: 200_000 });
    expect([tail.start, tail.end]).toEqual([99_990, 99_999]);
    expect((await bytesOf(tail)).equals(bytes.subarray(99_990))).toBe(true);

    expect((await rejection(store.read(key, { start: 100_000, end: 100_010 }))).code).toBe("FAILED_PRECONDITION");
  });

  it("walks its blobs with their write times, and nothing else", async () => {
    const before = Date.now() - 5000; // S3 dates have one-second resolution
    const key = await store.put(randomBytes(10));
    const seen = [];
    for await (const entry of store.entries()) seen.push(entry);
    expect(seen.map((e) => e.sha256)).toEqual([key]);
    expect(seen[0].modifiedAt.getTime()).toBeGreaterThanOrEqual(before);
    expect(seen[0].modifiedAt.getTime()).toBeLessThanOrEqual(Date.now() + 5000);
  });
});

describe("S3BlobStore specifics", () => {
  it("uploads a blob larger than one part as a multipart upload and reads it back whole; small ones in one PUT", async () => {
    const location = freshLocation(s3.endpoint);
    const store = new S3BlobStore(location);
    try {
      // Which S3 operations the store sends, seen from the SDK client's middleware stack.
      const sent: string[] = [];
      store["client"].middlewareStack.add(
        (next, context) => async (args) => {
          sent.push(context.commandName ?? "?");
          return next(args);
        },
        { step: "initialize" },
      );
      const bytes = randomBytes(2 * MULTIPART_PART_BYTES + 12345);
      const key = await store.put(bytes);
      expect(sent.filter((c) => c === "UploadPartCommand")).toHaveLength(3);
      expect(sent).toContain("CompleteMultipartUploadCommand");
      expect(sent).not.toContain("PutObjectCommand");
      expect((await store.get(key)).equals(bytes)).toBe(true);

      // Small blobs go up in one request.
      sent.length = 0;
      await store.put(randomBytes(1000));
      expect(sent).toContain("PutObjectCommand");
      expect(sent).not.toContain("CreateMultipartUploadCommand");
    } finally {
      await store.close();
    }
  });

  it("passes a range through to S3, so only the bytes asked for cross the network", async () => {
    const store = new S3BlobStore(freshLocation(s3.endpoint));
    try {
      const bytes = randomBytes(3 * 1024 * 1024);
      const key = await store.put(bytes);
      const ranges: (string | undefined)[] = [];
      store["client"].middlewareStack.add(
        (next, context) => async (args) => {
          if (context.commandName === "GetObjectCommand") ranges.push((args.input as { Range?: string }).Range);
          return next(args);
        },
        { step: "initialize" },
      );
      const read = await store.read(key, { start: 2_000_000, end: 2_000_099 });
      const chunks: Buffer[] = [];
      for await (const chunk of read.body) chunks.push(chunk as Buffer);
      expect(ranges).toEqual(["bytes=2000000-2000099"]);
      expect(Buffer.concat(chunks).equals(bytes.subarray(2_000_000, 2_000_100))).toBe(true);
      expect([read.size, read.start, read.end]).toEqual([bytes.length, 2_000_000, 2_000_099]);
    } finally {
      await store.close();
    }
  });

  it("keeps deployments under different prefixes of one bucket apart, and ignores foreign keys", async () => {
    const first = new S3BlobStore(freshLocation(s3.endpoint));
    const secondLocation = freshLocation(s3.endpoint);
    const second = new S3BlobStore(secondLocation);
    try {
      const mine = await first.put(randomBytes(10));
      const theirs = await second.put(randomBytes(10));
      const client = new S3Client({ region: "us-east-1", endpoint: s3.endpoint, forcePathStyle: true });
      await client.send(
        new PutObjectCommand({ Bucket: secondLocation.bucket, Key: `${secondLocation.prefix}notes.txt`, Body: "x" }),
      );
      client.destroy();
      expect(await first.list()).toEqual([mine]);
      expect(await second.list()).toEqual([theirs]);
      expect(await first.has(theirs)).toBe(false);
    } finally {
      await first.close();
      await second.close();
    }
  });

  it("fails with the connection error, not NOT_FOUND, when the server is down", async () => {
    const store = new S3BlobStore({ ...freshLocation("http://127.0.0.1:1"), endpoint: "http://127.0.0.1:1" });
    try {
      const error = await store.get(sha(Buffer.from("x"))).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeDefined();
      expect(error).not.toBeInstanceOf(DomainError);
    } finally {
      await store.close();
    }
  });
});
