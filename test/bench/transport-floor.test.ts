/**
 * bench/load/transport-floor.ts keeps answering what the load harness sends it: Health/Check on
 * grpc-js alone, and GetImage with only glimpse's read of the row, the same image glimpse itself
 * answers. No figure is asserted (they belong in bench/results/).
 */
import * as grpc from "@grpc/grpc-js";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckRequest, HealthCheckResponse, HealthCheckResponse_ServingStatus } from "nice-grpc-server-health/lib/proto/grpc/health/v1/health.js";
import { ReactionKind } from "../../src/gen/glimpse/image/v1/image.js";
import { GetImageRequest, GetImageResponse, ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { startTestApp, type TestApp } from "../helpers/app.js";
import { solidImage } from "../helpers/images.js";
import { freePort } from "../helpers/replicas.js";

const ROOT = path.resolve(import.meta.dirname, "../..");

/** Starts the floor server with `args` and waits for its ready line. */
async function startFloor(args: string[]): Promise<{ address: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(process.execPath, ["--import", "tsx", "bench/load/transport-floor.ts", "--port", String(port), ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.setEncoding("utf8");
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (chunk) => (out += chunk));
  while (!out.includes("transport floor:")) {
    const [chunk] = await Promise.race([once(child.stdout!, "data"), once(child, "exit").then(() => [null])]);
    if (chunk === null) throw new Error(`transport-floor.ts exited:\n${out}`);
    out += chunk;
  }
  return { address: `127.0.0.1:${port}`, child };
}

/** One unary call with the request and answer as bytes, as the load workers make it. */
function rawCall(address: string, method: string, request: Uint8Array): Promise<Buffer> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const identity = (bytes: Buffer) => bytes;
  return new Promise<Buffer>((resolve, reject) => {
    client.makeUnaryRequest(method, identity, identity, Buffer.from(request), (err, answer) => (err ? reject(err) : resolve(answer!)));
  }).finally(() => client.close());
}

describe("bench/load/transport-floor.ts", () => {
  let t: TestApp;
  const floors: ChildProcess[] = [];
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    for (const child of floors) {
      child.kill("SIGTERM");
      if (child.exitCode === null) await once(child, "exit");
    }
    await t?.close();
  });

  it("answers Health/Check on grpc-js alone", { timeout: 60_000 }, async () => {
    const floor = await startFloor([]);
    floors.push(floor.child);
    const answer = await rawCall(floor.address, "/grpc.health.v1.Health/Check", HealthCheckRequest.encode({ service: "" }).finish());
    expect(HealthCheckResponse.decode(answer).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });

  it("answers GetImage with the image glimpse answers, and NOT_FOUND for one that is not there", { timeout: 60_000 }, async () => {
    const images = t.client(ImageServiceDefinition);
    const { image: uploaded } = await images.uploadImage({
      content: await solidImage(24, 16, { r: 200, g: 40, b: 40 }, "png", 7),
      fileName: "floor.png",
      tags: ["floor"],
    });
    await images.addReaction({ imageId: uploaded!.id, kind: ReactionKind.REACTION_KIND_HEART });
    const { image: fromGlimpse } = await images.getImage({ id: uploaded!.id });

    const floor = await startFloor(["--call", "get-image", "--database", t.db.url]);
    floors.push(floor.child);
    const method = "/glimpse.image.v1.ImageService/GetImage";
    const answer = GetImageResponse.decode(await rawCall(floor.address, method, GetImageRequest.encode({ id: uploaded!.id, view: 0 }).finish()));
    // Every field but the content URL, which carries each server's own public address.
    expect({ ...answer.image, url: "" }).toEqual({ ...fromGlimpse, url: "" });

    const missing = await rawCall(floor.address, method, GetImageRequest.encode({ id: "123456789", view: 0 }).finish()).catch((e) => e);
    expect((missing as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
  });
});
