import type { Caller, ImageFilter, ImageRecord } from "../catalogue/types.js";
import { IdList } from "../vector/id-list.js";
import type postgres from "postgres";
import type { Sql } from "./db.js";
import { filterConditions, readable, toImage, type ImageRow } from "./images-repository.js";

/** One stored embedding. */
export interface StoredEmbedding {
  imageId: bigint;
  modelId: string;
  vector: Float32Array;
  attributes: ImageAttributes;
}

/** The image columns behind `ImageAttributes`, as selected by `ATTRIBUTE_COLUMNS`. */
interface AttributeRow {
  a_owner: string | null;
  a_visibility: number | null;
  a_status: number | null;
  a_terms: string[] | null;
  a_nsfw: number | null;
  a_post: bigint | null;
  a_model: bigint | null;
  a_version: bigint | null;
  a_username: string | null;
  a_classes: string[] | null;
  a_created: Date | null;
  a_name: string | null;
  a_tags: string[] | null;
}

function toAttributes(r: AttributeRow): ImageAttributes | null {
  if (r.a_owner === null) return null;
  return {
    ownerId: r.a_owner,
    isPublic: r.a_visibility === 1,
    indexed: r.a_status === INDEXED,
    tagTerms: r.a_terms ?? [],
    nsfwLevel: r.a_nsfw ?? 0,
    postId: r.a_post === null ? null : String(r.a_post),
    modelId: r.a_model === null ? null : String(r.a_model),
    modelVersionId: r.a_version === null ? null : String(r.a_version),
    username: r.a_username ?? "",
    classNames: r.a_classes ?? [],
    createdMs: r.a_created!.getTime(),
    fileName: r.a_name ?? "",
    tags: r.a_tags ?? [],
  };
}

/**
 * What the search filter index holds of an image: the attributes `filterConditions` tests
 * that live in columns (meta and free text stay in PostgreSQL).
 */
export interface ImageAttributes {
  ownerId: string;
  isPublic: boolean;
  /** index_status is indexed (PostgreSQL's candidate queries require it). */
  indexed: boolean;
  /** The tag terms (tags plus namespaces) a tag filter matches. */
  tagTerms: string[];
  /** 0 none .. 3 x. */
  nsfwLevel: number;
  postId: string | null;
  modelId: string | null;
  modelVersionId: string | null;
  username: string;
  /** The annotation class names. */
  classNames: string[];
  createdMs: number;
  /** Held for search results (not filtered on). */
  fileName: string;
  tags: string[];
}

/** One `index_log` entry joined with the vector and the attributes it refers to. */
export interface LogEntry {
  seq: bigint;
  imageId: bigint;
  /** upsert and delete concern the vector; attributes, the filter attributes alone. */
  op: "upsert" | "delete" | "attributes";
  modelId: string;
  /** The image's current vector for `modelId`; null for deletes and for vectors removed since. */
  vector: Float32Array | null;
  /** The image's current attributes; null once the image is gone. */
  attributes: ImageAttributes | null;
}

/** A run of `index_log` sequence numbers, both ends included. */
export interface SeqRange {
  from: bigint;
  to: bigint;
}

/** Where a reader that builds from the tables starts following the log (`logStart`). */
export interface LogStart {
  /** The newest sequence number (the pruned bound when the log is empty). */
  last: bigint;
  /** Runs below it with no committed entry yet. */
  holes: SeqRange[];
}

/** An `index_log` row as `logAfter` and `logWithin` select it. */
type LogRow = { seq: bigint; image_id: bigint; op: number; model_id: string; vector: Uint8Array | null } & AttributeRow;

function toLogEntry(r: LogRow): LogEntry {
  return {
    seq: r.seq,
    imageId: r.image_id,
    op: r.op === 1 ? "upsert" : r.op === 2 ? "delete" : "attributes",
    modelId: r.model_id,
    vector: r.vector ? bytesToVector(r.vector) : null,
    attributes: toAttributes(r),
  };
}

/** A pending image the indexer should embed. */
export interface PendingImage {
  id: bigint;
  sha256: string;
}

