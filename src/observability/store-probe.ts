import type { Sql } from "../store/db.js";
import type { StoreState } from "./metrics.js";

/**
 * What the store-wide gauges show, in one query per scrape: the newest index_log sequence
 * (against which each replica's applied sequence is its lag) and the generations holding a
 * credit reservation.
 */
export async function storeState(sql: Sql): Promise<StoreState> {
  const [row] = await sql<{ seq: bigint | null; open: bigint }[]>`
    select coalesce((select max(seq) from index_log), (select upto from index_log_pruned)) as seq,
           (select count(*) from generations where status = 0) as open`;
  return { newestLogSeq: row.seq ?? 0n, openReservations: Number(row.open) };
}
