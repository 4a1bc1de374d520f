import { describe, expect, it } from "vitest";
import { ImageServiceDefinition, type SearchImagesRequest } from "../../src/gen/glimpse/image/v1/image_service.js";
import { slowestStage } from "../../src/server/middleware/observe.js";
import { captureLogger } from "../helpers/log.js";
import { startSearchTestApp } from "../helpers/search.js";
import { parseExposition, total } from "./exposition.js";

describe("the slow-call log line", () => {
  it("names the stage that took the time, above GLIMPSE_SLOW_CALL_MS, and only then", async () => {
    const { logger, records } = captureLogger();
    // A lone prompt waits the whole batching window before the text model runs: a slow embed.
    const t = await startSearchTestApp({ slowCallMs: 250, embedBatchWaitMs: 400 }, { logger });
    try {
      const client = t.client(ImageServiceDefinition);
      let requestId: string | undefined;
      await client.searchImages({ query: { $case: "prompt", value: "red" }, limit: 5 } as SearchImagesRequest, {
        onHeader: (header) => (requestId = header.get("x-request-id")),
      });
      await client.listImages({});

      const slow = records.filter((r) => r.msg === "slow call");
      const search = slow.filter((r) => r.method === "/glimpse.image.v1.ImageService/SearchImages");
      expect(search.length).toBe(1);
      expect(search[0]).toMatchObject({ level: "warn", requestId, transport: "grpc", code: "OK", stage: "embed" });
      expect(search[0].ms as number).toBeGreaterThanOrEqual(250);
      expect(search[0].stageMs as number).toBeGreaterThanOrEqual(350);
      expect(Object.keys(search[0].stages as object).sort()).toEqual(["embed", "hydrate", "rank"]);
      // A quick call writes no such line.
      expect(slow.some((r) => r.method === "/glimpse.image.v1.ImageService/ListImages")).toBe(false);

      const metrics = parseExposition(await (await fetch(`http://127.0.0.1:${t.app.httpPort}/metrics`)).text());
      expect(total(metrics, "glimpse_slow_calls_total", { method: "SearchImages", stage: "embed" })).toBe(1);
    } finally {
      await t.close();
    }
  });

  it("blames the handler's own time when no stage took most of it", () => {
    expect(slowestStage(new Map([["embed", 5]]), 100)).toEqual({ stage: "handler", ms: 95 });
    expect(slowestStage(new Map([["embed", 80], ["rank", 5]]), 100)).toEqual({ stage: "embed", ms: 80 });
    expect(slowestStage(new Map(), 12)).toEqual({ stage: "handler", ms: 12 });
  });
});