/** Index status codes as stored (see migration 0001). */
const PENDING = 1;
const INDEXED = 2;
const FAILED = 3;

/** float32 little-endian bytes, the `embeddings.vector` format. */
export function vectorToBytes(vector: Float32Array): Buffer {
  const out = Buffer.allocUnsafe(vector.length * 4);
  for (let i = 0; i < vector.length; i++) out.writeFloatLE(vector[i], i * 4);
  return out;
}

export function bytesToVector(bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.byteLength / 4);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/**
 * `index_log l` rows as LogRow: each entry with the current vector of its model (op 1) and its
 * image's attributes (ops 1 and 3). Callers add the where, order and limit.
 */
export function logEntryRows(sql: Sql | postgres.TransactionSql<{ bigint: bigint }>) {
  return sql`
    select l.seq, l.image_id, l.op, l.model_id, e.vector, ${attributeColumns(sql)}
    from index_log l
    left join embeddings e on l.op = 1 and e.image_id = l.image_id and e.model_id = l.model_id
    left join images i on l.op <> 2 and i.id = l.image_id`;
}

/** The `images i` columns `toAttributes` reads (all null when the join found no image). */
function attributeColumns(sql: Sql | postgres.TransactionSql<{ bigint: bigint }>) {
  return sql`
    i.owner_id::text as a_owner, i.visibility as a_visibility, i.index_status as a_status,
    i.tag_terms as a_terms, i.nsfw_level as a_nsfw, i.post_id as a_post, i.model_id as a_model,
    i.model_version_id as a_version, i.username as a_username,
    case when jsonb_typeof(i.annotations -> 'classes') = 'object'
      then array(select jsonb_object_keys(i.annotations -> 'classes')) else '{}'::text[] end as a_classes,
    i.created_at as a_created, i.file_name as a_name, i.tags as a_tags`;
}

/** Embeddings, the index log, and the image queries semantic search needs. */
export class EmbeddingsRepository {
  constructor(private readonly sql: Sql) {}

  /**
   * Stores vectors for indexed images and marks them indexed, in one transaction. Images
   * deleted meanwhile are skipped (their rows are gone, so nothing is written for them).
   */
  async storeIndexed(modelId: string, items: { imageId: bigint; vector: Float32Array }[]): Promise<void> {
    if (items.length === 0) return;
    await this.sql.begin(async (tx) => {
      for (const item of items) {
        const [image] = await tx`
          update images set index_status = ${INDEXED}, index_error = ''
          where id = ${item.imageId.toString()} and index_status = ${PENDING}
          returning id`;
        if (!image) continue;
        await tx`
          insert into embeddings (image_id, model_id, dimension, vector)
          values (${item.imageId.toString()}, ${modelId}, ${item.vector.length}, ${vectorToBytes(item.vector)})
          on conflict (image_id) do update
            set model_id = excluded.model_id, dimension = excluded.dimension,
                vector = excluded.vector, created_at = now()`;
      }
    });
  }

  /** Marks pending images failed with a reason; they are not retried until re-queued. */
  async markFailed(items: { imageId: bigint; error: string }[]): Promise<void> {
    for (const item of items) {
      await this.sql`
        update images set index_status = ${FAILED}, index_error = ${item.error.slice(0, 500)}
        where id = ${item.imageId.toString()} and index_status = ${PENDING}`;
    }
  }

  /** Up to `limit` pending images, oldest first. */
  async pending(limit: number): Promise<PendingImage[]> {
    const rows = await this.sql<{ id: bigint; sha256: string }[]>`
      select id, sha256 from images where index_status = ${PENDING} order by id limit ${limit}`;
    return rows.map((r) => ({ id: r.id, sha256: r.sha256 }));
  }

  /** The vector another image with the same bytes already has under this model, if any. */
  async vectorForContent(sha256: string, modelId: string): Promise<Float32Array | undefined> {
    const [row] = await this.sql<{ vector: Uint8Array }[]>`
      select e.vector from embeddings e join images i on i.id = e.image_id
      where i.sha256 = ${sha256} and e.model_id = ${modelId} limit 1`;
    return row ? bytesToVector(row.vector) : undefined;
  }

