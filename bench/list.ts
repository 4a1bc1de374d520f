/**
 * ListImages latency over 100,000 seeded images, through the real gRPC server: the
 * "popular this week" page (two tags, MOST_REACTIONS, PERIOD_WEEK, 100 per page) and, side by
 * side in the same run, the same query over all time, NEWEST with the two tags, its page 2 via
 * page_token, NEWEST with no filter; plus bare-SQL series (no gRPC) of the main query, of
 * page 2 with the plain row comparison `< (r, id)` and with the `<= (r, id - 1)` form the repository uses.
 * Records each query's EXPLAIN (ANALYZE, BUFFERS) plan, and the plan the prepared statement
 * really runs once PostgreSQL's plan cache may have switched it to a generic plan.
 *
 *   npm run bench:list     (node --import tsx bench/list.ts)
 */
import postgres from "postgres";
import { Period } from "../src/gen/glimpse/image/v1/image_filter.js";
import { ImageSort, type DeepPartial, type ListImagesRequest } from "../src/gen/glimpse/image/v1/image_service.js";
import {
  environmentMarkdown,
  markdownTable,
  round,
  runBenchmark,
  runEnvironment,
  startBenchApp,
  startTimer,
  summarise,
  watchProcessStalls,
  writeResults,
  type LatencySummary,
  type ProcessStalls,
} from "./lib.js";
import { planSummary, preparedPlans, type PlanNode, type PreparedPlan } from "./plan.js";
import { datasetFacts, pickTagPair, seedImages, VOCABULARY, type Db, type SeedPlan } from "./seed-images.js";

const SEED: SeedPlan = { rows: 100_000, spanDays: 730, zipfS: 1.1 };
const WARMUP_ROUNDS = 20;
const MEASURED_ROUNDS = 300;
const PAGE_SIZE = 100;
const WEEK_MS = 7 * 86_400_000;

type Query = postgres.PendingQuery<postgres.Row[]>;

/** One measured series: a ListImages call over gRPC, or a statement on a plain connection. */
interface Series {
  key: string;
  label: string;
  via: string;
  /** One call; resolves to the number of images (gRPC) or rows (SQL) it returned. */
  call(): Promise<number>;
  /** The statement the repository's list() sends for it, rebuilt here for EXPLAIN. */
  sqlFor(sql: Db): Query;
}

/** What a ListImages page must look like, so a broken listing cannot pass as a fast one. */
function checkPage(
  key: string,
  images: { id: string; tags: string[]; stats?: { reactionCount: string } }[],
  terms: string[],
  byReactions: boolean,
): void {
  const has = (tags: string[], term: string) => tags.some((t) => t === term || t.startsWith(`${term}:`));
  for (const image of images) {
    for (const term of terms) if (!has(image.tags, term)) throw new Error(`${key}: image ${image.id} lacks ${term}`);
  }
  const rank = (i: number) => BigInt(images[i].stats?.reactionCount ?? "0");
  for (let i = 1; i < images.length; i++) {
    const idDown = BigInt(images[i - 1].id) > BigInt(images[i].id);
    const ordered = byReactions ? rank(i - 1) > rank(i) || (rank(i - 1) === rank(i) && idDown) : idDown;
    if (!ordered) throw new Error(`${key}: page out of order at position ${i}`);
  }
}

