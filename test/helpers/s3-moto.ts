import { spawn, spawnSync } from "node:child_process";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { TEST_BUCKET } from "./s3.js";

/**
 * moto's standalone server (`moto_server`, from Python's moto with its server extras): a real
 * S3 REST server that, unlike s3rver, answers ListMultipartUploads, so the sweep of abandoned
 * multipart uploads can run against it. Debian bookworm has no python3-moto; this machine's
 * image ships moto from PyPI.
 */
const MOTO_SERVER = "moto_server";

/** moto accepts any key; the AWS SDK still signs with one. */
const MOTO_KEY = "moto";

/** Why moto's tests cannot run here, or undefined when `moto_server` starts. */
export function motoServerMissing(): string | undefined {
  // A pyenv shim exists even where the active Python lacks moto, so ask the command itself.
  const probe = spawnSync(MOTO_SERVER, ["--help"], { stdio: "ignore", timeout: 30_000 });
  if (probe.status === 0) return undefined;
  return "no moto_server: install Python's moto with its server extras (pip install 'moto[server]')";
}

/** A moto server on loopback, with {@link TEST_BUCKET} created; it keeps everything in memory. */
export interface TestMotoServer {
  endpoint: string;
  bucket: string;
  stop(): Promise<void>;
}

/** Starts `moto_server` on 127.0.0.1 on a free port and creates {@link TEST_BUCKET}. */
export async function startMotoServer(): Promise<TestMotoServer> {
  const child = spawn(MOTO_SERVER, ["-H", "127.0.0.1", "-p", "0"], { stdio: ["ignore", "ignore", "pipe"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let log = "";
  const port = await new Promise<number>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      log += chunk.toString();
      // werkzeug names the port it bound once it listens.
      const match = /Running on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
      if (match) {
        child.stderr.off("data", onData);
        // Keep draining its request log so the pipe never fills and stalls it.
        child.stderr.resume();
        resolve(Number(match[1]));
      }
    };
    child.stderr.on("data", onData);
    child.once("error", reject);
    child.once("exit", (code, signal) => reject(new Error(`moto_server exited (${code ?? signal}) before listening:\n${log}`)));
  });
  const endpoint = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  const client = new S3Client({
    region: "us-east-1",
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: MOTO_KEY, secretAccessKey: MOTO_KEY },
  });
  try {
    await client.send(new CreateBucketCommand({ Bucket: TEST_BUCKET }));
  } catch (error) {
    await stop();
    throw error;
  } finally {
    client.destroy();
  }
  return { endpoint, bucket: TEST_BUCKET, stop };
}

/** Gives this process a key for moto through the standard variables, the way a deployment gives glimpse its own. */
export function useMotoCredentials(): void {
  process.env.AWS_ACCESS_KEY_ID = MOTO_KEY;
  process.env.AWS_SECRET_ACCESS_KEY = MOTO_KEY;
}
