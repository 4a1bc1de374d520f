import { mkdtemp, rm, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { inject } from "vitest";
import { FileBlobStore, type BlobStore } from "../../src/blobs/blob-store.js";
import { S3BlobStore } from "../../src/blobs/s3-blob-store.js";
import type { Options } from "../../src/config/options.js";
import type { Clock } from "../../src/clock.js";
import { freshLocation, s3rverObjectFile, useS3rverCredentials } from "./s3.js";

/** Which blob store this run tests against (GLIMPSE_TEST_BLOBS, read by the global setup). */
export function testBlobKind(): "files" | "s3" {
  return inject("s3Endpoint") ? "s3" : "files";
}

/**
 * The options that put an app's blobs in the run's S3 server under a fresh prefix, or none
 * when the run uses files (the app's data directory then holds them, as by default).
 */
export function testBlobOptions(): Partial<Options> {
  const endpoint = inject("s3Endpoint");
  if (!endpoint) return {};
  useS3rverCredentials();
  const location = freshLocation(endpoint);
  return {
    blobs: { kind: "s3", bucket: location.bucket, prefix: location.prefix },
    s3Endpoint: location.endpoint,
    s3Region: location.region,
    s3ForcePathStyle: location.forcePathStyle,
  };
}

/** A blob store made for one test. */
export interface TestBlobStore {
  store: BlobStore;
  /** The file store's root (undefined for S3). */
  root: string | undefined;
  /** Places a stored blob's write `ms` in the past, as the orphan sweep will see it. */
  age(sha256: string, ms: number): Promise<void>;
  dispose(): Promise<void>;
}

/** A blob store of this run's kind, empty: a temporary directory, or a fresh prefix in the run's S3 server. */
export async function testBlobStore(clock?: Clock): Promise<TestBlobStore> {
  const endpoint = inject("s3Endpoint");
  if (endpoint) {
    useS3rverCredentials();
    const location = freshLocation(endpoint);
    const store = new S3BlobStore(location, clock);
    return {
      store,
      root: undefined,
      age: (sha256, ms) => backdate(s3rverObjectFile(inject("s3Directory"), location.bucket, store.keyOf(sha256)), ms),
      dispose: () => store.close(),
    };
  }
  const root = await mkdtemp(path.join(tmpdir(), "glimpse-blobs-"));
  const store = new FileBlobStore(root, clock);
  return {
    store,
    root,
    age: (sha256, ms) => backdate(store.pathOf(sha256), ms),
    dispose: () => rm(root, { recursive: true, force: true }),
  };
}

/** Moves a file's times `ms` into the past. */
export async function backdate(file: string, ms: number): Promise<void> {
  const then = new Date(Date.now() - ms);
  await utimes(file, then, then);
}
