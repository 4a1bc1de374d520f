/**
 * The load harness's data set, built without the embedder: accounts, API keys, images with
 * tags of known selectivity, public and private, and clustered 512-d unit vectors written to
 * `embeddings` in the same transaction as their rows, so the `index_log` trigger feeds the
 * index as uploads do and the server builds its index exactly as in production.
 *
 * It is written once into a template database (`glimpse_load_tpl_...`, kept between runs);
 * every server the harness starts gets its own copy (`create database ... template ...`).
 */
import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import postgres from "postgres";
import { ADMIN_DATABASE_URL, startTimer } from "../lib.js";
import { clusteredVectors, makeRandom } from "../vectors.js";

export const DIMENSION = 512;
export const CLUSTERS = 150;
/** The model id the seeded embeddings carry; the servers are started with a test model of this id. */
export const MODEL_ID = "load-512";
/** Image i of the data set has id ID_BASE + i. */
export const ID_BASE = 1n << 40n;
const BATCH = 5_000;
/** Bumped when what seed() writes changes, so an older template is not reused. */
const DATA_VERSION = 2;
/** Images are created evenly over this many days before the seed ran (ListImages' periods). */
const SPAN_DAYS = 60;
/** Images per post: consecutive images share a post id. */
const POST_SIZE = 4;
/** Reaction kinds of the reactions table (like, heart, laugh, cry, dislike). */
const REACTION_KINDS = 5;

/** The default account (admin), created by the first migration. */
export const ADMIN_ACCOUNT = "00000000-0000-4000-8000-000000000001";

/** Ordinary accounts: each owns a share of the images and has one API key. */
export const USERS = [1, 2, 3, 4].map((n) => ({
  id: `00000000-0000-4000-8000-0000000000a${n}`,
  email: `load-user${n}@example.invalid`,
  username: `loaduser${n}`,
  // A fixed, printable secret (the key format's mark, then hex), so reruns and other processes
  // can use it without a round trip. Bench-only: these databases live on loopback for one run.
  secret: `glk_load${createHash("sha256").update(`glimpse-load-user-${n}`).digest("hex")}`,
}));

/** The admin key the harness starts servers with (GLIMPSE_ADMIN_KEY / adminKey). */
export const ADMIN_KEY = `glk_loadadmin${createHash("sha256").update("glimpse-load-admin").digest("hex")}`;

/** Tags carried by a fixed share of images (drawn independently per image). */
export const SHARE_TAGS = [
  { share: 0.001, tag: "permille1" },
  { share: 0.01, tag: "pct1" },
  { share: 0.1, tag: "pct10" },
  { share: 0.5, tag: "pct50" },
] as const;

/** Share of images that are public; the rest are private to their owner. */
const PUBLIC_SHARE = 0.9;

export function tagForShare(share: number): string {
  const found = SHARE_TAGS.find((t) => Math.abs(t.share - share) < 1e-9);
  if (!found) throw new Error(`no tag of share ${share}; shares: ${SHARE_TAGS.map((t) => t.share).join(", ")}`);
  return found.tag;
}

export interface SeedFacts {
  template: string;
  images: number;
  public_images: number;
  images_by_owner: Record<string, number>;
  tag_rows: Record<string, number>;
  seed_s?: number;
  migrated_by: string;
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** The template's name: the data set's size and the migrations that built its schema. */
async function templateName(root: string, images: number): Promise<string> {
  const files = (await readdir(path.join(root, "src", "store", "migrations"))).filter((f) => f.endsWith(".sql")).sort();
  const schema = createHash("sha256").update(files.join("\n")).digest("hex").slice(0, 8);
  return `glimpse_load_tpl_${images}_${schema}_v${DATA_VERSION}`;
}

/**
 * A template of this size and data version whose applied migrations are all among this
 * build's (an earlier schema): reusing it saves the seed, and the index snapshot kept for it.
 */
async function olderTemplate(root: string, images: number): Promise<string | undefined> {
  const files = (await readdir(path.join(root, "src", "store", "migrations"))).filter((f) => f.endsWith(".sql"));
  const known = new Set(files.map((f) => Number.parseInt(f, 10)));
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  let names: string[];
  try {
    const rows = await admin<{ datname: string }[]>`
      select datname from pg_database
      where datname like ${`glimpse_load_tpl_${images}_%_v${DATA_VERSION}`} order by datname`;
    names = rows.map((r) => r.datname);
  } finally {
    await admin.end();
  }
  for (const name of names) {
    const sql = postgres(withDatabase(ADMIN_DATABASE_URL, name), { max: 1, onnotice: () => {} });
    try {
      const applied = await sql<{ version: number }[]>`select version from schema_migrations`;
      if (applied.length > 0 && applied.every((r) => known.has(Number(r.version)))) return name;
    } catch {
      // not a finished template
    } finally {
      await sql.end();
    }
  }
  return undefined;
}

async function templateExists(name: string): Promise<boolean> {
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    const rows = await admin`select 1 from pg_database where datname = ${name}`;
    return rows.length > 0;
  } finally {
    await admin.end();
  }
}

