import type { AspectRatio, ProviderId, ThinkingLevel } from "../generation/models.js";
import type { GenerationRecord } from "../generation/types.js";
import type { Sql } from "./db.js";
import type { Tx } from "./images-repository.js";

interface GenerationRow {
  id: string;
  account_id: string;
  request_id: string | null;
  status: number;
  prompt: string;
  model_id: string;
  provider_id: string;
  aspect_ratio: string;
  style: string;
  thinking_level: number;
  credit_cost: bigint;
  media_type: string;
  image_id: bigint | null;
  completed_at: Date | null;
}

const THINKING: (ThinkingLevel | null)[] = [null, "default", "deep"];

function toGeneration(r: GenerationRow): GenerationRecord {
  return {
    id: r.id,
    accountId: r.account_id,
    prompt: r.prompt,
    modelId: r.model_id,
    providerId: r.provider_id as ProviderId,
    aspectRatio: r.aspect_ratio as AspectRatio,
    style: r.style,
    thinkingLevel: THINKING[r.thinking_level] ?? null,
    mediaType: r.media_type,
    imageId: r.image_id,
    creditCost: r.credit_cost,
    createdAt: r.completed_at ?? new Date(0),
  };
}

/** A generation about to run, as its reservation records it. */
export interface NewGeneration {
  id: string;
  accountId: string;
  requestId: string | null;
  prompt: string;
  modelId: string;
  providerId: ProviderId;
  aspectRatio: AspectRatio;
  style: string;
  thinkingLevel: ThinkingLevel | null;
  creditCost: bigint;
}

/** What is known about the generation holding a request id. */
export type RequestState =
  | { state: "none" }
  | { state: "running"; id: string }
  | { state: "done"; generation: GenerationRecord };

/** Generations: running ones (credits reserved) and completed ones (charged). */
export class GenerationsRepository {
  constructor(private readonly sql: Sql) {}

  /**
   * Records a running generation. With a request id already held by another generation of the
   * account, inserts nothing and returns false (the unique index makes a racing insert wait for
   * the first one's transaction, then see it).
   */
  async insertRunning(g: NewGeneration, tx: Tx): Promise<boolean> {
    const rows = await tx`
      insert into generations (id, account_id, request_id, prompt, model_id, provider_id, aspect_ratio,
                               style, thinking_level, credit_cost)
      values (${g.id}, ${g.accountId}, ${g.requestId}, ${g.prompt}, ${g.modelId}, ${g.providerId},
              ${g.aspectRatio}, ${g.style}, ${THINKING.indexOf(g.thinkingLevel)}, ${g.creditCost.toString()})
      on conflict (account_id, request_id) where request_id is not null do nothing
      returning id`;
    return rows.length === 1;
  }

  /** Marks a running generation completed; undefined when it is no longer running (released). */
  async complete(
    id: string,
    imageId: bigint,
    mediaType: string,
    completedAt: Date,
    tx: Tx,
  ): Promise<GenerationRecord | undefined> {
    const [row] = await tx<GenerationRow[]>`
      update generations
      set status = 1, image_id = ${imageId.toString()}, media_type = ${mediaType}, completed_at = ${completedAt}
      where id = ${id} and status = 0
      returning *`;
    return row ? toGeneration(row) : undefined;
  }

  /** Whether a completed generation shows this image. */
  async imageInUse(imageId: bigint): Promise<boolean> {
    const [row] = await this.sql`select 1 from generations where image_id = ${imageId.toString()} and status = 1 limit 1`;
    return row !== undefined;
  }

  /**
   * Deletes a running generation and returns its reserved credits to the account, in one
   * statement; false when it was not running any more (already completed or released).
   */
  async release(id: string): Promise<boolean> {
    const rows = await this.sql`
      with gone as (
        delete from generations where id = ${id} and status = 0 returning account_id, credit_cost
      )
      update accounts a
      set credit_balance = a.credit_balance + gone.credit_cost,
          reserved_credits = a.reserved_credits - gone.credit_cost
      from gone where a.id = gone.account_id
      returning a.id`;
    return rows.length === 1;
  }

  /**
   * Releases every generation still running `olderThanMs` after its reservation (its process
   * died or lost the store); returns how many. Database time decides, so replicas agree.
   */
  async releaseAbandoned(olderThanMs: number): Promise<number> {
    const rows = await this.sql`
      with gone as (
        delete from generations
        where status = 0 and reserved_at < now() - ${olderThanMs} * interval '1 millisecond'
        returning account_id, credit_cost
      ), per_account as (
        select account_id, sum(credit_cost)::bigint as held, count(*) as n from gone group by account_id
      )
      update accounts a
      set credit_balance = a.credit_balance + p.held, reserved_credits = a.reserved_credits - p.held
      from per_account p where a.id = p.account_id
      returning p.n`;
    return rows.reduce((sum, r) => sum + Number(r.n), 0);
  }

  /** The generation holding an account's request id, if any. */
  async findByRequest(accountId: string, requestId: string): Promise<RequestState> {
    const [row] = await this.sql<GenerationRow[]>`
      select * from generations where account_id = ${accountId} and request_id = ${requestId}`;
    if (!row) return { state: "none" };
    return row.status === 1 ? { state: "done", generation: toGeneration(row) } : { state: "running", id: row.id };
  }

  /** A completed generation, if the account may read it (its own, or any for an admin). */
  async get(id: string, accountId: string, isAdmin: boolean): Promise<GenerationRecord | undefined> {
    const sql = this.sql;
    const [row] = await sql<GenerationRow[]>`
      select * from generations
      where id = ${id} and status = 1 and ${isAdmin ? sql`true` : sql`account_id = ${accountId}`}`;
    return row ? toGeneration(row) : undefined;
  }

  /** An account's completed generations, newest first, by limit and offset, with their count. */
  async list(accountId: string, limit: number, offset: number): Promise<{ generations: GenerationRecord[]; total: number }> {
    const rows = await this.sql<GenerationRow[]>`
      select * from generations where account_id = ${accountId} and status = 1
      order by completed_at desc, id desc limit ${limit} offset ${offset}`;
    const [{ n }] = await this.sql<{ n: bigint }[]>`
      select count(*) as n from generations where account_id = ${accountId} and status = 1`;
    return { generations: rows.map(toGeneration), total: Number(n) };
  }
}
