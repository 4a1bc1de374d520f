import { randomBytes } from "node:crypto";
import postgres from "postgres";

/** A throwaway database on some server, for a test file or a benchmark run. */
export interface ScratchDatabase {
  url: string;
  name: string;
  /** Drops the database, forcing out any connection left open. */
  drop(): Promise<void>;
}

/**
 * Creates a uniquely named database (`<prefix>_<time>_<random>`) on the server of `adminUrl`,
 * so concurrent runs never see each other's rows.
 */
export async function createScratchDatabase(adminUrl: string, prefix: string): Promise<ScratchDatabase> {
  const name = `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString("hex")}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await admin`create database ${admin(name)}`;
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
      try {
        await sql`drop database if exists ${sql(name)} with (force)`;
      } finally {
        await sql.end();
      }
    },
  };
}
