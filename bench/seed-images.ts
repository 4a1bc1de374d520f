/**
 * Seeds the images table for the listing benchmark: many realistic rows from one
 * insert ... select over generate_series, without going through the upload path.
 */
import type postgres from "postgres";
import { startTimer } from "./lib.js";

/** The postgres.js client type the app uses (int8 as bigint). */
export type Db = postgres.Sql<{ bigint: bigint }>;

/** Shape of the seeded catalogue. */
export interface SeedPlan {
  rows: number;
  /** Creation times are spread evenly over this many days, ending at `now`. */
  spanDays: number;
  /** Zipf exponent of tag popularity (rank k drawn with probability ∝ k^-s). */
  zipfS: number;
}

const DEFAULT_ACCOUNT = "00000000-0000-4000-8000-000000000001";
const WEEK_MS = 7 * 86_400_000;

/**
 * 200 tags, most popular first. The last 30 are namespaced (`ns:name`), whose namespace is
 * also a tag term, as the catalogue's tagTerms makes it.
 */
export const VOCABULARY = [
  ...`woman man outdoors portrait landscape photo realistic animal city night nature sky street
  food dog cat car building water tree flower beach mountain snow sunset indoor people child
  girl boy smile dress hair eyes hat glasses red blue green black white yellow pink purple
  orange brown grey colorful monochrome closeup wide vintage modern fantasy scifi cyberpunk
  steampunk horror cute funny sad dark bright soft sharp blurry bokeh macro aerial underwater
  forest river lake ocean desert field garden park road bridge train bus bicycle motorcycle
  boat airplane horse cow sheep bird elephant bear zebra giraffe kitchen bedroom bathroom
  office library cafe restaurant market shop stadium sports tennis soccer baseball skiing
  surfing skateboard frisbee kite umbrella bag suitcase phone laptop book clock vase chair
  couch bed table window door mirror lamp candle cake pizza donut sandwich fruit apple banana
  orange-fruit broccoli carrot wine coffee tea bottle cup bowl knife spoon fork plate toy
  teddy rain fog storm winter summer autumn spring morning evening sculpture painting
  graffiti church castle tower village farm harbor`
    .split(/\s+/)
    .filter((t) => t !== ""),
  ..."style:anime style:photoreal style:watercolor style:oil style:sketch style:pixel style:lowpoly style:comic medium:film medium:digital medium:polaroid medium:ink lens:35mm lens:85mm lens:fisheye light:golden light:studio light:neon light:rim mood:calm mood:tense mood:joyful bird:lovebird bird:parrot bird:owl dog:corgi dog:husky cat:tabby cat:siamese era:1980s"
    .split(" "),
];

/** Lower bounds of each tag's slice of [0, 1) under Zipf(s): for width_bucket, one per tag. */
function zipfLowerBounds(n: number, s: number): number[] {
  const weights = Array.from({ length: n }, (_, k) => (k + 1) ** -s);
  const total = weights.reduce((a, b) => a + b, 0);
  const bounds: number[] = [];
  let acc = 0;
  for (const w of weights) {
    bounds.push(acc / total);
    acc += w;
  }
  return bounds;
}

/**
 * Seeds `plan.rows` public images of the default account in one insert ... select, ids
 * snowflake-like and increasing with created_at, then VACUUM ANALYZE and a CHECKPOINT (the
 * steady state of a live table: statistics current, the GIN pending list merged, the
 * visibility map set, and no checkpoint of the seed's writes landing inside the measurements).
 * Returns the milliseconds it took.
 */