/**
 * Makes sure the template database for `images` images exists, migrated by the build at
 * `root` (in a comparison, the oldest build, so every newer one migrates its copy forward).
 * Returns its name and facts about its data.
 */
export async function ensureTemplate(root: string, images: number, log = console.log): Promise<SeedFacts> {
  let name = await templateName(root, images);
  let seedS: number | undefined;
  const older = (await templateExists(name)) ? undefined : await olderTemplate(root, images);
  if (older) {
    log(`seed: reusing template ${older}, migrated by an earlier schema (servers migrate their copies forward)`);
    name = older;
  } else if (!(await templateExists(name))) {
    const elapsed = startTimer();
    const building = `${name}_building`;
    const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
    try {
      await admin`drop database if exists ${admin(building)} with (force)`;
      await admin`create database ${admin(building)}`;
    } finally {
      await admin.end();
    }
    try {
      log(`seed: migrating ${building} with ${root}`);
      await migrateWith(root, withDatabase(ADMIN_DATABASE_URL, building));
      await seed(withDatabase(ADMIN_DATABASE_URL, building), images, log);
      const admin2 = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
      try {
        await admin2`alter database ${admin2(building)} rename to ${admin2(name)}`;
      } finally {
        await admin2.end();
      }
    } catch (err) {
      const admin3 = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
      await admin3`drop database if exists ${admin3(building)} with (force)`.finally(() => admin3.end());
      throw err;
    }
    seedS = Math.round(elapsed() / 100) / 10;
    log(`seed: ${images} images in ${seedS} s -> template ${name}`);
  } else {
    log(`seed: reusing template ${name}`);
  }
  const facts = await describe(withDatabase(ADMIN_DATABASE_URL, name));
  return { template: name, ...facts, seed_s: seedS, migrated_by: root };
}

/** Runs the migrations of the build at `root` on `url`. */
async function migrateWith(root: string, url: string): Promise<void> {
  const { migrate } = (await import(pathToFileURL(path.join(root, "src", "store", "migrate.ts")).href)) as {
    migrate: (sql: unknown, logger: unknown) => Promise<number[]>;
  };
  const { createLogger } = (await import(pathToFileURL(path.join(root, "src", "logging", "logger.ts")).href)) as {
    createLogger: (level: string) => unknown;
  };
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await migrate(sql, createLogger("silent"));
  } finally {
    await sql.end();
  }
}

