/**
 * Pruning index_log: how long the steps take that delete a large old log (each step deletes
 * what the previous one chose, at most 50,000 entries), what the table weighs before and
 * after, and what a replica's read of the log's tail costs with the pruned bound read in the
 * same statement against the read without it (the query before pruning existed), side by
 * side in one run. Entries are written straight into index_log (their content does not
 * matter to pruning): `--old` of them two days old, `--young` of them new.
 *
 *   npm run bench:log-prune [-- --old 1000000 --young 100000]
 */
import os from "node:os";
import { parseArgs } from "node:util";
import { createLogger } from "../src/logging/logger.js";
import { connect } from "../src/store/db.js";
import { EmbeddingsRepository, logEntryRows } from "../src/store/embeddings-repository.js";
import { migrate } from "../src/store/migrate.js";
import {
  createTempDatabase,
  environmentMarkdown,
  markdownTable,
  percentile,
  round,
  runBenchmark,
  runEnvironment,
  startTimer,
  writeResults,
} from "./lib.js";

const { values } = parseArgs({
  options: { old: { type: "string", default: "1000000" }, young: { type: "string", default: "100000" } },
});
const OLD = Number(values.old);
const YOUNG = Number(values.young);
const TAIL_READS = 400;

await runBenchmark("log-prune", async (cleanup) => {
  const env = await runEnvironment();
  const loadBefore = os.loadavg().map((x) => round(x, 2));
  const db = await createTempDatabase("glimpse_bench_prune");
  cleanup.add("database", () => db.drop());
  const logger = createLogger("warn");
  const sql = connect({ url: db.url, max: 2, logger });
  cleanup.add("pool", () => sql.end());
  await migrate(sql, logger);
  const embeddings = new EmbeddingsRepository(sql);

  const fill = startTimer();
  await sql`
    insert into index_log (image_id, op, model_id, created_at)
    select g, 2, 'bench', now() - interval '2 days' from generate_series(1, ${OLD}::bigint) g`;
  await sql`
    insert into index_log (image_id, op, model_id)
    select g, 2, 'bench' from generate_series(${OLD + 1}::bigint, ${OLD + YOUNG}::bigint) g`;
  await sql`vacuum analyze index_log`;
  const fillS = fill() / 1000;
  const size = async () => Number((await sql<{ bytes: bigint }[]>`select pg_total_relation_size('index_log') as bytes`)[0].bytes);
  const sizeBefore = await size();

  // A caught-up replica's read of the tail: nothing after the newest entry. Both queries
  // alternate, so drift on the shared machine falls on both.
  const newest = BigInt(OLD + YOUNG);
  const withoutBound = () => sql`
    ${logEntryRows(sql)}
    where l.seq > ${newest.toString()}
    order by l.seq limit 1000`;
  const tail = async () => {
    const samples = { with: [] as number[], without: [] as number[] };
    for (let i = 0; i < TAIL_READS; i++) {
      let t = startTimer();
      await embeddings.logAfter(newest, 1000);
      samples.with.push(t());
      t = startTimer();
      await withoutBound();
      samples.without.push(t());
    }
    return samples;
  };
  await tail(); // prepares both statements
  const tailBefore = await tail();

  const steps: { ms: number; deleted: number }[] = [];
  const cutoff = new Date(Date.now() - 86_400_000);
  for (;;) {
    const t = startTimer();
    const step = await embeddings.pruneLog(cutoff);
    steps.push({ ms: t(), deleted: step.deleted });
    if (step.deleted === 0 && steps.length > 1) break;
  }
  // Once pruned, what each replica's step costs every minute: nothing is old enough.
  const idle: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t = startTimer();
    await embeddings.pruneLog(cutoff);
    idle.push(t());
  }
  const deleted = steps.reduce((n, s) => n + s.deleted, 0);
  const upto = await embeddings.prunedUpto();
  const left = Number((await sql<{ n: bigint }[]>`select count(*) as n from index_log`)[0].n);
  const sizeAfterDelete = await size();
  await sql`vacuum index_log`;
  const sizeAfterVacuum = await size();
  const tailAfter = await tail();
  const loadAfter = os.loadavg().map((x) => round(x, 2));

  const deleting = steps.filter((s) => s.deleted > 0).map((s) => s.ms);
  const totalS = steps.reduce((n, s) => n + s.ms, 0) / 1000;
  const mib = (bytes: number) => round(bytes / 2 ** 20, 1);
  const tailRow = (name: string, s: { with: number[]; without: number[] }) => [
    name,
    round(percentile(s.with, 50), 3),
    round(percentile(s.without, 50), 3),
    round(percentile(s.with, 50) / percentile(s.without, 50), 2),
    round(percentile(s.with, 99), 3),
    round(percentile(s.without, 99), 3),
  ];
  const rows = {
    fillS,
    steps: steps.length,
    deleted,
    upto: upto.toString(),
    left,
    totalS,
    stepMsMedian: round(percentile(deleting, 50), 1),
    stepMsMax: round(Math.max(...deleting), 1),
    idleStepMsMedian: round(percentile(idle, 50), 2),
    sizeBefore,
    sizeAfterDelete,
    sizeAfterVacuum,
    tailBefore: { withP50: percentile(tailBefore.with, 50), withoutP50: percentile(tailBefore.without, 50) },
    tailAfter: { withP50: percentile(tailAfter.with, 50), withoutP50: percentile(tailAfter.without, 50) },
  };
  const markdown = [
    "# Pruning index_log",
    "",
    environmentMarkdown(env),
    `- ${OLD.toLocaleString("en")} entries two days old and ${YOUNG.toLocaleString("en")} new ones (written in ${round(fillS, 1)} s); retention one day`,
    `- load average (1, 5, 15 min) before ${loadBefore.join(" ")}, after ${loadAfter.join(" ")}`,
    "",
    markdownTable(
      ["steps", "entries deleted", "entries left", "pruned up to", "all steps s", "deleting step ms, median", "slowest step ms", "a step with nothing to prune, ms (median of 50)"],
      [[steps.length, deleted, left, upto.toString(), round(totalS, 2), rows.stepMsMedian, rows.stepMsMax, rows.idleStepMsMedian]],
    ),
    "",
    markdownTable(
      ["index_log", "before", "after the deletes", "after VACUUM"],
      [["table and indexes, MiB", mib(sizeBefore), mib(sizeAfterDelete), mib(sizeAfterVacuum)]],
    ),
    "",
    `A caught-up replica's read of the log's tail, ${TAIL_READS} reads each, alternating (ms):`,
    "",
    markdownTable(
      ["log", "p50 with the bound", "p50 without", "ratio", "p99 with", "p99 without"],
      [tailRow("before pruning", tailBefore), tailRow("after pruning", tailAfter)],
    ),
    "",
    "DELETE leaves the space to VACUUM (autovacuum does it in the background): the table stops",
    "growing, and new entries reuse the space; it shrinks on disk only with VACUUM FULL.",
  ].join("\n");
  console.log(markdown);
  const written = await writeResults("log-prune", { env, loadBefore, loadAfter, rows }, markdown);
  console.log(`wrote ${written.join(", ")}`);
});
