/**
 * Where an HNSW search's CPU time goes with the graph on the calling thread (`inline`) and on a
 * thread of its own (`worker`, as the server runs it): per search, the calling thread's CPU
 * time, the graph thread's, and the wall time, from /proc/self/task (per-thread CPU clocks,
 * 10 ms ticks, so the figures are averages over many searches). One search at a time; the
 * searches alternate between the two indexes in rounds.
 *
 *   node --import tsx bench/graph-thread.ts [--count 100000] [--queries 2000] [--rounds 3] [--write]
 *
 * --write saves bench/results/graph-thread.{json,md}.
 */
import { readdirSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { threadId } from "node:worker_threads";
import { VectorIndex } from "../src/vector/vector-index.js";
import { markdownTable, round, runBenchmark, runEnvironment, environmentMarkdown, writeResults } from "./lib.js";
import { clusteredVectors } from "./vectors.js";

const { values: flags } = parseArgs({
  options: {
    count: { type: "string", default: "100000" },
    dimension: { type: "string", default: "512" },
    queries: { type: "string", default: "2000" },
    rounds: { type: "string", default: "3" },
    k: { type: "string", default: "10" },
    ef: { type: "string", default: "64" },
    write: { type: "boolean", default: false },
  },
});
const COUNT = Number(flags.count);
const DIMENSION = Number(flags.dimension);
const QUERIES = Number(flags.queries);
const ROUNDS = Number(flags.rounds);
const K = Number(flags.k);
const EF = Number(flags.ef);

/** CPU ms used so far by each thread of this process, by thread id. */
function threadCpu(): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync("/proc/self/task")) {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    out.set(tid, (Number(fields[11]) + Number(fields[12])) * 10); // utime + stime, 10 ms ticks
  }
  return out;
}

await runBenchmark("graph-thread", async (cleanup) => {
  if (threadId !== 0) throw new Error("run on the main thread");
  const mainTid = String(process.pid); // the main thread's task id is the process id
  console.log(`${COUNT} x ${DIMENSION} clustered vectors, ${QUERIES} queries x ${ROUNDS} rounds, k ${K}, ef ${EF}`);
  const { vectors, queries } = clusteredVectors({ count: COUNT, dimension: DIMENSION, clusters: 100, queries: QUERIES, seed: 4 });
  const threads = ["inline", "worker"] as const;
  const indexes = new Map<(typeof threads)[number], VectorIndex>();
  for (const graphThread of threads) {
    const index = await VectorIndex.create({ modelId: "bench", dimension: DIMENSION, graphThread, initialCapacity: COUNT });
    cleanup.add(`dispose the ${graphThread} index`, async () => index.dispose());
    const started = performance.now();
    vectors.forEach((v, i) => index.upsert(BigInt(i + 1), v));
    await index.graphSettled();
    console.log(`${graphThread}: built in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    indexes.set(graphThread, index);
  }
  const totals = new Map(threads.map((t) => [t, { wall: 0, caller: 0, graph: 0, other: 0, searches: 0 }]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const graphThread of round % 2 === 0 ? threads : [...threads].reverse()) {
      const index = indexes.get(graphThread)!;
      const before = threadCpu();
      const started = performance.now();
      for (const q of queries) await index.searchHnsw(q, K, EF);
      const wall = performance.now() - started;
      const after = threadCpu();
      const t = totals.get(graphThread)!;
      t.wall += wall;
      t.searches += queries.length;
      for (const [tid, ms] of after) {
        const used = ms - (before.get(tid) ?? 0);
        if (tid === mainTid) t.caller += used;
        else if (used > 0) {
          // The busiest other thread is the graph's (worker); libuv's and V8's helpers use little.
          if (graphThread === "worker" && used > wall / 4) t.graph += used;
          else t.other += used;
        }
      }
    }
  }
  const us = (ms: number, n: number) => round((ms * 1000) / n, 1);
  const rows = threads.map((graphThread) => {
    const t = totals.get(graphThread)!;
    return {
      graph: graphThread,
      wall_us: us(t.wall, t.searches),
      calling_thread_cpu_us: us(t.caller, t.searches),
      graph_thread_cpu_us: us(t.graph, t.searches),
      other_threads_cpu_us: us(t.other, t.searches),
    };
  });
  const env = await runEnvironment();
  const markdown = [
    "# HNSW search: the graph on the calling thread or on its own",
    "",
    environmentMarkdown(env),
    `- ${COUNT} x ${DIMENSION} clustered unit vectors, k = ${K}, ef = ${EF}; ${QUERIES} queries x ${ROUNDS} rounds, one search at a time, the two indexes alternating by round`,
    "- CPU per search from /proc/self/task (10 ms ticks, averaged over every search)",
    "- command: `node --import tsx bench/graph-thread.ts --write`",
    "",
    markdownTable(
      ["graph", "wall us / search", "calling thread CPU us", "graph thread CPU us", "other threads CPU us"],
      rows.map((r) => [r.graph, r.wall_us, r.calling_thread_cpu_us, r.graph_thread_cpu_us, r.other_threads_cpu_us]),
    ),
    "",
  ].join("\n");
  console.log(markdown);
  if (flags.write) console.log("wrote", (await writeResults("graph-thread", { env, rows }, markdown)).join(", "));
});
