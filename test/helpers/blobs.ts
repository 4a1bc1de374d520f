import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { inject } from "vitest";
import { FileBlobStore, type BlobStore } from "../../src/blobs/blob-store.js";
import { S3BlobStore } from "../../src/blobs/s3-blob-store.js";
import type { Options } from "../../src/config/options.js";
import type { Clock } from "../../src/clock.js";
import { freshLocation, useS3rverCredentials } from "./s3.js";

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

/** A blob store of this run's kind, empty, and how to dispose of it. */
export async function testBlobStore(clock?: Clock): Promise<{ store: BlobStore; dispose(): Promise<void> }> {
  const endpoint = inject("s3Endpoint");
  if (endpoint) {
    useS3rverCredentials();
    const store = new S3BlobStore(freshLocation(endpoint), clock);
    return { store, dispose: () => store.close() };
  }
  const root = await mkdtemp(path.join(tmpdir(), "glimpse-blobs-"));
  return { store: new FileBlobStore(root, clock), dispose: () => rm(root, { recursive: true, force: true }) };
}
