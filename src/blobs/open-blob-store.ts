import type { Options } from "../config/options.js";
import { FileBlobStore, type BlobStore } from "./blob-store.js";
import { S3BlobStore } from "./s3-blob-store.js";

/** The blob store the options name: files under a directory, or an S3 bucket. */
export function openBlobStore(options: Pick<Options, "blobs" | "s3Endpoint" | "s3Region" | "s3ForcePathStyle">): BlobStore {
  const location = options.blobs;
  if (location.kind === "files") return new FileBlobStore(location.dir);
  return new S3BlobStore({
    bucket: location.bucket,
    prefix: location.prefix,
    endpoint: options.s3Endpoint,
    region: options.s3Region,
    forcePathStyle: options.s3ForcePathStyle,
  });
}
