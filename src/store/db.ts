import postgres from "postgres";
import type { Logger } from "../logging/logger.js";

/** The postgres.js client type used across repositories. */
export type Sql = postgres.Sql<{ bigint: bigint }>;

/** Options for opening the connection pool. */
export interface ConnectOptions {
  url: string;
  max: number;
  logger: Logger;
}

/**
 * Opens a postgres.js pool. int8 columns come back as JS bigint: snowflake ids exceed 2^53
 * and must never pass through a JS number.
 */
export function connect({ url, max, logger }: ConnectOptions): Sql {
  return postgres(url, {
    max,
    onnotice: (notice) => logger.debug("postgres notice", { code: notice.code, message: notice.message }),
    connection: { application_name: "glimpse" },
    types: { bigint: postgres.BigInt },
  });
}

/** Resolves when the database answers a trivial query; rejects otherwise. */
export async function ping(sql: Sql): Promise<void> {
  await sql`select 1`;
}
