import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "../logging/logger.js";
import type { Sql } from "./db.js";

/** Folder of numbered `NNNN_name.sql` files, applied in order. */
export const MIGRATIONS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "migrations");

/**
 * Advisory lock key shared by every glimpse replica (the ASCII of "glimpse" as an int8),
 * so replicas starting together apply migrations one at a time.
 */
const MIGRATION_LOCK_KEY = 0x676c696d707365n;

/** A migration file on disk. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Reads and orders the migration files; a gap or duplicate number is a packaging bug. */
export async function loadMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const match = /^(\d+)_([\w-]+)\.sql$/.exec(file);
    if (!match) throw new Error(`migration file ${file} is not named NNNN_name.sql`);
    const version = Number(match[1]);
    if (version !== migrations.length + 1) {
      throw new Error(`migration ${file}: expected version ${migrations.length + 1}`);
    }
    migrations.push({ version, name: match[2], sql: await readFile(path.join(dir, file), "utf8") });
  }
  return migrations;
}

/**
 * Applies the migrations not yet recorded in `schema_migrations`, all in one transaction under a
 * transaction-scoped advisory lock: a second replica waits, then finds nothing left to do.
 * Returns the versions applied by this call (empty when the schema was current).
 */
export async function migrate(sql: Sql, logger: Logger, migrations?: Migration[]): Promise<number[]> {
  const all = migrations ?? (await loadMigrations());
  return sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY.toString()}::bigint)`;
    await tx`
      create table if not exists schema_migrations (
        version integer primary key,
        name text not null,
        applied_at timestamptz not null default now()
      )`;
    const rows = await tx<{ version: number }[]>`select version from schema_migrations`;
    const done = new Set(rows.map((r) => r.version));
    const applied: number[] = [];
    for (const m of all) {
      if (done.has(m.version)) continue;
      // Migration files are trusted, versioned SQL shipped with the code: the only place
      // glimpse runs SQL text that is not a tagged template.
      await tx.unsafe(m.sql);
      await tx`insert into schema_migrations (version, name) values (${m.version}, ${m.name})`;
      logger.info("migration applied", { version: m.version, name: m.name });
      applied.push(m.version);
    }
    return applied;
  });
}
