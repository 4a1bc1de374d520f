import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type Sql } from "../../src/store/db.js";
import { loadMigrations, migrate } from "../../src/store/migrate.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";
import { testLogger } from "../helpers/log.js";

describe("migrations", () => {
  let db: TestDatabase;
  const pools: Sql[] = [];
  const open = () => {
    const sql = connect({ url: db.url, max: 2, logger: testLogger() });
    pools.push(sql);
    return sql;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await db.drop();
  });

  it("applies every migration once; a second run is a no-op", async () => {
    const sql = open();
    const all = await loadMigrations();
    expect(await migrate(sql, testLogger())).toEqual(all.map((m) => m.version));
    const before = await sql`select version, applied_at from schema_migrations order by version`;
    expect(await migrate(sql, testLogger())).toEqual([]);
    const after = await sql`select version, applied_at from schema_migrations order by version`;
    expect(after).toEqual(before);
    const [account] = await sql`select username, is_admin from accounts`;
    expect(account).toEqual({ username: "default", is_admin: true });
    const [{ count }] = await sql`select count(*)::int as count from accounts`;
    expect(count).toBe(1);
  });

  it("lets replicas that start together on one database both finish, applying each version once", async () => {
    const fresh = await createTestDatabase();
    const pools2 = [0, 1, 2].map(() => connect({ url: fresh.url, max: 1, logger: testLogger() }));
    try {
      const results = await Promise.all(pools2.map((sql) => migrate(sql, testLogger())));
      const applied = results.flat().sort();
      const all = await loadMigrations();
      expect(applied).toEqual(all.map((m) => m.version));
      const rows = await pools2[0]`select count(*)::int as n from schema_migrations`;
      expect(rows[0].n).toBe(all.length);
    } finally {
      await Promise.all(pools2.map((p) => p.end()));
      await fresh.drop();
    }
  });

  it("rolls back a failing migration whole", async () => {
    const fresh = await createTestDatabase();
    const sql = connect({ url: fresh.url, max: 1, logger: testLogger() });
    try {
      const broken = [
        { version: 1, name: "ok", sql: "create table t1 (x int)" },
        { version: 2, name: "broken", sql: "create table t2 (x int); select * from missing_table" },
      ];
      await expect(migrate(sql, testLogger(), broken)).rejects.toThrow(/missing_table/);
      const tables = await sql`select table_name from information_schema.tables where table_schema = 'public'`;
      expect(tables).toEqual([]);
    } finally {
      await sql.end();
      await fresh.drop();
    }
  });
});