async function seed(url: string, images: number, log: (line: string) => void): Promise<void> {
  if (os.endianness() !== "LE") throw new Error("embeddings are stored little-endian; this writer assumes a little-endian host");
  const elapsed = startTimer();
  log(`seed: generating ${images} x ${DIMENSION} vectors in ${CLUSTERS} clusters`);
  const { vectors } = clusteredVectors({ count: images, dimension: DIMENSION, clusters: CLUSTERS, queries: 0, seed: 42 });
  log(`seed: vectors in ${(elapsed() / 1000).toFixed(1)} s`);
  const random = makeRandom(11);
  const owners = [ADMIN_ACCOUNT, ...USERS.map((u) => u.id)];
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    for (const u of USERS) {
      await sql`insert into accounts (id, email, username, is_admin) values (${u.id}::uuid, ${u.email}, ${u.username}, false)`;
      await sql`
        insert into api_keys (account_id, name, prefix, secret_hash)
        values (${u.id}::uuid, 'load', ${u.secret.slice(0, 12)}, ${createHash("sha256").update(u.secret, "utf8").digest()})`;
    }
    const tagCase = (bit: number) => sql`case when mask & ${1 << bit}::int <> 0 then ${SHARE_TAGS[bit].tag} end`;
    for (let start = 0; start < images; start += BATCH) {
      const end = Math.min(images, start + BATCH);
      const ids: string[] = [];
      const masks: number[] = [];
      const ownerOf: string[] = [];
      const visibility: number[] = [];
      const blob = new Float32Array((end - start) * DIMENSION);
      // Reactions: a skewed count per image (most have none or few, a few have many), each an
      // (account, kind) pair at most once, as the table's key requires.
      const reactionImage: string[] = [];
      const reactionAccount: string[] = [];
      const reactionKind: number[] = [];
      for (let i = start; i < end; i++) {
        const pairs = owners.length * REACTION_KINDS;
        const count = Math.floor(pairs * random() ** 4);
        const first = Math.floor(random() * pairs);
        for (let r = 0; r < count; r++) {
          const pair = (first + r) % pairs;
          reactionImage.push((ID_BASE + BigInt(i)).toString());
          reactionAccount.push(owners[Math.floor(pair / REACTION_KINDS)]);
          reactionKind.push((pair % REACTION_KINDS) + 1);
        }
        ids.push((ID_BASE + BigInt(i)).toString());
        let mask = 0;
        SHARE_TAGS.forEach((t, bit) => {
          if (random() < t.share) mask |= 1 << bit;
        });
        masks.push(mask);
        ownerOf.push(owners[Math.floor(random() * owners.length)]);
        visibility.push(random() < PUBLIC_SHARE ? 1 : 0);
        blob.set(vectors[i], (i - start) * DIMENSION);
      }
      await sql.begin(async (tx) => {
        // Image i was created (images - i) steps before now, a step being SPAN_DAYS / images.
        const step = (SPAN_DAYS * 86_400) / images;
        await tx`
          insert into images (id, owner_id, sha256, file_name, media_type, width, height, byte_size,
                              tags, tag_terms, visibility, index_status, post_id, created_at, updated_at, stats_changed_at)
          select u.id, u.owner, md5(u.id::text) || md5('glimpse-load-' || u.id::text),
                 'load-' || u.id || '.jpg', 'image/jpeg', 512, 512, 100000, t.tags, t.tags, u.vis, 2,
                 (${start}::bigint + u.n - 1) / ${POST_SIZE} + 1, c.at, c.at, c.at
          from unnest(${ids}::bigint[], ${masks}::int[], ${ownerOf}::uuid[], ${visibility}::smallint[]) with ordinality as u(id, mask, owner, vis, n)
          cross join lateral (
            select array_remove(array[${tagCase(0)}, ${tagCase(1)}, ${tagCase(2)}, ${tagCase(3)}]::text[], null) as tags
          ) t
          cross join lateral (
            select now() - make_interval(secs => (${images}::int - ${start}::int - u.n + 1) * ${step}::float8) as at
          ) c`;
        if (reactionImage.length > 0) {
          await tx`
            insert into reactions (image_id, account_id, kind)
            select * from unnest(${reactionImage}::bigint[], ${reactionAccount}::uuid[], ${reactionKind}::smallint[])`;
          // The counters on images follow the rows, as AddReaction keeps them.
          await tx`
            update images i set like_count = r.k1, heart_count = r.k2, laugh_count = r.k3, cry_count = r.k4, dislike_count = r.k5
            from (
              select image_id,
                     count(*) filter (where kind = 1)::int as k1, count(*) filter (where kind = 2)::int as k2,
                     count(*) filter (where kind = 3)::int as k3, count(*) filter (where kind = 4)::int as k4,
                     count(*) filter (where kind = 5)::int as k5
              from unnest(${reactionImage}::bigint[], ${reactionKind}::smallint[]) as x(image_id, kind)
              group by image_id
            ) r
            where i.id = r.image_id`;
        }
        await tx`
          insert into embeddings (image_id, model_id, dimension, vector)
          select u.id, ${MODEL_ID}, ${DIMENSION},
                 substring(${Buffer.from(blob.buffer)}::bytea from ((u.n - 1) * ${DIMENSION * 4} + 1)::int for ${DIMENSION * 4})
          from unnest(${ids}::bigint[]) with ordinality as u(id, n)`;
      });
      if ((end / BATCH) % 4 === 0 || end === images) log(`seed: ${end} / ${images} rows (${(elapsed() / 1000).toFixed(1)} s)`);
    }
    await sql`vacuum (analyze) images`;
    await sql`vacuum (analyze) reactions`;
    await sql`vacuum (analyze) embeddings`;
    await sql`checkpoint`;
  } finally {
    await sql.end();
  }
}

async function describe(url: string) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<{ n: string; pub: string }[]>`
      select count(*)::text as n, count(*) filter (where visibility = 1)::text as pub from images`;
    const owners = await sql<{ username: string; n: string }[]>`
      select a.username, count(*)::text as n from images i join accounts a on a.id = i.owner_id group by a.username order by 1`;
    const tags = await sql<{ tag: string; n: string }[]>`
      select tag, count(*)::text as n from images, unnest(tags) tag group by tag order by 1`;
    const [extra] = await sql<{ reactions: string; posts: string; week: string }[]>`
      select (select count(*) from reactions)::text as reactions,
             (select count(distinct post_id) from images)::text as posts,
             (select count(*) from images where created_at > now() - interval '7 days')::text as week`;
    return {
      images: Number(row.n),
      reactions: Number(extra.reactions),
      posts: Number(extra.posts),
      images_created_in_last_7_days: Number(extra.week),
      public_images: Number(row.pub),
      images_by_owner: Object.fromEntries(owners.map((o) => [o.username, Number(o.n)])),
      tag_rows: Object.fromEntries(tags.map((t) => [t.tag, Number(t.n)])),
    };
  } finally {
    await sql.end();
  }
}

/** Ids of public images (the like-image queries and GetImage targets), in a fixed shuffled order. */
export async function queryIds(template: string, count: number): Promise<string[]> {
  const sql = postgres(withDatabase(ADMIN_DATABASE_URL, template), { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<{ id: string }[]>`
      select id::text as id from images where visibility = 1 order by md5(id::text) limit ${count}`;
    return rows.map((r) => r.id);
  } finally {
    await sql.end();
  }
}

/** A copy of the template for one server; `drop` removes it. */
export async function cloneTemplate(template: string, label: string): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `glimpse_load_${label}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    await admin`create database ${admin(name)} template ${admin(template)}`;
  } finally {
    await admin.end();
  }
  return {
    name,
    url: withDatabase(ADMIN_DATABASE_URL, name),
    async drop() {
      const sql = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
      try {
        await sql`drop database if exists ${sql(name)} with (force)`;
      } finally {
        await sql.end();
      }
    },
  };
}