export async function seedImages(sql: Db, plan: SeedPlan, now: Date): Promise<number> {
  if (VOCABULARY.length !== 200 || new Set(VOCABULARY).size !== 200) {
    throw new Error(`vocabulary must be 200 distinct tags, is ${VOCABULARY.length}`);
  }
  const spacingS = (plan.spanDays * 86400) / plan.rows;
  const elapsed = startTimer();
  await sql`
    with p as (
      select ${VOCABULARY}::text[] as vocab, ${zipfLowerBounds(VOCABULARY.length, plan.zipfS)}::float8[] as bounds,
             ${now}::timestamptz as now
    )
    insert into images (
      id, owner_id, sha256, file_name, media_type, width, height, byte_size, blurhash, phash,
      tags, tag_terms, nsfw_level, username, visibility, index_status,
      like_count, heart_count, laugh_count, cry_count, dislike_count, comment_count,
      stats_changed_at, created_at, updated_at
    )
    select
      ((floor(extract(epoch from s.created_at) * 1000)::bigint - 1577836800000) << 22) | (g & 4095),
      ${DEFAULT_ACCOUNT}::uuid,
      md5(g::text) || md5('glimpse-' || g::text),
      'seed-' || g || '.jpg',
      'image/jpeg',
      (array[512, 768, 832, 1024, 1216])[1 + floor(random() * 5)::int],
      (array[512, 768, 1024, 1216, 1536])[1 + floor(random() * 5)::int],
      40000 + floor(random() * 4000000)::bigint,
      '',
      floor((random() - 0.5) * 9.2e18)::bigint,
      t.tags,
      tt.terms,
      (case when r.nsfw < 0.80 then 0 when r.nsfw < 0.92 then 1 when r.nsfw < 0.98 then 2 else 3 end)::smallint,
      'user' || (1 + floor(power(random(), 2) * 2000)::int),
      1,
      2,
      r.reactions,
      floor(r.reactions * random() * 0.5)::int,
      floor(r.reactions * random() * 0.1)::int,
      floor(r.reactions * random() * 0.05)::int,
      floor(r.reactions * random() * 0.05)::int,
      r.comments,
      s.created_at,
      s.created_at,
      s.created_at
    from generate_series(1, ${plan.rows}::int) g
    cross join p
    -- Evenly spaced, with jitter under the spacing: still strictly increasing, so id order
    -- is creation order, as with real snowflakes.
    cross join lateral (
      select p.now - make_interval(secs => ${spacingS}::float8 * (${plan.rows}::int - g))
                   - make_interval(secs => random() * ${spacingS * 0.9}::float8) as created_at
    ) s
    -- 1-6 draws from the Zipf distribution (duplicates merge), sorted.
    cross join lateral (
      select array_agg(distinct pick.tag) as tags
      from (
        select p.vocab[width_bucket(random(), p.bounds)] as tag
        from generate_series(1, 1 + floor(random() * 6)::int + 0 * g)
      ) pick
    ) t
    cross join lateral (
      select array(
        select distinct term from unnest(t.tags || array(
          select split_part(x, ':', 1) from unnest(t.tags) x where position(':' in x) > 1
        )) term
      ) as terms
    ) tt
    -- Pareto-tailed counters: about half the images have no reaction, a few have thousands.
    cross join lateral (
      select floor(0.5 / power(1 - random(), 1 / 1.1))::int + 0 * g as reactions,
             floor(0.2 / power(1 - random(), 1 / 1.3))::int + 0 * g as comments,
             random() + 0 * g as nsfw
    ) r`;
  await sql`vacuum (analyze) images`;
  await sql`checkpoint`;
  return elapsed();
}

/** The tag pair that co-occurs most often, with its counts over all time and the last week. */
export async function pickTagPair(sql: Db, now: Date) {
  const [pair] = await sql<{ a: string; b: string; n: bigint }[]>`
    select a, b, count(*) as n
    from images, unnest(tag_terms) a, unnest(tag_terms) b
    where a < b
    group by a, b order by n desc, a, b limit 1`;
  const weekStart = new Date(now.getTime() - WEEK_MS);
  const [week] = await sql<{ n: bigint }[]>`
    select count(*) as n from images where tag_terms @> ${[pair.a, pair.b]}::text[] and created_at >= ${weekStart}`;
  return { tags: [pair.a, pair.b], allTime: Number(pair.n), week: Number(week.n) };
}

/** Facts about the seeded data, for the result file. */
export async function datasetFacts(sql: Db, now: Date) {
  const weekStart = new Date(now.getTime() - WEEK_MS);
  const [row] = await sql<
    {
      rows: bigint;
      week_rows: bigint;
      mean_tags: number;
      zero_reaction_rows: bigint;
      max_reactions: number;
      p99_reactions: number;
      zero_comment_rows: bigint;
      table_and_indexes: string;
    }[]
  >`
    select count(*) as rows,
           count(*) filter (where created_at >= ${weekStart}) as week_rows,
           round(avg(cardinality(tags)), 2)::float8 as mean_tags,
           count(*) filter (where reaction_count = 0) as zero_reaction_rows,
           max(reaction_count) as max_reactions,
           percentile_disc(0.99) within group (order by reaction_count) as p99_reactions,
           count(*) filter (where comment_count = 0) as zero_comment_rows,
           pg_size_pretty(pg_total_relation_size('images')) as table_and_indexes
    from images`;
  const top = await sql<{ tag: string; n: bigint }[]>`
    select tag, count(*) as n from images, unnest(tag_terms) tag group by tag order by n desc limit 5`;
  return {
    rows: Number(row.rows),
    week_rows: Number(row.week_rows),
    mean_tags: row.mean_tags,
    zero_reaction_rows: Number(row.zero_reaction_rows),
    max_reactions: row.max_reactions,
    p99_reactions: row.p99_reactions,
    zero_comment_rows: Number(row.zero_comment_rows),
    table_and_indexes: row.table_and_indexes,
    top_tag_terms: top.map((t) => ({ tag: t.tag, rows: Number(t.n) })),
  };
}
