import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import S3rver from "s3rver";
import type { S3Location } from "../../src/blobs/s3-blob-store.js";

/** The bucket every test S3 server starts with. */
export const TEST_BUCKET = "glimpse-test";

/** s3rver's built-in credentials; the AWS SDK reads them from the standard variables. */
const S3RVER_KEY = "S3RVER";

/** A real S3 REST server (s3rver) on loopback, storing under a temporary directory. */
export interface TestS3Server {
  endpoint: string;
  bucket: string;
  /** Where s3rver keeps the objects (tests age them by their file times, which it reports). */
  directory: string;
  stop(): Promise<void>;
}

/** Starts s3rver on 127.0.0.1 on a free port, with {@link TEST_BUCKET} created. */
export async function startS3Server(): Promise<TestS3Server> {
  const directory = await mkdtemp(path.join(tmpdir(), "glimpse-s3-"));
  const server = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory,
    vhostBuckets: false,
    configureBuckets: [{ name: TEST_BUCKET }],
  });
  const { port } = await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket: TEST_BUCKET,
    directory,
    async stop() {
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/**
 * Gives this process the credentials s3rver accepts, the way a deployment gives glimpse its
 * own: through AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
 */
export function useS3rverCredentials(): void {
  process.env.AWS_ACCESS_KEY_ID = S3RVER_KEY;
  process.env.AWS_SECRET_ACCESS_KEY = S3RVER_KEY;
}

/** A location of its own (a fresh key prefix) in the server's bucket, so tests never see each other's blobs. */
export function freshLocation(endpoint: string): S3Location {
  return {
    bucket: TEST_BUCKET,
    prefix: `t-${process.pid}-${randomBytes(4).toString("hex")}/`,
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
  };
}

/**
 * The file in which s3rver keeps an object: it reports the file's modification time as the
 * object's LastModified, so a test can place an object's write in the past.
 */
export function s3rverObjectFile(directory: string, bucket: string, key: string): string {
  return path.join(directory, bucket, `${key}._S3rver_object`);
}
