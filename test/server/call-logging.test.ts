import { connect, constants } from "node:http2";
import { once } from "node:events";
import { ClientError, Metadata, Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageServiceDefinition, type BatchUploadImagesRequest } from "../../src/gen/glimpse/image/v1/image_service.js";
import { createLogger } from "../../src/logging/logger.js";
import { startTestApp, type TestApp } from "../helpers/app.js";
import { distinctPng } from "../helpers/images.js";

type Line = Record<string, unknown>;

/** Every JSON log line the app writes, and a way to wait for one. */
function capturedLog() {
  const lines: Line[] = [];
  const waiting: { match: (l: Line) => boolean; resolve: (l: Line) => void }[] = [];
  const logger = createLogger("info", (text) => {
    const line = JSON.parse(text) as Line;
    lines.push(line);
    for (const w of waiting.filter((w) => w.match(line))) w.resolve(line);
  });
  const until = (match: (l: Line) => boolean): Promise<Line> => {
    const seen = lines.find(match);
    return seen ? Promise.resolve(seen) : new Promise((resolve) => waiting.push({ match, resolve }));
  };
  return { logger, lines, until };
}

const callLine = (requestId: string) => (l: Line) => l.msg === "call" && l.requestId === requestId;

describe("call log lines", () => {
  let t: TestApp;
  const log = capturedLog();
  beforeAll(async () => {
    t = await startTestApp({}, { logger: log.logger });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("writes exactly one line for an ordinary call, with its status", async () => {
    const images = t.client(ImageServiceDefinition);
    const error = await images
      .getImage({ id: "999999" }, { metadata: Metadata({ "x-request-id": "log-plain-1" }) })
      .catch((e: unknown) => e);
    expect((error as ClientError).code).toBe(Status.NOT_FOUND);
    const line = await log.until(callLine("log-plain-1"));
    expect(line).toMatchObject({ method: "/glimpse.image.v1.ImageService/GetImage", code: "NOT_FOUND", level: "info" });
    expect(log.lines.filter(callLine("log-plain-1"))).toHaveLength(1);
  });

  it("logs a BatchUploadImages stream the client cancels as CANCELLED, not OK", async () => {
    const images = t.client(ImageServiceDefinition);
    const controller = new AbortController();
    const content = await distinctPng(301);
    // One item, then the client keeps its side open (never half-closes) and gives up on the call.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    async function* requests(): AsyncIterable<BatchUploadImagesRequest> {
      yield { request: { content, index: false } } as BatchUploadImagesRequest;
      await held;
    }
    const responses = images.batchUploadImages(requests(), {
      signal: controller.signal,
      metadata: Metadata({ "x-request-id": "log-cancel-1" }),
    });
    const consumed = (async () => {
      for await (const response of responses) {
        expect(response.result?.$case).toBe("image");
        controller.abort();
      }
    })();
    await consumed.catch(() => undefined);
    const line = await log.until(callLine("log-cancel-1"));
    release();
    expect(line).toMatchObject({ method: "/glimpse.image.v1.ImageService/BatchUploadImages", code: "CANCELLED" });
    expect(log.lines.filter(callLine("log-cancel-1"))).toHaveLength(1);
  });

  it("logs a call whose deadline passed before its handler started", async () => {
    // A raw HTTP/2 gRPC request with a deadline of zero and no message: grpc-js answers
    // DEADLINE_EXCEEDED by itself, before any middleware sees the call.
    const session = connect(`http://${t.address}`);
    try {
      const stream = session.request({
        [constants.HTTP2_HEADER_METHOD]: "POST",
        [constants.HTTP2_HEADER_PATH]: "/glimpse.image.v1.ImageService/GetImage",
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-timeout": "0n",
        "x-request-id": "log-deadline-1",
      });
      const [trailers] = (await once(stream, "response")) as [Record<string, string>];
      stream.resume();
      expect(Number(trailers["grpc-status"])).toBe(Status.DEADLINE_EXCEEDED);
      stream.close();
    } finally {
      session.close();
    }
    const line = await log.until(callLine("log-deadline-1"));
    expect(line).toMatchObject({
      method: "/glimpse.image.v1.ImageService/GetImage",
      code: "DEADLINE_EXCEEDED",
      handled: false,
    });
    expect(log.lines.filter(callLine("log-deadline-1"))).toHaveLength(1);
  });
});
