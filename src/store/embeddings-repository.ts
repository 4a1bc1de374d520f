import type { Caller, ImageFilter, ImageRecord } from "../catalogue/types.js";
import { IdList } from "../vector/id-list.js";
import type { Sql } from "./db.js";
import { filterConditions, readable, toImage, type ImageRow } from "./images-repository.js";

/** One stored embedding. */
export interface StoredEmbedding {
  imageId: bigint;
  modelId: string;
  vector: Float32Array;
}

/** One `index_log` entry joined with the vector it refers to (null once removed). */
export interface LogEntry {
  seq: bigint;
  imageId: bigint;
  op: "upsert" | "delete";
  modelId: string;
  /** The image's current vector for `modelId`; null for deletes and for vectors removed since. */
  vector: Float32Array | null;
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
    let after = -1n;
    for (;;) {
      const rows = await this.sql<{ image_id: bigint; vector: Uint8Array }[]>`
        select image_id, vector from embeddings
        where model_id = ${modelId} and image_id > ${after.toString()}
        order by image_id limit ${pageSize}`;
      if (rows.length === 0) return;
      yield rows.map((r) => ({ imageId: r.image_id, modelId, vector: bytesToVector(r.vector) }));
      after = rows[rows.length - 1].image_id;
    }
  }

  /** The newest log sequence number (0 when the log is empty). */
  async lastSeq(): Promise<bigint> {
    const [row] = await this.sql<{ seq: bigint | null }[]>`select max(seq) as seq from index_log`;
    return row.seq ?? 0n;
  }

  /** Log entries after `seq`, oldest first, with the vectors they refer to. */
  async logAfter(seq: bigint, limit = 1000): Promise<LogEntry[]> {
    const rows = await this.sql<
      { seq: bigint; image_id: bigint; op: number; model_id: string; vector: Uint8Array | null }[]
    >`
      select l.seq, l.image_id, l.op, l.model_id, e.vector
      from index_log l
      left join embeddings e on l.op = 1 and e.image_id = l.image_id and e.model_id = l.model_id
      where l.seq > ${seq.toString()}
      order by l.seq limit ${limit}`;
    return rows.map((r) => ({
      seq: r.seq,
      imageId: r.image_id,
      op: r.op === 1 ? "upsert" : "delete",
      modelId: r.model_id,
      vector: r.vector ? bytesToVector(r.vector) : null,
    }));
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
