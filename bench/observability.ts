/**
 * What observing a call costs: a cheap call (GetImage of a small image, over gRPC, one in
 * flight) against three apps in this process, side by side in one run:
 *   - off:     GLIMPSE_METRICS=off, GLIMPSE_SLOW_CALL_MS=0 (no observing middleware at all)
 *   - metrics: the defaults (metrics on, slow-call line at 1000 ms), no tracing
 *   - traces:  the defaults plus OTLP tracing to a receiver in the load process
 * The calls come from a separate process (forked with --driver), in blocks of BLOCK calls,
 * the series rotating block by block; this process measures its own CPU time around each
 * block, so "server CPU per call" is the server's work alone (the three apps share it).
 *
 *   npm run bench:observability     (node --import tsx bench/observability.ts; about 1 min)
 */
import { fork, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { createChannel, createClientFactory, Metadata } from "nice-grpc";
import { ImageServiceDefinition } from "../src/gen/glimpse/image/v1/image_service.js";
import { startOtlpSink } from "../test/observability/otlp-sink.js";
import { distinctPng } from "../test/helpers/images.js";
import {
  environmentMarkdown,
  markdownTable,
  round,
  runBenchmark,
  runEnvironment,
  startBenchApp,
  summarise,
  writeResults,
} from "./lib.js";

const BLOCK = 100;
const WARMUP_ROUNDS = 5;
const ROUNDS = 40;

/** A request to the driver: run `count` GetImage calls one after another. */
interface Block {
  address: string;
  key: string;
  id: string;
  count: number;
}

if (process.argv.includes("--driver")) {
  await drive();
} else {
  await measure();
}

/** The load process: answers each block with its call latencies (ms); also hosts the OTLP receiver. */
async function drive(): Promise<void> {
  const sink = await startOtlpSink();
  const clients = new Map<string, ReturnType<typeof makeClient>>();
  function makeClient(address: string, key: string) {
    const channel = createChannel(address);
    return createClientFactory()
      .use(async function* (call, options) {
        return yield* call.next(call.request, { ...options, metadata: Metadata(options.metadata).set("authorization", `Bearer ${key}`) });
      })
      .create(ImageServiceDefinition, channel);
  }
  process.on("message", (message: Block | "stop") => {
    if (message === "stop") {
      void sink.close().then(() => process.exit(0));
      return;
    }
    void (async () => {
      let client = clients.get(message.address);
      if (!client) clients.set(message.address, (client = makeClient(message.address, message.key)));
      const latencies: number[] = [];
      for (let i = 0; i < message.count; i++) {
        const started = performance.now();
        await client.getImage({ id: message.id });
        latencies.push(performance.now() - started);
      }
      process.send!({ latencies, spans: sink.spans.length });
    })();
  });
  process.send!({ sink: sink.url });
}

async function measure(): Promise<void> {
  await runBenchmark("bench:observability", async (cleanup) => {
    const environment = await runEnvironment();
    const driver: ChildProcess = fork(fileURLToPath(import.meta.url), ["--driver"], {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    cleanup.add("stop the load process", async () => {
      if (driver.exitCode === null) {
        driver.send("stop");
        await once(driver, "exit");
      }
    });
    const [{ sink }] = (await once(driver, "message")) as [{ sink: string }];

    const configs = [
      { key: "off", label: "off (GLIMPSE_METRICS=off, GLIMPSE_SLOW_CALL_MS=0)", overrides: { metrics: false, slowCallMs: 0 } },
      { key: "metrics", label: "metrics on (defaults)", overrides: {} },
      { key: "traces", label: "metrics on + OTLP traces", overrides: { otlpEndpoint: sink } },
    ];
    const series = [];
    for (const config of configs) {
      const bench = await startBenchApp(cleanup, config.overrides);
      const { image } = await bench.images.uploadImage({ content: await distinctPng(1), index: false });
      series.push({ ...config, block: { address: `127.0.0.1:${bench.app.grpcPort}`, key: bench.adminKey, id: image!.id, count: BLOCK } });
    }

    const latencies = new Map(series.map((s) => [s.key, [] as number[]]));
    const cpuMicros = new Map(series.map((s) => [s.key, 0]));
    let spans = 0;
    for (let r = 0; r < WARMUP_ROUNDS + ROUNDS; r++) {
      for (let j = 0; j < series.length; j++) {
        const s = series[(j + r) % series.length];
        const before = process.cpuUsage();
        driver.send(s.block);
        const [reply] = (await once(driver, "message")) as [{ latencies: number[]; spans: number }];
        const used = process.cpuUsage(before);
        spans = reply.spans;
        if (r < WARMUP_ROUNDS) continue;
        latencies.get(s.key)!.push(...reply.latencies);
        cpuMicros.set(s.key, cpuMicros.get(s.key)! + used.user + used.system);
      }
    }

    const calls = ROUNDS * BLOCK;
    const results = series.map((s) => {
      const summary = summarise(latencies.get(s.key)!);
      const mean = latencies.get(s.key)!.reduce((a, b) => a + b, 0) / calls;
      return { key: s.key, label: s.label, ...summary, mean_ms: round(mean, 3), cpu_us_per_call: round(cpuMicros.get(s.key)! / calls, 1) };
    });
    const off = results[0];
    const rows = results.map((x) => [
      x.label,
      x.p50_ms,
      x.p99_ms,
      x.mean_ms,
      round(x.mean_ms / off.mean_ms, 3),
      x.cpu_us_per_call,
      round(x.cpu_us_per_call / off.cpu_us_per_call, 3),
    ]);
    const markdown = [
      "# Cost of observing a call",
      "",
      environmentMarkdown(environment),
      `- GetImage of a small PNG over gRPC, one call in flight, from a separate load process; ${ROUNDS} rounds of ${BLOCK} calls per series after ${WARMUP_ROUNDS} warm-up rounds, the series rotating block by block; server CPU is this process's CPU time around each block (all three apps live in it, only one is called at a time)`,
      `- spans received by the OTLP receiver (in the load process) over the run: ${spans}`,
      "",
      markdownTable(["series", "p50 ms", "p99 ms", "mean ms", "mean / off", "server CPU µs per call", "CPU / off"], rows),
      "",
    ].join("\n");
    console.log(markdown);
    await writeResults("observability", { environment, block: BLOCK, rounds: ROUNDS, results, spans }, markdown);
  });
}
