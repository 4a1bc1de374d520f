import { createHash } from "node:crypto";
import { readFile, mkdtemp, rm, stat } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { ClientError, Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelEntry } from "../../src/embedding/registry.js";
import { IndexStatus } from "../../src/gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { writeClipTestModel } from "../fixtures/clip-test-model.js";
import { startTestApp } from "../helpers/app.js";
import { solidImage } from "../helpers/images.js";

const FILES = ["vocab.json", "merges.txt", "text_model.onnx", "vision_model.onnx"];

describe("a model pulled in the background", () => {
  let sourceDir: string;
  let server: Server;
  let entry: ModelEntry;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let requests = 0;

  beforeAll(async () => {
    sourceDir = await mkdtemp(path.join(tmpdir(), "glimpse-model-source-"));
    await writeClipTestModel(sourceDir);
    const files = [];
    for (const name of FILES) {
      const bytes = await readFile(path.join(sourceDir, name));
      files.push({ name, source: `onnx/${name}`, sha256: createHash("sha256").update(bytes).digest("hex") });
    }
    entry = { id: "test-clip", description: "test", repository: "acme/test-clip", revision: "main", dimension: 8, files };
    // Holds every download until the test opens the gate.
    server = createServer(async (req, res) => {
      requests++;
      await gate;
      const name = path.basename(req.url ?? "");
      if (!FILES.includes(name)) return res.writeHead(404).end();
      const bytes = await readFile(path.join(sourceDir, name));
      res.writeHead(200, { "content-length": bytes.length }).end(bytes);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });
  afterAll(async () => {
    release();
    await new Promise((resolve) => server.close(resolve));
    await rm(sourceDir, { recursive: true, force: true });
  });

  it("keeps uploads pending while it downloads, then indexes them and serves search", async () => {
    const { port } = server.address() as AddressInfo;
    const t = await startTestApp(
      { model: "test-clip", modelAutoPull: true, modelBaseUrl: `http://127.0.0.1:${port}` },
      { modelRegistry: [entry] },
    );
    try {
      const client = t.client(ImageServiceDefinition);
      const { image } = await client.uploadImage({ content: await solidImage(48, 48, { r: 240, g: 10, b: 10 }) });
      expect(image!.indexStatus).toBe(IndexStatus.INDEX_STATUS_PENDING);

      const err = await client.searchImages({ query: { $case: "prompt", value: "red" } }).catch((e) => e);
      expect(err).toBeInstanceOf(ClientError);
      // A state that passes by itself: UNAVAILABLE, which clients' retry policies retry.
      expect((err as ClientError).code).toBe(Status.UNAVAILABLE);
      expect((err as ClientError).details).toMatch(/download|loading/);
      expect(requests).toBeGreaterThan(0);

      release();
      await t.app.searchReady;
      let status = image!.indexStatus;
      for (let i = 0; i < 200 && status !== IndexStatus.INDEX_STATUS_INDEXED; i++) {
        await new Promise((resolve) => setTimeout(resolve, 25));
        status = (await client.getImage({ id: image!.id })).image!.indexStatus;
      }
      expect(status).toBe(IndexStatus.INDEX_STATUS_INDEXED);
      // The status commits with the vector; the index applies it a moment later (the indexer's
      // catch-up, or the log's NOTIFY), so the first search may come just before it.
      let res = await client.searchImages({ query: { $case: "prompt", value: "red" } });
      for (let i = 0; i < 100 && res.results.length === 0; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        res = await client.searchImages({ query: { $case: "prompt", value: "red" } });
      }
      expect(res.embeddingModel).toBe("test-clip");
      expect(res.results[0]?.id).toBe(image!.id);
      const installed = await stat(path.join(t.app.options.modelCacheDir, "test-clip", "vision_model.onnx"));
      expect(installed.isFile()).toBe(true);
    } finally {
      await t.close();
    }
  });
});
