import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { systemClock, type Clock } from "../clock.js";
import { DomainError, notFound } from "../errors.js";
import { checkSha256, ONE_HOUR_MS, SHA256_HEX, type BlobEntry, type BlobRange, type BlobRead, type BlobStore } from "./blob-store.js";

/** Where the blobs live in S3-compatible storage, and how to reach it. */
export interface S3Location {
  bucket: string;
  /** Prepended to every key ("" or ending in "/"), so one bucket can hold several deployments. */
  prefix: string;
  /** Endpoint of an S3-compatible server (MinIO, Ceph RGW, s3rver); undefined: AWS for the region. */
  endpoint: string | undefined;
  region: string;
  /** Path-style addressing (`endpoint/bucket/key`), which most self-hosted servers need. */
  forcePathStyle: boolean;
}

/**
 * Parts of a multipart upload. Blobs up to this size go up in one PutObject; larger ones in
 * parts of this size, a few at a time, so a failed part is retried alone.
 */
export const MULTIPART_PART_BYTES = 8 * 1024 * 1024;

/**
 * Blobs as objects `<prefix>ab/cd/<sha256>` in an S3-compatible bucket. An object appears
 * only once its upload completes (S3 never shows a partial PUT), so a key only ever holds
 * complete content, as the file store's rename gives. Credentials come from the AWS SDK's
 * standard chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or an instance role).
 */
export class S3BlobStore implements BlobStore {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;

  /** `clock` only decides which abandoned multipart uploads `sweepTemp` considers stale. */
  constructor(
    location: S3Location,
    private readonly clock: Clock = systemClock,
  ) {
    this.bucket = location.bucket;
    this.prefix = location.prefix;
    this.client = new S3Client({
      region: location.region,
      endpoint: location.endpoint,
      forcePathStyle: location.forcePathStyle,
      // The SDK's own retries with backoff cover throttling and brief outages.
      maxAttempts: 4,
    });
  }

  /** Hashes the bytes even when `sha256` is given, as the file store does: a wrong hash is a caller bug (INTERNAL). */
  async put(bytes: Uint8Array, sha256?: string): Promise<string> {
    if (sha256 !== undefined) checkSha256(sha256);
    const actual = createHash("sha256").update(bytes).digest("hex");
    if (sha256 !== undefined && sha256 !== actual) {
      throw new DomainError("INTERNAL", "blob content does not match its declared sha256", {
        cause: new Error(`declared ${sha256}, computed ${actual}`),
      });
    }
    if (await this.has(actual)) return actual;
    // lib-storage sends one PutObject below a part's size, a multipart upload above it, and
    // aborts the multipart upload if a part fails for good.
    await new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: this.keyOf(actual), Body: bytes, ContentLength: bytes.length },
      partSize: MULTIPART_PART_BYTES,
      queueSize: 4,
    }).done();
    return actual;
  }

  async get(sha256: string): Promise<Buffer> {
    const { body } = await this.read(sha256);
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  async read(sha256: string, range?: BlobRange): Promise<BlobRead> {
    const key = this.keyOf(sha256);
    try {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Range: range ? `bytes=${range.start}-${range.end}` : undefined,
        }),
      );
      const body = out.Body as Readable;
      const length = out.ContentLength ?? 0;
      // With a range, the total is after the slash of `Content-Range: bytes a-b/total`.
      const total = out.ContentRange ? Number(out.ContentRange.split("/")[1]) : length;
      const start = range ? Number(/bytes (\d+)-/.exec(out.ContentRange ?? "")?.[1] ?? range.start) : 0;
      return { size: total, start, end: start + length - 1, body };
    } catch (error) {
      if (isMissing(error)) throw notFound("blob", sha256);
      if (isStatus(error, 416) && range) {
        throw new DomainError("FAILED_PRECONDITION", `blob ${sha256} has no byte ${range.start}`);
      }
      throw error;
    }
  }

  async has(sha256: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.keyOf(sha256) }));
      return true;
    } catch (error) {
      if (isMissing(error)) return false;
      throw error;
    }
  }

  /** S3 deletes are idempotent: deleting a missing key succeeds. */
  async delete(sha256: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.keyOf(sha256) }));
  }

  async list(): Promise<string[]> {
    const found: string[] = [];
    for await (const { sha256 } of this.entries()) found.push(sha256);
    return found.sort();
  }

  /** One listing page (up to 1,000 keys) at a time. */
  async *entries(): AsyncGenerator<BlobEntry> {
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, ContinuationToken: token }),
      );
      for (const object of page.Contents ?? []) {
        const sha256 = this.sha256Of(object.Key ?? "");
        if (sha256 !== undefined) yield { sha256, modifiedAt: object.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /**
   * Aborts multipart uploads under this prefix started more than `maxAgeMs` ago: the parts
   * of a write whose process died, which S3 keeps (and bills) until aborted. A server that
   * cannot list multipart uploads (s3rver) has none to sweep; on AWS a bucket lifecycle rule
   * (AbortIncompleteMultipartUpload) does the same.
   */
  async sweepTemp(maxAgeMs: number = ONE_HOUR_MS): Promise<number> {
    const cutoff = this.clock.now().getTime() - maxAgeMs;
    let removed = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      let page;
      try {
        page = await this.client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: this.prefix,
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
          }),
        );
      } catch (error) {
        if (isStatus(error, 501)) return removed;
        throw error;
      }
      for (const upload of page.Uploads ?? []) {
        if ((upload.Initiated?.getTime() ?? Infinity) >= cutoff) continue;
        await this.client.send(
          new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.Key, UploadId: upload.UploadId }),
        );
        removed++;
      }
      if (!page.IsTruncated) return removed;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  /** The object key of a blob; throws INVALID_ARGUMENT for anything but a sha256. */
  keyOf(sha256: string): string {
    checkSha256(sha256);
    return `${this.prefix}${sha256.slice(0, 2)}/${sha256.slice(2, 4)}/${sha256}`;
  }

  /** The sha256 a key under this prefix names, or undefined for a foreign key. */
  private sha256Of(key: string): string | undefined {
    const rest = key.slice(this.prefix.length);
    const match = /^([0-9a-f]{2})\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(rest);
    if (!match || !SHA256_HEX.test(match[3]) || !match[3].startsWith(match[1] + match[2])) return undefined;
    return match[3];
  }
}

function isStatus(error: unknown, status: number): boolean {
  return error instanceof S3ServiceException && error.$metadata.httpStatusCode === status;
}

function isMissing(error: unknown): boolean {
  return (
    error instanceof S3ServiceException &&
    // A HEAD answer has no body, so its 404 carries only the generic name.
    (error.name === "NoSuchKey" || error.name === "NotFound")
  );
}