  /**
   * Makes every image indexed under another model (or another dimension) pending again and
   * drops those vectors, so a model change re-embeds everything rather than mixing vector
   * spaces.
   */
  async requeueOtherModels(modelId: string, dimension: number): Promise<number> {
    return this.sql.begin(async (tx) => {
      const rows = await tx`
        update images set index_status = ${PENDING}, index_error = ''
        where id in (
          select image_id from embeddings where model_id <> ${modelId} or dimension <> ${dimension}
        )
        returning id`;
      await tx`delete from embeddings where model_id <> ${modelId} or dimension <> ${dimension}`;
      return rows.length;
    });
  }

  /** Gives images that failed to index another try (at start-up: the cause may be gone). */
  async requeueFailed(): Promise<number> {
    const rows = await this.sql`
      update images set index_status = ${PENDING}, index_error = '' where index_status = ${FAILED} returning id`;
    return rows.length;
  }

  /** Those of these images that exist and wait to be indexed. */
  async pendingAmong(ids: bigint[]): Promise<bigint[]> {
    const rows = await this.sql<{ id: bigint }[]>`
      select id from images where id = any(${ids.map(String)}::bigint[]) and index_status = ${PENDING}`;
    return rows.map((r) => r.id);
  }

  /** Every stored vector of a model, in image-id order, a page at a time (index rebuild). */
  async *allVectors(modelId: string, pageSize = 2000): AsyncGenerator<StoredEmbedding[]> {
    const sql = this.sql;
    let after = -1n;
    for (;;) {
      const rows = await sql<({ image_id: bigint; vector: Uint8Array } & AttributeRow)[]>`
        select e.image_id, e.vector, ${attributeColumns(sql)}
        from embeddings e join images i on i.id = e.image_id
        where e.model_id = ${modelId} and e.image_id > ${after.toString()}
        order by e.image_id limit ${pageSize}`;
      if (rows.length === 0) return;
      yield rows.map((r) => ({
        imageId: r.image_id,
        modelId,
        vector: bytesToVector(r.vector),
        attributes: toAttributes(r)!,
      }));
      after = rows[rows.length - 1].image_id;
    }
  }

  /** Every log entry with a sequence number at or below this may have been pruned. */
  async prunedUpto(): Promise<bigint> {
    const [row] = await this.sql<{ upto: bigint }[]>`select upto from index_log_pruned`;
    return row.upto;
  }

  /**
   * Where a reader that builds from the tables starts following the log: the newest
   * sequence number, and the runs below it with no committed entry (rolled back, or held by
   * transactions still running), read in one snapshot. The reader re-reads those runs until
   * they fill or are known to stay empty (see `fence`). Numbers at or below the pruned bound
   * are settled (see `pruneLog`): none of them is a hole.
   */
  async logStart(): Promise<LogStart> {
    return this.sql.begin("isolation level repeatable read read only", async (tx) => {
      const [{ upto }] = await tx<{ upto: bigint }[]>`select upto from index_log_pruned`;
      const [top] = await tx<{ seq: bigint | null }[]>`select max(seq) as seq from index_log`;
      const holes = await tx<{ from: bigint; to: bigint }[]>`
        select prev + 1 as from, seq - 1 as to from (
          select seq, lag(seq, 1, ${upto.toString()}::bigint) over (order by seq) as prev
          from index_log where seq > ${upto.toString()}
        ) s
        where seq > prev + 1
        order by seq`;
      const last = top.seq !== null && top.seq > upto ? top.seq : upto;
      return { last, holes: holes.map((h) => ({ from: h.from, to: h.to })) };
    });
  }

