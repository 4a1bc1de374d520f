import type { AspectRatio, ProviderId, ThinkingLevel } from "../generation/models.js";
import type { GenerationRecord } from "../generation/types.js";
import type postgres from "postgres";
import type { Sql } from "./db.js";
import type { Tx } from "./images-repository.js";

/**
 * First key of the session advisory lock (two int4 keys) a replica holds on its lease
 * connection while it runs; the second key is its id in `replicas`. ("geno" in ASCII.)
 */
export const REPLICA_LOCK_CLASS = 0x67656e6f;

type Fragment = postgres.Fragment;

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
  replica_id: number | null;
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
  /** The replica (process) running it: its reservation lives as long as that replica does. */
  replicaId: number;
}

/**
 * What is known about the generation holding a request id. A running one is `orphaned` when
 * the replica that reserved it is dead: nothing will ever finish or release it.
 */
export type RequestState =
  | { state: "none" }
  | { state: "running"; id: string; replicaId: number | null; orphaned: boolean }
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
                               style, thinking_level, credit_cost, replica_id)
      values (${g.id}, ${g.accountId}, ${g.requestId}, ${g.prompt}, ${g.modelId}, ${g.providerId},
              ${g.aspectRatio}, ${g.style}, ${THINKING.indexOf(g.thinkingLevel)}, ${g.creditCost.toString()},
              ${g.replicaId})
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
    return (await this.releaseWhere(this.sql`g.id = ${id}`)) === 1;
  }

  /**
   * Releases every generation still running `olderThanMs` after its reservation (its process
   * died or lost the store); returns how many. Database time decides, so replicas agree. This
   * is the backstop for reservations no replica is recorded for, or whose replica's death went
   * unnoticed; {@link releaseOrphaned} returns the others within seconds.
   */
  async releaseAbandoned(olderThanMs: number): Promise<number> {
    return this.releaseWhere(this.sql`g.reserved_at < now() - ${olderThanMs} * interval '1 millisecond'`);
  }

  /**
   * Releases running generations whose replica is dead (see {@link replicaAlive}); only the one
   * with `id` when given, and never those of `except` (the caller's own replica, which knows
   * better: it is running them). Returns how many.
   *
   * A generation its replica completes at the same moment is not refunded as well: the delete
   * and the completing update both take the row's lock, and whichever comes second finds
   * status 0 no longer true and changes nothing.
   */
  async releaseOrphaned(options: { id?: string; except?: number } = {}): Promise<number> {
    const sql = this.sql;
    return this.releaseWhere(sql`
      g.replica_id is not null and not ${this.replicaAlive()}
      ${options.id === undefined ? sql`` : sql`and g.id = ${options.id}`}
      ${options.except === undefined ? sql`` : sql`and g.replica_id <> ${options.except}`}`);
  }

  /**
   * Deletes the running generations `where` selects (over `generations g`) and returns their
   * credits to their accounts, in one statement; returns how many it released.
   */
  private async releaseWhere(where: Fragment): Promise<number> {
    const rows = await this.sql`
      with gone as (
        delete from generations g where g.status = 0 and ${where}
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

  /**
   * True (in SQL, over `generations g`) while the replica that reserved `g` is alive: its row
   * exists, its lease has not run out, and its lease connection still holds its advisory lock.
   * The lock goes the moment PostgreSQL sees that connection close (a killed process's socket
   * is closed by its kernel); the lease covers a replica cut off without the server noticing.
   */
  private replicaAlive(): Fragment {
    return this.sql`exists (
      select 1 from replicas r
      where r.id = g.replica_id and r.expires_at > now()
        and ${this.lockHeld(this.sql`r.id`, this.sql`true`)})`;
  }

  /** True (in SQL) when the advisory lock of replica `id` is granted to a session matching `session`. */
  private lockHeld(id: Fragment, session: Fragment): Fragment {
    return this.sql`exists (
      select 1 from pg_locks l
      where l.locktype = 'advisory' and l.granted and l.objsubid = 2
        and l.database = (select oid from pg_database where datname = current_database())
        and l.classid = ${REPLICA_LOCK_CLASS}::int4::oid and l.objid = (${id})::oid and ${session})`;
  }

  /** The generation holding an account's request id, if any. */
  async findByRequest(accountId: string, requestId: string): Promise<RequestState> {
    const [row] = await this.sql<(GenerationRow & { orphaned: boolean })[]>`
      select g.*, (g.status = 0 and g.replica_id is not null and not ${this.replicaAlive()}) as orphaned
      from generations g where g.account_id = ${accountId} and g.request_id = ${requestId}`;
    if (!row) return { state: "none" };
    return row.status === 1
      ? { state: "done", generation: toGeneration(row) }
      : { state: "running", id: row.id, replicaId: row.replica_id, orphaned: row.orphaned };
  }

  /**
   * Records a replica starting, leased for `leaseMs`; returns its id. Run it on the replica's
   * lease connection, then {@link renewReplica} there to take its lock.
   */
  async registerReplica(label: string, leaseMs: number): Promise<number> {
    const [row] = await this.sql<{ id: number }[]>`
      insert into replicas (label, expires_at) values (${label}, now() + ${leaseMs} * interval '1 millisecond')
      returning id`;
    return row.id;
  }

  /**
   * On the replica's lease connection: takes the replica's advisory lock unless this session
   * holds it already (after a reconnect it does not), and extends its lease by `leaseMs`. False
   * when the replica's row is gone (forgotten as long dead) or another session holds the lock.
   */
  async renewReplica(id: number, leaseMs: number): Promise<boolean> {
    // CASE, unlike OR, fixes the order: the lock is only asked for when this session lacks it
    // (asking again would stack another hold on it).
    const rows = await this.sql`
      update replicas set expires_at = now() + ${leaseMs} * interval '1 millisecond'
      where id = ${id}
        and case when ${this.lockHeld(this.sql`${id}::int4`, this.sql`l.pid = pg_backend_pid()`)} then true
                 else pg_try_advisory_lock(${REPLICA_LOCK_CLASS}::int4, ${id}::int4) end
      returning id`;
    return rows.length === 1;
  }

  /** Removes a replica that stops cleanly (its lock goes with its connection). */
  async retireReplica(id: number): Promise<void> {
    await this.sql`delete from replicas where id = ${id}`;
  }

  /** Forgets replicas dead for more than `olderThanMs` (their generations count as orphaned either way). */
  async forgetDeadReplicas(olderThanMs: number): Promise<number> {
    const rows = await this.sql`
      delete from replicas r
      where r.expires_at < now() - ${olderThanMs} * interval '1 millisecond'
        and not ${this.lockHeld(this.sql`r.id`, this.sql`true`)}
      returning r.id`;
    return rows.length;
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
