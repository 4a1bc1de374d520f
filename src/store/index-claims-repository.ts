import type { Sql } from "./db.js";
import type { PendingImage } from "./embeddings-repository.js";

/** Index status code of a pending image (see migration 0001). */
const PENDING = 1;

/**
 * Claims on pending images (migration 0007): which indexer embeds which image, so replicas
 * sharing one database embed each image once. Claims are leases in database time, so
 * replicas with skewed clocks agree on which have lapsed.
 */
export class IndexClaimsRepository {
  constructor(private readonly sql: Sql) {}

  /**
   * Claims up to `limit` pending images, oldest first, that no other indexer holds a live
   * claim on, for `leaseMs`. Rows another replica is claiming right now are skipped (SKIP
   * LOCKED), so two replicas take different images instead of queueing on the same ones; a
   * claim that loses a race anyway is not returned (the conflict update keeps a live claim).
   */
  async claim(claimant: string, limit: number, leaseMs: number): Promise<PendingImage[]> {
    const rows = await this.sql<{ id: bigint; sha256: string }[]>`
      with candidates as (
        select i.id, i.sha256 from images i
        where i.index_status = ${PENDING}
          and not exists (
            select 1 from index_claims c
            where c.image_id = i.id and c.claimed_until > now() and c.claimed_by <> ${claimant})
        order by i.id
        limit ${limit}
        for no key update of i skip locked
      ), claimed as (
        insert into index_claims (image_id, claimed_by, claimed_until)
        select id, ${claimant}, now() + ${leaseMs} * interval '1 millisecond' from candidates
        on conflict (image_id) do update
          set claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until
          where index_claims.claimed_until <= now() or index_claims.claimed_by = excluded.claimed_by
        returning image_id
      )
      select c.id, c.sha256 from candidates c join claimed on claimed.image_id = c.id order by c.id`;
    return rows.map((r) => ({ id: r.id, sha256: r.sha256 }));
  }

  /** Drops this indexer's claims on these images (stored, failed, or to be retried by anyone). */
  async release(claimant: string, imageIds: bigint[]): Promise<void> {
    if (imageIds.length === 0) return;
    await this.sql`
      delete from index_claims
      where image_id = any(${imageIds.map(String)}::bigint[]) and claimed_by = ${claimant}`;
  }
}