  /**
   * One step of pruning the log (the schema's 0009 migration explains the two steps): deletes
   * the entries up to the bound chosen by an earlier step, once every transaction running when
   * it was chosen has ended, then chooses the next bound: the newest of the oldest `batch`
   * entries past the pruned ones that was written before `cutoff`. Steps on several replicas
   * take turns on the row that records them. Returns the entries deleted and the pruned bound.
   */
  async pruneLog(cutoff: Date, batch = 50_000): Promise<{ deleted: number; upto: bigint }> {
    return this.sql.begin(async (tx) => {
      const [state] = await tx<{ upto: bigint; candidate: bigint | null; candidate_fence: bigint | null; horizon: string }[]>`
        select upto, candidate, candidate_fence, pg_snapshot_xmin(pg_current_snapshot())::text as horizon
        from index_log_pruned for update`;
      let { upto } = state;
      let deleted = 0;
      const candidate = state.candidate;
      if (candidate !== null && state.candidate_fence !== null) {
        if (BigInt(state.horizon) <= state.candidate_fence) return { deleted, upto };
        const gone = await tx`delete from index_log where seq > ${upto.toString()} and seq <= ${candidate.toString()}`;
        deleted = gone.count;
        if (candidate > upto) upto = candidate;
      }
      // Nothing to choose unless the oldest entry left is old enough (one row read, the usual
      // case once the log is pruned). Else among the oldest `batch` entries past the bound, the
      // candidate ends before the first one written at or after the cutoff.
      const [oldest] = await tx<{ created_at: Date }[]>`
        select created_at from index_log where seq > ${upto.toString()} order by seq limit 1`;
      let chosen: bigint | null = null;
      if (oldest !== undefined && oldest.created_at < cutoff) {
        const [next] = await tx<{ candidate: bigint | null }[]>`
          with head as (
            select seq, created_at from index_log where seq > ${upto.toString()} order by seq limit ${batch}
          )
          select coalesce((select min(seq) from head where created_at >= ${cutoff}) - 1, (select max(seq) from head)) as candidate`;
        if (next.candidate !== null && next.candidate > upto) chosen = next.candidate;
      }
      await tx`
        update index_log_pruned set
          upto = ${upto.toString()},
          candidate = ${chosen === null ? null : chosen.toString()},
          candidate_fence = case when ${chosen !== null} then pg_current_xact_id()::text::bigint end`;
      return { deleted, upto };
    });
  }

  /**
   * A transaction id above every one assigned so far (it assigns one, to a transaction that
   * writes nothing). Taken after a reader saw a gap in the log: every transaction that may
   * still commit an entry in that gap took its sequence number, and so its id, before. That
   * "and so" holds because entries are written only by AFTER row triggers on `embeddings` and
   * `images`: the row write gave the transaction its id before the trigger took the number. An
   * insert into `index_log` as a transaction's first write would take the number first and
   * could get an id above the fence; keep log writes in those triggers.
   */
  async fence(): Promise<bigint> {
    const [row] = await this.sql<{ xid: string }[]>`select pg_current_xact_id()::text as xid`;
    return BigInt(row.xid);
  }

  /**
   * Log entries after `seq`, oldest first, with the vectors and attributes they refer to, and
   * the pruned bound in the same snapshot: when it is above `seq`, entries after `seq` may be
   * gone, and the entries read are not all there were.
   */
  async logAfter(seq: bigint, limit = 1000): Promise<{ entries: LogEntry[]; prunedUpto: bigint }> {
    const sql = this.sql;
    // One statement, so one snapshot; a row comes back even when no entry does. The outer
    // side is one row the planner knows is one (a join with the bound's table would be
    // estimated at a thousand, and the query's cost past the point where PostgreSQL compiles
    // it with JIT: 30-70 ms per call).
    const rows = await sql<(LogRow & { pruned_upto: bigint })[]>`
      select (select upto from index_log_pruned) as pruned_upto, x.*
      from (select) one
      left join lateral (
        ${logEntryRows(sql)}
        where l.seq > ${seq.toString()}
        order by l.seq limit ${limit}
      ) x on true
      order by x.seq`;
    return { entries: rows.filter((r) => r.seq !== null).map(toLogEntry), prunedUpto: rows[0].pruned_upto };
  }

