import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ImageFilter } from "../../src/catalogue/types.js";
import { connect, type Sql } from "../../src/store/db.js";
import { ImagesRepository, type ListQuery } from "../../src/store/images-repository.js";
import { migrate } from "../../src/store/migrate.js";
import { DEFAULT_ACCOUNT_ID } from "../../src/server/middleware/caller.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";
import { testLogger } from "../helpers/log.js";

/** Every plan node of an EXPLAIN (FORMAT JSON) tree, flattened. */
function nodes(plan: unknown): { type: string; index?: string }[] {
  const out: { type: string; index?: string }[] = [];
  const walk = (n: Record<string, unknown>) => {
    out.push({ type: n["Node Type"] as string, index: n["Index Name"] as string | undefined });
    for (const child of (n.Plans as Record<string, unknown>[] | undefined) ?? []) walk(child);
  };
  walk((plan as { Plan: Record<string, unknown> }[])[0].Plan);
  return out;
}

const noFilter: ImageFilter = {
  includeTags: [],
  excludeTags: [],
  username: null,
  postId: null,
  modelId: null,
  modelVersionId: null,
  nsfw: null,
  maxNsfwLevel: null,
  period: "all",
  visibility: null,
  indexStatus: null,
  className: null,
  metaEquals: {},
  metaKeys: [],
};

describe("listing queries are served by indexes (5,000 rows)", () => {
  let db: TestDatabase;
  let sql: Sql;
  let repo: ImagesRepository;
  const now = new Date("2026-06-15T12:00:00Z");
  const query = (q: Partial<ListQuery>): ListQuery => ({
    filter: noFilter,
    caller: { accountId: DEFAULT_ACCOUNT_ID, isAdmin: false },
    sort: "newest",
    now,
    limit: 101,
    ...q,
  });

  beforeAll(async () => {
    db = await createTestDatabase();
    sql = connect({ url: db.url, max: 2, logger: testLogger() });
    await migrate(sql, testLogger());
    // 5,000 public images over two years; "rare" on 1% of them, "common" on half.
    await sql`
      insert into images (id, owner_id, sha256, media_type, width, height, byte_size, tags, tag_terms,
                          visibility, like_count, comment_count, created_at)
      select g, ${DEFAULT_ACCOUNT_ID}, md5(g::text) || md5((g + 1)::text), 'image/png', 10, 10, 100,
             t, t, 1, (g * 7919) % 97, (g * 104729) % 13,
             ${now}::timestamptz - (g || ' hours')::interval * 3.5
      from generate_series(1, 5000) g,
           lateral (select array_remove(array[
             case when g % 100 = 0 then 'rare' end,
             case when g % 2 = 0 then 'common' end,
             'tag' || (g % 40)], null) as t) tags`;
    await sql`analyze images`;
    repo = new ImagesRepository(sql);
  });
  afterAll(async () => {
    await sql?.end();
    await db?.drop();
  });

  it("uses the GIN index for a selective tag filter", async () => {
    const plan = nodes(await repo.explainList(query({ filter: { ...noFilter, includeTags: ["rare"] } })));
    expect(plan).toContainEqual({ type: "Bitmap Index Scan", index: "images_tag_terms" });
    expect(plan.map((n) => n.type)).not.toContain("Seq Scan");
  });

  it("walks the primary key for NEWEST and OLDEST pages", async () => {
    for (const sort of ["newest", "oldest"] as const) {
      const plan = nodes(await repo.explainList(query({ sort })));
      expect(plan).toContainEqual({ type: "Index Scan", index: "images_pkey" });
      expect(plan.map((n) => n.type)).not.toContain("Sort");
    }
  });

  it("walks the rank indexes for MOST_REACTIONS and MOST_COMMENTS pages", async () => {
    let plan = nodes(await repo.explainList(query({ sort: "most_reactions" })));
    expect(plan).toContainEqual({ type: "Index Scan", index: "images_reactions" });
    plan = nodes(await repo.explainList(query({ sort: "most_comments", after: { rank: 5, id: 2500n } })));
    expect(plan).toContainEqual({ type: "Index Scan", index: "images_comments" });
  });

  it("uses the created_at index for a short period", async () => {
    const plan = nodes(await repo.explainList(query({ filter: { ...noFilter, period: "day" }, sort: "most_reactions" })));
    expect(plan.some((n) => n.index === "images_created")).toBe(true);
    expect(plan.map((n) => n.type)).not.toContain("Seq Scan");
  });
});
