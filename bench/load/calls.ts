/**
 * The scenarios beyond search and GetImage: GetImageContent, ListImages, StreamSearchImages,
 * GenerateImage, UploadImage and the mixed profile, over gRPC and over the HTTP bridge. Each
 * builds one call from a call number; a call that answers without the data it should carry
 * (no bytes, no results) fails with an outcome of its own, so a server that answers quickly
 * but wrongly does not pass as fast.
 */
import { createHash } from "node:crypto";
import http from "node:http";
import { createChannel, createClient, Metadata, type Channel } from "nice-grpc";
import sharp from "sharp";
import { GenerationServiceDefinition } from "../../src/gen/glimpse/generation/v1/generation_service.js";
import { Period } from "../../src/gen/glimpse/image/v1/image_filter.js";
import { ImageServiceDefinition, ImageSort } from "../../src/gen/glimpse/image/v1/image_service.js";
import type { Call, ScenarioSpec, SignalCall } from "./scenarios.js";

/** Scenarios this file builds: what each sends, the key it uses, and whether the bridge has a route. */
export const MORE_SCENARIOS: Record<string, { doc: string; key: "admin" | "user" | "none"; http: boolean }> = {
  "get-image-content": { doc: "GetImageContent of a 256x256 JPEG the harness uploaded before the run, admin key", key: "admin", http: true },
  "list-images": {
    doc: "ListImages, tags [pct50, pct10] (about 5% of images), IMAGE_SORT_MOST_REACTIONS, PERIOD_WEEK, 100 per page, ordinary key",
    key: "user",
    http: true,
  },
  "stream-search": { doc: "StreamSearchImages like_image_id, limit 1000, ordinary key; every result read", key: "user", http: true },
  generate: { doc: "GenerateImage with the local renderer (local:gradient, 1:1), ordinary key with credits granted", key: "user", http: true },
  upload: { doc: "UploadImage of a fresh 64x64 PNG made by the worker (unique per call), ordinary key, indexed", key: "user", http: true },
  mixed: { doc: "70% search-user, 20% list-images, 9% get-image, 1% upload, by call number, ordinary key", key: "user", http: true },
};

/** The two tags of the ListImages scenario: pct50 and pct10 together hold about 5% of images. */
export const LIST_TAGS = ["pct50", "pct10"];
export const LIST_PAGE_SIZE = 100;
export const STREAM_LIMIT = 1000;
export const GENERATE_MODEL = "local:gradient";

/** A failure the status does not show: the call answered OK without what it should carry. */
export function empty(what: string): Error {
  return Object.assign(new Error(`no ${what}`), { code: "EMPTY_RESULT" });
}

let uploads = 0;
/**
 * A small PNG no other call (of this or another worker) sends: its pixels come from a hash of
 * the worker's pid, a counter and the time, so every upload stores a new image.
 */
export async function freshImage(size = 64): Promise<Buffer> {
  const seed = createHash("sha256").update(`${process.pid}:${++uploads}:${process.hrtime.bigint()}`).digest();
  const pixels = Buffer.alloc(size * size * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = seed[i % seed.length] ^ (i * 7);
  return sharp(pixels, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
}

/** HTTP/1.1 keep-alive client of the bridge; a non-200 answer rejects with its status. */
export function httpClient(address: string, key: string) {
  const at = address.lastIndexOf(":");
  const host = address.slice(0, at).replace(/^\[|\]$/g, "");
  const port = Number(address.slice(at + 1));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1024 });
  const request = (method: string, pathName: string, body: unknown, signal: AbortSignal) =>
    new Promise<Buffer>((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = http.request(
        {
          host,
          port,
          method,
          path: pathName,
          agent,
          signal,
          headers: {
            authorization: `Bearer ${key}`,
            ...(payload ? { "content-type": "application/json", "content-length": payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            if (res.statusCode !== 200) return reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode ?? 0 }));
            resolve(Buffer.concat(chunks));
          });
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(payload);
    });
  return { request, close: () => agent.destroy() };
}

/** Builds the call of one of MORE_SCENARIOS, or returns undefined for another scenario. */
export function makeMoreCall(spec: ScenarioSpec): { call: Call; close(): void } | undefined {
  if (!MORE_SCENARIOS[spec.scenario]) return undefined;
  const id = (i: number) => spec.ids[i % spec.ids.length];
  const contentId = (i: number) => {
    if (!spec.contentIds?.length) throw new Error("get-image-content needs contentIds (uploaded by the harness before the run)");
    return spec.contentIds[i % spec.contentIds.length];
  };
  const uploadTags = ["load-upload"];
  const built = spec.target === "grpc" ? grpcCalls(spec, id, contentId, uploadTags) : httpCalls(spec, id, contentId, uploadTags);
  return { call: (i, timeoutMs) => built.call(i, AbortSignal.timeout(timeoutMs)), close: built.close };
}