  /**
   * Log entries within `ranges` (gaps a reader passed), oldest first, the horizon of the
   * snapshot they were read in (the oldest transaction id still running then; the next one to
   * be assigned when none was), and the pruned bound in that snapshot. A transaction whose id
   * is below the horizon had ended, so whatever it committed is among the entries, unless it
   * is at or below the pruned bound.
   */
  async logWithin(
    ranges: readonly SeqRange[],
    limit = 1000,
  ): Promise<{ entries: LogEntry[]; horizon: bigint; prunedUpto: bigint }> {
    if (ranges.length === 0) throw new RangeError("logWithin needs at least one range");
    return this.sql.begin("isolation level repeatable read read only", async (tx) => {
      // The first statement takes the transaction's snapshot; the entries are read in it too.
      const [h] = await tx<{ horizon: string; upto: bigint }[]>`
        select pg_snapshot_xmin(pg_current_snapshot())::text as horizon, (select upto from index_log_pruned) as upto`;
      const rows = await tx<LogRow[]>`
        ${logEntryRows(tx)}
        join unnest(${ranges.map((r) => r.from.toString())}::bigint[], ${ranges.map((r) => r.to.toString())}::bigint[]) as r(lo, hi)
          on l.seq between r.lo and r.hi
        order by l.seq limit ${limit}`;
      return { entries: rows.map(toLogEntry), horizon: BigInt(h.horizon), prunedUpto: h.upto };
    });
  }

  /**
   * Ids of the indexed images a caller may read that pass a filter, packed into one value
   * on the server so that tens of thousands of ids cost one round trip and one buffer.
   * `limit` stops early: a result of length limit means "at least this many".
   */
  async candidateIds(filter: ImageFilter, caller: Caller, now: Date, limit: number | null): Promise<IdList> {
    const sql = this.sql;
    const where = filterConditions(sql, filter, caller, now);
    const cap = limit === null ? sql`` : sql`limit ${limit}`;
    const [row] = await sql<{ ids: Uint8Array | null }[]>`
      select string_agg(int8send(id), ''::bytea) as ids from (
        select id from images where ${where} and index_status = ${INDEXED} ${cap}
      ) c`;
    return IdList.fromBigEndian(row.ids);
  }

  /**
   * Indexed images (passing the filter) whose text matches any word of the prompt, best
   * full-text rank first.
   */
  async textMatches(prompt: string, filter: ImageFilter, caller: Caller, now: Date, limit: number): Promise<bigint[]> {
    const sql = this.sql;
    const where = filterConditions(sql, filter, caller, now);
    const rows = await sql<{ id: bigint }[]>`
      with q as (
        select nullif(replace(plainto_tsquery('english', ${prompt})::text, '&', '|'), '')::tsquery as q
      )
      select id from images, q
      where q.q is not null and ${where} and index_status = ${INDEXED}
        and image_search_text(file_name, tags, meta) @@ q.q
      order by ts_rank(image_search_text(file_name, tags, meta), q.q) desc, id
      limit ${limit}`;
    return rows.map((r) => r.id);
  }

  /** The images with these ids that the caller may read, in no particular order. */
  async images(ids: bigint[], caller: Caller): Promise<ImageRecord[]> {
    if (ids.length === 0) return [];
    const sql = this.sql;
    const rows = await sql<ImageRow[]>`
      select * from images where id = any(${ids.map(String)}::bigint[]) and ${readable(sql, caller)}`;
    return rows.map(toImage);
  }

  /** Images whose perceptual hash is within `maxDistance` bits of `phash`, closest first. */
  async nearPhash(
    phash: bigint,
    maxDistance: number,
    exclude: bigint,
    caller: Caller,
    limit: number,
  ): Promise<{ image: ImageRecord; distance: number }[]> {
    const sql = this.sql;
    const signed = BigInt.asIntN(64, phash).toString();
    const rows = await sql<(ImageRow & { distance: number })[]>`
      select * from (
        select *, bit_count((phash # ${signed}::bigint)::bit(64))::int as distance from images
        where id <> ${exclude.toString()} and ${readable(sql, caller)}
      ) d
      where distance <= ${maxDistance}
      order by distance, id limit ${limit}`;
    return rows.map((r) => ({ image: toImage(r), distance: r.distance }));
  }
}
