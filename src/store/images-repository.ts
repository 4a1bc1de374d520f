import type postgres from "postgres";
import type {
  Annotations,
  Caller,
  Comment,
  ImageFilter,
  ImageRecord,
  ImageSort,
  IndexStatus,
  JsonObject,
  NsfwLevel,
  Period,
  ReactionKind,
  UpdatableField,
  Visibility,
} from "../catalogue/types.js";
import { INDEX_STATUSES, NSFW_LEVELS } from "../catalogue/types.js";
import type { Sql } from "./db.js";
import { fromSignedInt64, toSignedInt64 } from "./int64.js";
import { activeSpan, detached } from "../observability/call-scope.js";

/** A query target: the pool or a transaction. */
export type Db = Sql | postgres.TransactionSql<{ bigint: bigint }>;
export type Fragment = postgres.PendingQuery<postgres.Row[]>;

const VISIBILITY: Visibility[] = ["private", "public"];

const PERIOD_MS: Record<Exclude<Period, "all">, number> = {
  year: 365 * 86_400_000,
  month: 30 * 86_400_000,
  week: 7 * 86_400_000,
  day: 86_400_000,
};

/** The start of a period's window ending at `now`, or null for all time. */
export function periodStart(period: Period, now: Date): Date | null {
  return period === "all" ? null : new Date(now.getTime() - PERIOD_MS[period]);
}

/** Where a keyset page continues: after the row with this rank value and id. */
export interface Keyset {
  rank: number | null;
  id: bigint;
}

/** One page request against the images table. */
export interface ListQuery {
  filter: ImageFilter;
  caller: Caller;
  sort: ImageSort;
  /** The time periods are measured from (the walk's start for token walks). */
  now: Date;
  limit: number;
  after?: Keyset;
  offset?: number;
  /** Ranked walks: skip images whose counters changed after this time (no repeats). */
  rankedAsOf?: Date;
}

/** The columns of an images row that toImage reads. */
export interface ImageRow {
  id: bigint;
  owner_id: string;
  sha256: string;
  file_name: string;
  media_type: string;
  width: number;
  height: number;
  byte_size: bigint;
  blurhash: string;
  phash: bigint;
  tags: string[];
  nsfw_level: number;
  post_id: bigint | null;
  model_id: bigint | null;
  model_version_id: bigint | null;
  username: string;
  meta: JsonObject | null;
  annotations: Partial<Annotations>;
  visibility: number;
  index_status: number;
  index_error: string;
  like_count: number;
  heart_count: number;
  laugh_count: number;
  cry_count: number;
  dislike_count: number;
  comment_count: number;
  created_at: Date;
  updated_at: Date;
}