await runBenchmark("bench:list", async (cleanup) => {
  const environment = await runEnvironment();
  const bench = await startBenchApp(cleanup);
  const { app, images } = bench;
  const sql = app.sql;
  console.log(`app on 127.0.0.1:${app.grpcPort}, database ${bench.db.name}`);

  const seedMs = await seedImages(sql, SEED, new Date());
  const dataset = await datasetFacts(sql, new Date());
  const pair = await pickTagPair(sql, new Date());
  const tags = pair.tags;
  console.log(
    `seeded ${SEED.rows} images in ${(seedMs / 1000).toFixed(1)} s; pair ${tags.join(" + ")}: ` +
      `${pair.allTime} all time, ${pair.week} this week`,
  );

  // Page 1 of the main query gives page 2's token; a week of the pair must hold more than a page.
  const mainRequest: DeepPartial<ListImagesRequest> = {
    filter: { tags, period: Period.PERIOD_WEEK },
    sort: ImageSort.IMAGE_SORT_MOST_REACTIONS,
    pageSize: PAGE_SIZE,
  };
  const first = await images.listImages(mainRequest);
  if (first.nextPageToken === "") throw new Error(`the pair has only ${pair.week} images this week: no page 2`);
  const token = JSON.parse(Buffer.from(first.nextPageToken, "base64url").toString("utf8")) as { r: number; i: string; t: number };
  if (BigInt(token.i) !== BigInt(first.images[first.images.length - 1].id)) {
    throw new Error("page token does not continue after page 1's last image");
  }
  const walkStart = new Date(token.t);
  const weekBefore = (t: Date) => new Date(t.getTime() - WEEK_MS);

  // The statements images-repository builds (admin caller: the visibility condition is `true`).
  const weekByReactions = (s: Db) => s`
    select * from images
    where true and tag_terms @> ${tags}::text[] and created_at >= ${weekBefore(new Date())} and true and true
    order by reaction_count desc, id desc limit ${PAGE_SIZE + 1} offset ${0}`;
  const page2 = (s: Db) => s`
    select * from images
    where true and tag_terms @> ${tags}::text[] and created_at >= ${weekBefore(walkStart)}
      and (reaction_count, id) < (${token.r}, ${token.i}) and stats_changed_at <= ${walkStart}
    order by reaction_count desc, id desc limit ${PAGE_SIZE + 1} offset ${0}`;
  // The keyset condition the repository uses: PostgreSQL estimates a row comparison from its first
  // column alone, so `(reaction_count, id) < (0, i)` reads as reaction_count < 0 (no rows) and
  // the planner walks images_reactions expecting to stop at once. The equivalent
  // `<= (r, i - 1)` (ids are integers) reads as reaction_count <= 0, which is what such a walk
  // really scans, and keeps the index starting right at the key.
  const seekLe = (s: Db, rank: number, id: bigint) => s`(reaction_count, id) <= (${rank}, ${(id - 1n).toString()})`;
  const page2Suggested = (s: Db) => s`
    select * from images
    where true and tag_terms @> ${tags}::text[] and created_at >= ${weekBefore(walkStart)}
      and ${seekLe(s, token.r, BigInt(token.i))} and stats_changed_at <= ${walkStart}
    order by reaction_count desc, id desc limit ${PAGE_SIZE + 1} offset ${0}`;

  const direct: Db = postgres(bench.db.url, { max: 1, types: { bigint: postgres.BigInt }, onnotice: () => {} });
  cleanup.add("close direct connection", () => direct.end());

  const grpc = (key: string, label: string, request: DeepPartial<ListImagesRequest>, sqlFor: (s: Db) => Query): Series => {
    let checked = false;
    return {
      key,
      label,
      via: "gRPC ListImages",
      sqlFor,
      async call() {
        const page = await images.listImages(request);
        if (!checked) {
          const byReactions = request.sort === ImageSort.IMAGE_SORT_MOST_REACTIONS;
          checkPage(key, page.images, request.filter?.tags ?? [], byReactions);
          checked = true;
        }
        return page.images.length;
      },
    };
  };
  const bare = (key: string, label: string, sqlFor: (s: Db) => Query): Series => ({
    key,
    label,
    via: "SQL only (postgres.js)",
    sqlFor,
    async call() {
      return (await sqlFor(direct)).length;
    },
  });

  const series: Series[] = [
    grpc("main", "2 tags, MOST_REACTIONS, WEEK", mainRequest, weekByReactions),
    grpc(
      "all_time",
      "2 tags, MOST_REACTIONS, ALL_TIME",
      { filter: { tags, period: Period.PERIOD_ALL_TIME }, sort: ImageSort.IMAGE_SORT_MOST_REACTIONS, pageSize: PAGE_SIZE },
      (s) => s`
        select * from images where true and tag_terms @> ${tags}::text[] and true and true
        order by reaction_count desc, id desc limit ${PAGE_SIZE + 1} offset ${0}`,
    ),
    grpc(
      "newest_tags",
      "2 tags, NEWEST, ALL_TIME",
      { filter: { tags }, sort: ImageSort.IMAGE_SORT_NEWEST, pageSize: PAGE_SIZE },
      (s) => s`
        select * from images where true and tag_terms @> ${tags}::text[] and true and true
        order by id desc limit ${PAGE_SIZE + 1} offset ${0}`,
    ),
    grpc("page2", "main query, page 2 (page_token)", { ...mainRequest, pageToken: first.nextPageToken }, page2Suggested),
    grpc(
      "newest_all",
      "no filter, NEWEST",
      { sort: ImageSort.IMAGE_SORT_NEWEST, pageSize: PAGE_SIZE },
      (s) => s`select * from images where true and true and true order by id desc limit ${PAGE_SIZE + 1} offset ${0}`,
    ),
    bare("main_sql", "2 tags, MOST_REACTIONS, WEEK", weekByReactions),
    bare("page2_sql", "main query, page 2, plain row comparison `< (r, id)`", page2),
    bare("page2_suggested_sql", "main query, page 2, keyset `<= (r, id - 1)` (as the repository writes it)", page2Suggested),
  ];

  const samples = new Map<string, number[]>(series.map((s) => [s.key, []]));
  const rowsReturned = new Map<string, number>();
  let stopWatching: (() => ProcessStalls) | undefined;
  for (let r = 0; r < WARMUP_ROUNDS + MEASURED_ROUNDS; r++) {
    if (r === WARMUP_ROUNDS) stopWatching = watchProcessStalls();
    // Round-robin: every series once per round, so drift and noise touch all of them alike.
    for (const s of series) {
      const elapsed = startTimer();
      const rows = await s.call();
      const ms = elapsed();
      if (r === 0) rowsReturned.set(s.key, rows);
      if (r >= WARMUP_ROUNDS) samples.get(s.key)!.push(ms);
    }
  }
  const stalls = stopWatching!();
  const latency = new Map<string, LatencySummary>([...samples].map(([k, v]) => [k, summarise(v)]));
  const main = latency.get("main")!;

  type Explained = { Plan: PlanNode; "Planning Time": number; "Execution Time": number };
  const explain = async (query: Query) => {
    const [row] = await sql`explain (analyze, buffers, format json) ${query}`;
    return (row["QUERY PLAN"] as Explained[])[0];
  };
  const results = [];
  let mainPlan: Explained | undefined;
  for (const s of series) {
    const plan = await explain(s.sqlFor(sql));
    if (s.key === "main") mainPlan = plan;
    const prepared: PreparedPlan[] | null = await preparedPlans(bench.db.url, s.sqlFor, 8);
    const l = latency.get(s.key)!;
    results.push({
      key: s.key,
      label: s.label,
      via: s.via,
      rows_returned: rowsReturned.get(s.key),
      latency: l,
      p50_vs_main: round(l.p50_ms / main.p50_ms, 3),
      p99_vs_main: round(l.p99_ms / main.p99_ms, 3),
      explain: planSummary(plan),
      prepared_statement_plans: prepared,
    });
  }

  // The `<=` form must not hurt the walk the row comparison is there for: a deep ALL_TIME page
  // inside the large no-reaction group, where the index starts right at the key. The spelled-out
  // form `r <= 0 and (r < 0 or id < i)` estimates well too, but starts at the group's top.
  const [deep] = await sql<{ id: bigint }[]>`
    select id from images where tag_terms @> ${tags}::text[] and reaction_count = 0
    order by id desc offset 5000 limit 1`;
  const deepForms: [string, (s: Db, id: bigint) => Query][] = [
    ["plain: (reaction_count, id) < (0, id)", (s, id) => s`(reaction_count, id) < (${0}, ${id.toString()})`],
    ["repository: (reaction_count, id) <= (0, id - 1)", (s, id) => seekLe(s, 0, id)],
    [
      "spelled out: reaction_count <= 0 and (reaction_count < 0 or id < id)",
      (s, id) => s`reaction_count <= ${0} and (reaction_count < ${0} or id < ${id.toString()})`,
    ],
  ];
  const deepChecks = [];
  if (deep) {
    const now = new Date();
    for (const [label, seek] of deepForms) {
      const plan = await explain(sql`
        select * from images where true and tag_terms @> ${tags}::text[] and ${seek(sql, deep.id)}
          and stats_changed_at <= ${now}
        order by reaction_count desc, id desc limit ${PAGE_SIZE + 1} offset ${0}`);
      deepChecks.push({ form: label, after_id: deep.id.toString(), explain: planSummary(plan) });
    }
  }

  const json = {
    benchmark: "list",
    environment,
    config: {
      ...SEED,
      vocabulary: VOCABULARY.length,
      warmup_rounds: WARMUP_ROUNDS,
      measured_rounds: MEASURED_ROUNDS,
      page_size: PAGE_SIZE,
      caller: "default account (admin): the visibility condition is `true`",
      order: "round-robin: each round runs every series once, one call in flight",
      database_pool_max: app.options.databasePoolMax,
    },
    seed_s: round(seedMs / 1000, 1),
    dataset,
    tag_pair: pair,
    results,
    process_stalls_while_measuring: stalls,
    deep_all_time_page_in_zero_group: deepChecks,
    main_query_plan: mainPlan,
  };

  const table = markdownTable(
    ["query", "via", "rows", "p50 ms", "p99 ms", "p50 / main", "p99 / main", "plan (EXPLAIN ANALYZE)", "exec ms"],
    results.map((r) => [
      r.label,
      r.via,
      r.rows_returned ?? "",
      r.latency.p50_ms,
      r.latency.p99_ms,
      r.p50_vs_main,
      r.p99_vs_main,
      `\`${r.explain.tree}\``,
      r.explain.execution_ms ?? "",
    ]),
  );
  const preparedLines = results.map((r) => {
    const plans = r.prepared_statement_plans;
    if (!plans || plans.length === 0) return `- ${r.key}: auto_explain unavailable`;
    const last = plans[plans.length - 1];
    return `- ${r.key}: execution ${last.execution}: ${last.generic ? "generic" : "custom"} plan \`${last.tree}\``;
  });
  const deepLines = [
    "",
    "Deep ALL_TIME page of the two tags inside the no-reaction group (5,000 images in), EXPLAIN ANALYZE:",
    "",
    ...deepChecks.map((d) => `- ${d.form}: ${d.explain.execution_ms} ms, \`${d.explain.tree}\``),
  ];
  const markdown = [
    "# ListImages benchmark",
    "",
    environmentMarkdown(environment),
    `- ${SEED.rows} public images over ${SEED.spanDays} days (${dataset.week_rows} in the last week); tags Zipf(s=${SEED.zipfS}) ` +
      `over ${VOCABULARY.length}, 1-6 per image (mean ${dataset.mean_tags}); ${dataset.zero_reaction_rows} without reactions, ` +
      `max ${dataset.max_reactions}; seeded + VACUUM ANALYZE in ${round(seedMs / 1000, 1)} s`,
    `- tag pair (most frequent co-occurrence): ${tags.join(" + ")}: ${pair.allTime} images all time, ${pair.week} in the last week`,
    `- ${WARMUP_ROUNDS} warm-up then ${MEASURED_ROUNDS} measured rounds, round-robin over the series, page_size ${PAGE_SIZE}, one call in flight; ` +
      "client, server and benchmark share one Node process",
    "",
    table,
    "",
    `While measuring, this process spent ${stalls.gc_total_ms} ms in ${stalls.gc_count} GC pauses (longest ${stalls.gc_max_ms} ms); ` +
      `event-loop delay p99 ${stalls.event_loop_delay_p99_ms} ms, max ${stalls.event_loop_delay_max_ms} ms.`,
    "",
    "Plan of each prepared statement on its 8th execution (postgres.js prepares every query; PostgreSQL may",
    "switch to a generic plan after the 5th):",
    "",
    ...preparedLines,
    ...deepLines,
  ].join("\n");
  const written = await writeResults("list", json, markdown);
  console.log(markdown);
  console.log(`wrote ${written.join(", ")}`);
});
