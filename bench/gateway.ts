/**
 * What the HTTP/JSON bridge adds to a call: the same RPCs over gRPC (nice-grpc client) and
 * over HTTP (fetch, keep-alive) against one running app, interleaved in rounds so both see
 * the same machine: GetImage, ListImages pages of 1 and 100, and the image bytes (gRPC
 * GetImageContent vs HTTP GET /v1/images/{id}/content).
 *
 *   npm run bench:gateway     (node --import tsx bench/gateway.ts)
 */
import { ImageView } from "../src/gen/glimpse/image/v1/image.js";
import { distinctPng } from "../test/helpers/images.js";
import {
  environmentMarkdown,
  markdownTable,
  round,
  runBenchmark,
  runEnvironment,
  startBenchApp,
  startTimer,
  summarise,
  writeResults,
  type LatencySummary,
} from "./lib.js";

const IMAGES = 120;
const WARMUP = 30;
const ROUNDS = 400;

await runBenchmark("bench:gateway", async (cleanup) => {
  const environment = await runEnvironment();
  const { app, images, adminKey } = await startBenchApp(cleanup);
  const base = `http://127.0.0.1:${app.httpPort}`;
  const headers = { authorization: `Bearer ${adminKey}` };
  let first = "";
  for (let i = 0; i < IMAGES; i++) {
    const { image } = await images.uploadImage({ content: await distinctPng(i), tags: ["bench"], index: false });
    first ||= image!.id;
  }

  const http = async (path: string, json = true) => {
    const res = await fetch(`${base}${path}`, { headers });
    if (res.status !== 200) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`);
    return json ? ((await res.json()) as unknown) : new Uint8Array(await res.arrayBuffer());
  };
  const series: { key: string; label: string; call: () => Promise<unknown> }[] = [
    { key: "get_grpc", label: "GetImage, gRPC", call: () => images.getImage({ id: first }) },
    { key: "get_http", label: "GetImage, HTTP GET /v1/images/{id}", call: () => http(`/v1/images/${first}`) },
    { key: "list1_grpc", label: "ListImages page of 1, gRPC", call: () => images.listImages({ pageSize: 1 }) },
    { key: "list1_http", label: "ListImages page of 1, HTTP", call: () => http(`/v1/images?pageSize=1`) },
    { key: "list100_grpc", label: "ListImages page of 100, gRPC", call: () => images.listImages({ pageSize: 100 }) },
    { key: "list100_http", label: "ListImages page of 100, HTTP", call: () => http(`/v1/images?pageSize=100`) },
    {
      key: "bytes_grpc",
      label: "image bytes, gRPC GetImage with content",
      call: () => images.getImage({ id: first, view: ImageView.IMAGE_VIEW_WITH_CONTENT }),
    },
    { key: "bytes_http", label: "image bytes, HTTP /v1/images/{id}/content", call: () => http(`/v1/images/${first}/content`, false) },
  ];
  const samples = new Map(series.map((s) => [s.key, [] as number[]]));
  for (let round_ = 0; round_ < WARMUP + ROUNDS; round_++) {
    // Rotate which series goes first, so none always runs on a warmer or colder machine.
    for (let j = 0; j < series.length; j++) {
      const s = series[(j + round_) % series.length];
      const elapsed = startTimer();
      await s.call();
      if (round_ >= WARMUP) samples.get(s.key)!.push(elapsed());
    }
  }
  const summaries: Record<string, LatencySummary> = {};
  for (const s of series) summaries[s.key] = summarise(samples.get(s.key)!);
  const pairs = [
    ["GetImage", "get"],
    ["ListImages, 1 per page", "list1"],
    ["ListImages, 100 per page", "list100"],
    ["image bytes", "bytes"],
  ] as const;
  const rows = pairs.map(([label, key]) => {
    const g = summaries[`${key}_grpc`];
    const h = summaries[`${key}_http`];
    return [label, g.p50_ms, g.p99_ms, h.p50_ms, h.p99_ms, round(h.p50_ms - g.p50_ms), round(h.p50_ms / g.p50_ms)];
  });
  const markdown = [
    "# HTTP/JSON bridge overhead",
    "",
    environmentMarkdown(environment),
    `- ${IMAGES} small PNGs; ${ROUNDS} measured rounds after ${WARMUP} warm-up, each round calls every series once (rotating order), one call in flight; client and server share one process; HTTP via fetch with keep-alive`,
    "",
    markdownTable(["call", "gRPC p50 ms", "gRPC p99 ms", "HTTP p50 ms", "HTTP p99 ms", "added p50 ms", "HTTP / gRPC"], rows),
    "",
    "The bridge decodes the JSON or query, encodes protobuf, calls the same server over a loopback gRPC channel, and renders proto3 JSON; the difference is that work plus the second hop.",
    "",
  ].join("\n");
  console.log(markdown);
  await writeResults("gateway", { environment, rounds: ROUNDS, images: IMAGES, summaries }, markdown);
});