function grpcCalls(spec: ScenarioSpec, id: (i: number) => string, contentId: (i: number) => string, uploadTags: string[]) {
  const channel: Channel = createChannel(spec.address, undefined, spec.grpcOptions);
  const metadata = Metadata({ authorization: `Bearer ${spec.key}` });
  const images = createClient(ImageServiceDefinition, channel, { "*": { metadata } });
  const generation = createClient(GenerationServiceDefinition, channel, { "*": { metadata } });

  const getContent: SignalCall = async (i, signal) => {
    const body = await images.getImageContent({ id: contentId(i) }, { signal });
    if (body.data.length === 0) throw empty("bytes");
  };
  const list: SignalCall = async (_i, signal) => {
    // An empty page is a right answer here (a small data set may have no match this week).
    await images.listImages(
      { filter: { tags: LIST_TAGS, period: Period.PERIOD_WEEK }, sort: ImageSort.IMAGE_SORT_MOST_REACTIONS, pageSize: LIST_PAGE_SIZE },
      { signal },
    );
  };
  const stream: SignalCall = async (i, signal) => {
    let n = 0;
    for await (const _ of images.streamSearchImages(
      { search: { query: { $case: "likeImageId", value: id(i) }, limit: STREAM_LIMIT } },
      { signal },
    )) {
      n++;
    }
    if (n === 0) throw empty("results");
  };
  const generate: SignalCall = async (i, signal) => {
    const res = await generation.generateImage({ prompt: `load test ${i}`, modelId: GENERATE_MODEL }, { signal });
    if (!res.generation?.content?.length) throw empty("bytes");
  };
  const upload: SignalCall = async (_i, signal) => {
    const content = await freshImage();
    const res = await images.uploadImage({ content, fileName: "load.png", tags: uploadTags }, { signal });
    if (!res.image) throw empty("image");
  };
  const search: SignalCall = async (i, signal) => {
    const res = await images.searchImages({ query: { $case: "likeImageId", value: id(i) }, limit: spec.k }, { signal });
    if (res.results.length === 0) throw empty("results");
  };
  const get: SignalCall = async (i, signal) => {
    await images.getImage({ id: id(i) }, { signal });
  };
  const calls: Record<string, SignalCall> = {
    "get-image-content": getContent,
    "list-images": list,
    "stream-search": stream,
    generate,
    upload,
    mixed: mixed({ search, list, get, upload }),
  };
  return { call: calls[spec.scenario], close: () => channel.close() };
}

function httpCalls(spec: ScenarioSpec, id: (i: number) => string, contentId: (i: number) => string, uploadTags: string[]) {
  const { request, close } = httpClient(spec.address, spec.key);
  const listQuery = [
    ...LIST_TAGS.map((t) => `filter.tags=${encodeURIComponent(t)}`),
    "filter.period=PERIOD_WEEK",
    "sort=IMAGE_SORT_MOST_REACTIONS",
    `pageSize=${LIST_PAGE_SIZE}`,
  ].join("&");

  const getContent: SignalCall = async (i, signal) => {
    const body = await request("GET", `/v1/images/${contentId(i)}/content`, undefined, signal);
    if (body.length === 0) throw empty("bytes");
  };
  const list: SignalCall = async (_i, signal) => {
    // An empty page is a right answer here too; the body must still be JSON.
    JSON.parse((await request("GET", `/v1/images?${listQuery}`, undefined, signal)).toString("utf8"));
  };
  const stream: SignalCall = async (i, signal) => {
    const text = (await request("POST", "/v1/images:streamSearch", { likeImageId: id(i), limit: STREAM_LIMIT }, signal)).toString("utf8");
    let n = 0;
    for (const line of text.split("\n")) {
      if (!line) continue;
      const msg = JSON.parse(line) as { result?: unknown; error?: { code?: number } };
      // An error after the first result ends the stream in a line of its own (status 200).
      if (msg.error) throw Object.assign(new Error("stream error"), { code: `STREAM_ERROR_${msg.error.code ?? ""}` });
      n++;
    }
    if (n === 0) throw empty("results");
  };
  const generate: SignalCall = async (i, signal) => {
    const res = JSON.parse((await request("POST", "/v1/generations", { prompt: `load test ${i}`, modelId: GENERATE_MODEL }, signal)).toString("utf8")) as {
      generation?: { content?: string };
    };
    if (!res.generation?.content) throw empty("bytes");
  };
  const upload: SignalCall = async (_i, signal) => {
    const content = (await freshImage()).toString("base64");
    const res = JSON.parse((await request("POST", "/v1/images", { content, fileName: "load.png", tags: uploadTags }, signal)).toString("utf8")) as {
      image?: unknown;
    };
    if (!res.image) throw empty("image");
  };
  const search: SignalCall = async (i, signal) => {
    const res = JSON.parse((await request("POST", "/v1/images:search", { likeImageId: id(i), limit: spec.k }, signal)).toString("utf8")) as {
      results?: unknown[];
    };
    if (!res.results?.length) throw empty("results");
  };
  const get: SignalCall = async (i, signal) => {
    await request("GET", `/v1/images/${id(i)}`, undefined, signal);
  };
  const calls: Record<string, SignalCall> = {
    "get-image-content": getContent,
    "list-images": list,
    "stream-search": stream,
    generate,
    upload,
    mixed: mixed({ search, list, get, upload }),
  };
  return { call: calls[spec.scenario], close };
}

/** The mixed profile: of every 100 call numbers, 70 search, 20 list, 9 get and 1 upload, interleaved. */
function mixed(c: { search: SignalCall; list: SignalCall; get: SignalCall; upload: SignalCall }): SignalCall {
  return (i, signal) => {
    // A stride coprime with 100 spreads each kind over the sequence instead of in runs.
    const slot = (i * 37) % 100;
    if (slot < 70) return c.search(i, signal);
    if (slot < 90) return c.list(i, signal);
    if (slot < 99) return c.get(i, signal);
    return c.upload(i, signal);
  };
}