export function toImage(row: ImageRow): ImageRecord {
  return {
    id: row.id,
    ownerId: row.owner_id,
    sha256: row.sha256,
    fileName: row.file_name,
    mediaType: row.media_type,
    width: row.width,
    height: row.height,
    byteSize: Number(row.byte_size),
    blurhash: row.blurhash,
    phash: fromSignedInt64(row.phash),
    tags: row.tags,
    nsfwLevel: NSFW_LEVELS[row.nsfw_level],
    postId: row.post_id,
    modelId: row.model_id,
    modelVersionId: row.model_version_id,
    username: row.username,
    meta: row.meta,
    annotations: { classes: row.annotations.classes ?? {}, boxes: row.annotations.boxes ?? [] },
    visibility: VISIBILITY[row.visibility],
    indexStatus: INDEX_STATUSES[row.index_status],
    indexError: row.index_error,
    stats: {
      like: row.like_count,
      heart: row.heart_count,
      laugh: row.laugh_count,
      cry: row.cry_count,
      dislike: row.dislike_count,
      comments: row.comment_count,
    },
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

const nsfwCode = (level: NsfwLevel) => NSFW_LEVELS.indexOf(level);
const indexCode = (status: IndexStatus) => INDEX_STATUSES.indexOf(status);
const visibilityCode = (v: Visibility) => VISIBILITY.indexOf(v);

/** Joins SQL conditions with `and`; no conditions means true. */
function and(sql: Db, parts: Fragment[]): Fragment {
  if (parts.length === 0) return sql`true`;
  return parts.slice(1).reduce((acc, part) => sql`${acc} and ${part}`, parts[0]);
}

/** Rows the caller may read: its own, public ones, or every row for an admin. */
export function readable(sql: Db, caller: Caller): Fragment {
  return caller.isAdmin ? sql`true` : sql`(owner_id = ${caller.accountId} or visibility = 1)`;
}

/** The SQL form of a filter. Every condition is served by an index or a cheap recheck. */
export function filterConditions(sql: Db, filter: ImageFilter, caller: Caller, now: Date): Fragment {
  const c: Fragment[] = [readable(sql, caller)];
  if (filter.includeTags.length > 0) c.push(sql`tag_terms @> ${filter.includeTags}::text[]`);
  if (filter.excludeTags.length > 0) c.push(sql`not (tag_terms && ${filter.excludeTags}::text[])`);
  if (filter.username !== null) c.push(sql`lower(username) = lower(${filter.username}) and username <> ''`);
  if (filter.postId !== null) c.push(sql`post_id = ${filter.postId.toString()}`);
  if (filter.modelId !== null) c.push(sql`model_id = ${filter.modelId.toString()}`);
  if (filter.modelVersionId !== null) c.push(sql`model_version_id = ${filter.modelVersionId.toString()}`);
  if (filter.nsfw === true) c.push(sql`nsfw_level > 0`);
  if (filter.nsfw === false) c.push(sql`nsfw_level = 0`);
  if (filter.maxNsfwLevel !== null) c.push(sql`nsfw_level <= ${nsfwCode(filter.maxNsfwLevel)}`);
  const since = periodStart(filter.period, now);
  if (since !== null) c.push(sql`created_at >= ${since}`);
  if (filter.visibility !== null) c.push(sql`visibility = ${visibilityCode(filter.visibility)}`);
  if (filter.indexStatus !== null) c.push(sql`index_status = ${indexCode(filter.indexStatus)}`);
  if (filter.className !== null) c.push(sql`(annotations -> 'classes') ? ${filter.className}`);
  for (const [key, value] of Object.entries(filter.metaEquals)) c.push(sql`meta ->> ${key} = ${value}`);
  for (const key of filter.metaKeys) c.push(sql`meta ? ${key}`);
  return and(sql, c);
}

/** The rank column of a sort, or null when the sort is by id alone. */
export function rankColumn(sort: ImageSort): "reaction_count" | "comment_count" | null {
  if (sort === "most_reactions") return "reaction_count";
  if (sort === "most_comments") return "comment_count";
  return null;
}

function orderAndSeek(sql: Db, query: ListQuery): { seek: Fragment; order: Fragment } {
  const rank = rankColumn(query.sort);
  const after = query.after;
  if (rank === null) {
    const asc = query.sort === "oldest";
    const seek = after ? (asc ? sql`id > ${after.id.toString()}` : sql`id < ${after.id.toString()}`) : sql`true`;
    return { seek, order: asc ? sql`order by id asc` : sql`order by id desc` };
  }
  // (rank, id) <= (r, id - 1) is (rank, id) < (r, id) for integer ids, but PostgreSQL estimates
  // it better: with a short period it keeps the created_at index instead of walking the rank
  // index (bench/list.ts measured page 2 at 1.8 ms instead of 25 ms p50 on 100k images).
  const seek = after
    ? sql`(${sql(rank)}, id) <= (${after.rank ?? 0}, ${(after.id - 1n).toString()})`
    : sql`true`;
  return { seek, order: sql`order by ${sql(rank)} desc, id desc` };
}

const INT8_MAX = 2n ** 63n - 1n;

/** One image wanted by id, by a caller. */
interface ImageRead {
  id: bigint;
  caller: Caller;
}

/**
 * Gathers the image reads that arrive in one turn of the event loop and sends them to the
 * database together when the turn ends: concurrent GetImage calls cost one statement (one
 * round trip, one wake-up of one PostgreSQL backend) instead of one each. Nothing is kept
 * once answered: every read is sent after it was asked for, so it sees every write that
 * finished before. The batch runs outside any call (its time is no call's stage).
 */
class ImageReads {
  private waiting: { read: ImageRead; resolve: (row: ImageRow | undefined) => void; reject: (error: unknown) => void }[] =
    [];

  constructor(private readonly readMany: (wanted: readonly ImageRead[]) => Promise<(ImageRow | undefined)[]>) {}

  read(read: ImageRead): Promise<ImageRow | undefined> {
    return new Promise((resolve, reject) => {
      if (this.waiting.length === 0) detached(() => setImmediate(() => this.send()));
      this.waiting.push({ read, resolve, reject });
    });
  }

  private send(): void {
    const batch = this.waiting;
    this.waiting = [];
    // Whatever goes wrong answers the batch's reads; nothing may escape the timer callback.
    new Promise<(ImageRow | undefined)[]>((resolve) => resolve(this.readMany(batch.map((w) => w.read)))).then(
      (rows) => batch.forEach((w, i) => w.resolve(rows[i])),
      (error: unknown) => batch.forEach((w) => w.reject(error)),
    );
  }
}

/** Reads images, for every catalogue query. */
export class ImagesRepository {
  constructor(private readonly sql: Sql) {}

  private listQuery(query: ListQuery): Fragment {
    const sql = this.sql;
    const where = filterConditions(sql, query.filter, query.caller, query.now);
    const { seek, order } = orderAndSeek(sql, query);
    const stable = query.rankedAsOf ? sql`stats_changed_at <= ${query.rankedAsOf}` : sql`true`;
    return sql`
      select * from images
      where ${where} and ${seek} and ${stable}
      ${order}
      limit ${query.limit} offset ${query.offset ?? 0}`;
  }

  /** One page of images matching a filter, in the sort's order. */
  async list(query: ListQuery): Promise<ImageRecord[]> {
    const rows = (await this.listQuery(query)) as unknown as ImageRow[];
    return rows.map(toImage);
  }

  /** The plan PostgreSQL chooses for a page query (EXPLAIN, JSON), for tests and benchmarks. */
  async explainList(query: ListQuery, analyze = false): Promise<unknown> {
    const sql = this.sql;
    const rows = analyze
      ? await sql`explain (analyze, buffers, format json) ${this.listQuery(query)}`
      : await sql`explain (format json) ${this.listQuery(query)}`;
    return rows[0]["QUERY PLAN"];
  }

  /** How many images match a filter. */
  async count(filter: ImageFilter, caller: Caller, now: Date): Promise<number> {
    const sql = this.sql;
    const [row] = await sql<{ n: bigint }[]>`
      select count(*) as n from images where ${filterConditions(sql, filter, caller, now)}`;
    return Number(row.n);
  }

  /**
   * The image if it exists and the caller may read it. Reads on the pool that arrive in the
   * same turn of the event loop go to the database together, as one statement (see
   * {@link ImageReads}); each is still read after its call asked for it.
   */
  async get(id: bigint, caller: Caller, db: Db = this.sql): Promise<ImageRecord | undefined> {
    // A traced call's query keeps its own span (see traced-sql.ts); a transaction its own reads;
    // an id outside int8, which the database refuses, fails its own call and no other.
    const row =
      db !== this.sql || activeSpan() !== undefined || id > INT8_MAX || id < -INT8_MAX - 1n
        ? (await this.readMany(db, [{ id, caller }]))[0]
        : await this.reads.read({ id, caller });
    return row ? toImage(row) : undefined;
  }

  private readonly reads = new ImageReads((wanted) => this.readMany(this.sql, wanted));

  /**
   * Reads images by id, each as its caller may (the rule of readable()): the answer's n-th
   * entry is the n-th wanted image's row, or undefined. One statement whatever the number of
   * reads, reading only the columns toImage maps.
   */
  private async readMany(db: Db, wanted: readonly ImageRead[]): Promise<(ImageRow | undefined)[]> {
    // Whether each caller is an admin goes as 1 or 0: postgres.js sends an array of booleans as
    // one boolean, and a string 't' in a boolean[] parameter as false.
    const rows = await db<(ImageRow & { n: bigint })[]>`
      select r.n, i.id, i.owner_id, i.sha256, i.file_name, i.media_type, i.width, i.height, i.byte_size,
        i.blurhash, i.phash, i.tags, i.nsfw_level, i.post_id, i.model_id, i.model_version_id, i.username, i.meta,
        i.annotations, i.visibility, i.index_status, i.index_error, i.like_count, i.heart_count, i.laugh_count,
        i.cry_count, i.dislike_count, i.comment_count, i.created_at, i.updated_at
      from unnest(${wanted.map((w) => w.id.toString())}::bigint[], ${wanted.map((w) => w.caller.accountId)}::uuid[],
        ${wanted.map((w) => (w.caller.isAdmin ? 1 : 0))}::int[]) with ordinality as r (id, caller, admin, n)
      join images i on i.id = r.id and (r.admin = 1 or i.owner_id = r.caller or i.visibility = 1)`;
    const answers: (ImageRow | undefined)[] = new Array(wanted.length);
    for (const row of rows) answers[Number(row.n) - 1] = row;
    return answers;
  }

  /** The owner's image with these bytes, if one exists (upload deduplication). */
  async findByContent(ownerId: string, sha256: string, db: Db = this.sql): Promise<ImageRecord | undefined> {
    const [row] = await db<ImageRow[]>`select * from images where owner_id = ${ownerId} and sha256 = ${sha256}`;
    return row ? toImage(row) : undefined;
  }

  /** Number of images, of any owner, whose bytes are this blob. */
  async countByContent(sha256: string, db: Db = this.sql): Promise<number> {
    const [row] = await db<{ n: bigint }[]>`select count(*) as n from images where sha256 = ${sha256}`;
    return Number(row.n);
  }

  /** Which of these blobs at least one image, of any owner, references (one indexed query). */
  async referencedContent(sha256s: readonly string[], db: Db = this.sql): Promise<Set<string>> {
    if (sha256s.length === 0) return new Set();
    const rows = await db<{ sha256: string }[]>`
      select distinct sha256 from images where sha256 = any(${sha256s as string[]}::text[])`;
    return new Set(rows.map((r) => r.sha256));
  }

  /** Inserts a new image row; the caller has validated everything. */
  async insert(image: Omit<ImageRecord, "stats" | "updatedAt" | "indexError">, tagTerms: string[], db: Db) {
    const [row] = await db<ImageRow[]>`
      insert into images (
        id, owner_id, sha256, file_name, media_type, width, height, byte_size, blurhash, phash,
        tags, tag_terms, nsfw_level, post_id, model_id, model_version_id, username, meta,
        annotations, visibility, index_status, created_at, updated_at, stats_changed_at
      ) values (
        ${image.id.toString()}, ${image.ownerId}, ${image.sha256}, ${image.fileName}, ${image.mediaType},
        ${image.width}, ${image.height}, ${image.byteSize}, ${image.blurhash},
        ${toSignedInt64(image.phash).toString()}, ${image.tags}::text[], ${tagTerms}::text[],
        ${nsfwCode(image.nsfwLevel)}, ${image.postId?.toString() ?? null}, ${image.modelId?.toString() ?? null},
        ${image.modelVersionId?.toString() ?? null}, ${image.username},
        ${image.meta === null ? null : db.json(image.meta as postgres.JSONValue)},
        ${db.json(image.annotations as unknown as postgres.JSONValue)}, ${visibilityCode(image.visibility)},
        ${indexCode(image.indexStatus)}, ${image.createdAt}, ${image.createdAt}, ${image.createdAt}
      ) returning *`;
    return toImage(row);
  }

  /** Applies the named field changes; returns the updated image. */
  async update(
    id: bigint,
    changes: Partial<Pick<ImageRecord, UpdatableField>>,
    tagTerms: string[] | undefined,
    now: Date,
    db: Db,
  ): Promise<ImageRecord | undefined> {
    const set: Record<string, unknown> = { updated_at: now };
    if (changes.fileName !== undefined) set.file_name = changes.fileName;
    if (changes.tags !== undefined) {
      set.tags = changes.tags;
      set.tag_terms = tagTerms;
    }
    if (changes.username !== undefined) set.username = changes.username;
    if (changes.postId !== undefined) set.post_id = changes.postId?.toString() ?? null;
    if (changes.modelId !== undefined) set.model_id = changes.modelId?.toString() ?? null;
    if (changes.modelVersionId !== undefined) set.model_version_id = changes.modelVersionId?.toString() ?? null;
    if (changes.nsfwLevel !== undefined) set.nsfw_level = nsfwCode(changes.nsfwLevel);
    if (changes.meta !== undefined) set.meta = changes.meta === null ? null : db.json(changes.meta as postgres.JSONValue);
    if (changes.annotations !== undefined) set.annotations = db.json(changes.annotations as unknown as postgres.JSONValue);
    if (changes.visibility !== undefined) set.visibility = visibilityCode(changes.visibility);
    const [row] = await db<ImageRow[]>`
      update images set ${db(set as Record<string, postgres.SerializableParameter>)}
      where id = ${id.toString()} returning *`;
    return row ? toImage(row) : undefined;
  }

  /** Queues an image for indexing (index_status pending) and returns it. */
  async markPending(id: bigint, db: Db): Promise<ImageRecord> {
    const [row] = await db<ImageRow[]>`
      update images set index_status = 1, index_error = '', updated_at = now()
      where id = ${id.toString()} returning *`;
    return toImage(row);
  }

  /** Deletes the row; reactions, comments and idempotency records cascade. Never touches blobs. */
  async delete(id: bigint, db: Db): Promise<void> {
    await db`delete from images where id = ${id.toString()}`;
  }

  /** The image a previous upload with this request id produced, if any. */
  async findUploadRequest(
    accountId: string,
    requestId: string,
    db: Db = this.sql,
  ): Promise<{ imageId: bigint; deduplicated: boolean } | undefined> {
    const [row] = await db<{ image_id: bigint; deduplicated: boolean }[]>`
      select image_id, deduplicated from upload_requests
      where account_id = ${accountId} and request_id = ${requestId}`;
    return row ? { imageId: row.image_id, deduplicated: row.deduplicated } : undefined;
  }

  /** Remembers which image an upload request produced. */
  async recordUploadRequest(accountId: string, requestId: string, imageId: bigint, deduplicated: boolean, db: Db) {
    await db`
      insert into upload_requests (account_id, request_id, image_id, deduplicated)
      values (${accountId}, ${requestId}, ${imageId.toString()}, ${deduplicated})
      on conflict do nothing`;
  }

  /** Takes a transaction-long lock on an idempotency key, so retries racing each other queue. */
  async lockRequest(accountId: string, requestId: string, db: Db): Promise<void> {
    await db`select pg_advisory_xact_lock(hashtextextended(${accountId + "/" + requestId}, 11))`;
  }

  /**
   * Adds (delta 1) or removes (delta -1) one reaction of an account and moves the image's
   * counter in the same transaction. Returns whether anything changed.
   */
  async react(imageId: bigint, accountId: string, kind: ReactionKind, add: boolean, now: Date, db: Db) {
    const code = REACTION_CODES[kind];
    const changed = add
      ? await db`
          insert into reactions (image_id, account_id, kind, created_at)
          values (${imageId.toString()}, ${accountId}, ${code}, ${now})
          on conflict do nothing returning 1`
      : await db`
          delete from reactions
          where image_id = ${imageId.toString()} and account_id = ${accountId} and kind = ${code}
          returning 1`;
    if (changed.length === 0) return false;
    const column = `${kind}_count`;
    await db`
      update images set ${db(column)} = ${db(column)} + ${add ? 1 : -1}, stats_changed_at = ${now}
      where id = ${imageId.toString()}`;
    return true;
  }

  /** Stores a comment and bumps the image's comment count in the same transaction. */
  async addComment(comment: Comment, requestId: string | null, db: Db): Promise<void> {
    await db`
      insert into comments (id, image_id, account_id, username, body, request_id, created_at)
      values (${comment.id.toString()}, ${comment.imageId.toString()}, ${comment.accountId},
              ${comment.username}, ${comment.text}, ${requestId}, ${comment.createdAt})`;
    await db`
      update images set comment_count = comment_count + 1, stats_changed_at = ${comment.createdAt}
      where id = ${comment.imageId.toString()}`;
  }

  /** Comments of an image, oldest first, after the comment id `after`. */
  async listComments(imageId: bigint, after: bigint, limit: number): Promise<Comment[]> {
    const rows = await this.sql<CommentRow[]>`
      select * from comments where image_id = ${imageId.toString()} and id > ${after.toString()}
      order by id limit ${limit}`;
    return rows.map(toComment);
  }

  /** The display name of an account, for comments. */
  async accountUsername(accountId: string, db: Db): Promise<string> {
    const [row] = await db<{ username: string }[]>`select username from accounts where id = ${accountId}`;
    return row?.username ?? "";
  }

  /** The comment an earlier AddComment with this request id made, if any. */
  async findCommentRequest(accountId: string, requestId: string, db: Db): Promise<Comment | undefined> {
    const [row] = await db<CommentRow[]>`
      select * from comments where account_id = ${accountId} and request_id = ${requestId}`;
    return row ? toComment(row) : undefined;
  }
}

interface CommentRow {
  id: bigint;
  image_id: bigint;
  account_id: string;
  username: string;
  body: string;
  created_at: Date;
}

function toComment(r: CommentRow): Comment {
  return { id: r.id, imageId: r.image_id, accountId: r.account_id, username: r.username, text: r.body, createdAt: r.created_at };
}

const REACTION_CODES: Record<ReactionKind, number> = { like: 1, heart: 2, laugh: 3, cry: 4, dislike: 5 };

/** An open transaction, opaque to services: they only hand it back to repository methods. */
export type Tx = Db;

/** Runs `fn` in one transaction on `sql`. */
export async function transaction<T>(sql: Sql, fn: (tx: Tx) => Promise<T>): Promise<T> {
  // PostgreSQL may end a transaction caught in a deadlock (or a serialization conflict): it
  // rolled back whole, so running it again is safe, and is what the caller wants.
  for (let attempt = 1; ; attempt++) {
    try {
      return (await sql.begin((tx) => fn(tx))) as T;
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      if (attempt >= 3 || (code !== "40P01" && code !== "40001")) throw error;
    }
  }
}

/**
 * Serialises, until the transaction ends, every change touching the blob with this sha256:
 * an upload re-storing it and a delete removing the last reference cannot interleave.
 */
export async function lockContent(sha256: string, tx: Tx): Promise<void> {
  await tx`select pg_advisory_xact_lock(hashtextextended(${sha256}, 7))`;
}

/** Hands out this process's snowflake worker number (0..1023), distinct across replicas. */
export async function takeWorkerId(sql: Sql): Promise<number> {
  const [row] = await sql<{ n: bigint }[]>`select nextval('snowflake_workers') as n`;
  return Number(row.n % 1024n);
}
