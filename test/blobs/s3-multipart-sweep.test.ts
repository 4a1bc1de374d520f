import { createHash, randomBytes } from "node:crypto";
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ONE_HOUR_MS } from "../../src/blobs/blob-store.js";
import { MULTIPART_PART_BYTES, S3BlobStore } from "../../src/blobs/s3-blob-store.js";
import { ManualClock } from "../../src/clock.js";
import { freshLocation } from "../helpers/s3.js";
import { motoServerMissing, startMotoServer, useMotoCredentials, type TestMotoServer } from "../helpers/s3-moto.js";

/**
 * The S3 store's sweep of abandoned multipart uploads (`sweepTemp`) against moto's S3 server:
 * s3rver, which the other blob tests use, cannot list multipart uploads. moto reports one fixed
 * time as every upload's start, so the test reads that time back and moves the store's clock
 * around it instead of leaving uploads of different ages.
 */
const skipReason = motoServerMissing();
if (skipReason) console.warn(`S3 multipart sweep tests skipped: ${skipReason}`);

const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

describe.skipIf(skipReason !== undefined)("S3 sweep of abandoned multipart uploads (moto_server)", () => {
  let moto: TestMotoServer;
  let client: S3Client;

  beforeAll(async () => {
    useMotoCredentials();
    moto = await startMotoServer();
    client = new S3Client({ region: "us-east-1", endpoint: moto.endpoint, forcePathStyle: true });
  });
  afterAll(async () => {
    client?.destroy();
    await moto?.stop();
  });

  /** The multipart uploads the server holds under `prefix`, as it lists them. */
  async function uploadsUnder(prefix: string) {
    const page = await client.send(new ListMultipartUploadsCommand({ Bucket: moto.bucket, Prefix: prefix }));
    return page.Uploads ?? [];
  }

  /** What a replica that died mid-write leaves: a multipart upload begun, one part sent, never completed. */
  async function abandonUpload(key: string): Promise<string> {
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: moto.bucket, Key: key }));
    await client.send(
      new UploadPartCommand({ Bucket: moto.bucket, Key: key, UploadId, PartNumber: 1, Body: randomBytes(1024 * 1024) }),
    );
    return UploadId!;
  }

  it("aborts its prefix's uploads older than the bound, keeps younger ones, other prefixes' and complete blobs", async () => {
    const location = freshLocation(moto.endpoint);
    const clock = new ManualClock();
    const store = new S3BlobStore(location, clock);
    try {
      // Complete blobs: one in a single PUT, one through the store's own multipart upload.
      const small = randomBytes(1000);
      const large = randomBytes(MULTIPART_PART_BYTES + 4321);
      await store.put(small);
      await store.put(large);

      const deadKey = store.keyOf(sha(randomBytes(64)));
      const deadId = await abandonUpload(deadKey);
      // Another deployment sharing the bucket under a prefix that only starts like this one.
      const otherKey = `${location.prefix.slice(0, -1)}-other/${deadKey.slice(location.prefix.length)}`;
      const otherId = await abandonUpload(otherKey);

      // The store's finished multipart upload is no longer pending; only the abandoned one is.
      const pending = await uploadsUnder(location.prefix);
      expect(pending.map((u) => [u.Key, u.UploadId])).toEqual([[deadKey, deadId]]);
      const initiated = pending[0].Initiated!.getTime();
      expect(Number.isFinite(initiated)).toBe(true);

      clock.set(new Date(initiated + ONE_HOUR_MS - 60_000));
      expect(await store.sweepTemp(ONE_HOUR_MS)).toBe(0);
      expect((await uploadsUnder(location.prefix)).map((u) => u.UploadId)).toEqual([deadId]);

      clock.set(new Date(initiated + ONE_HOUR_MS + 60_000));
      expect(await store.sweepTemp(ONE_HOUR_MS)).toBe(1);
      expect(await uploadsUnder(location.prefix)).toEqual([]);
      await expect(
        client.send(new ListPartsCommand({ Bucket: moto.bucket, Key: deadKey, UploadId: deadId })),
      ).rejects.toMatchObject({ name: "NoSuchUpload" });

      expect((await uploadsUnder(otherKey)).map((u) => u.UploadId)).toEqual([otherId]);
      expect(await store.list()).toEqual([sha(small), sha(large)].sort());
      expect((await store.get(sha(small))).equals(small)).toBe(true);
      expect((await store.get(sha(large))).equals(large)).toBe(true);

      // Nothing left to abort: a second sweep finds nothing.
      expect(await store.sweepTemp(ONE_HOUR_MS)).toBe(0);
      await client.send(new AbortMultipartUploadCommand({ Bucket: moto.bucket, Key: otherKey, UploadId: otherId }));
    } finally {
      await store.close();
    }
  });
});
