// Three glimpse replicas as separate processes on one PostgreSQL, one S3 server and one Redis,
// driven round-robin through the client module while one of them is killed with SIGKILL and
// started again. What a user of several replicas relies on is checked afterwards against the
// database and every replica: nothing acknowledged is lost, limits and credits hold across
// replicas, each image is embedded once, and the restarted replica caught up.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGlimpseClient, GlimpseError, Status, type GlimpseClient } from "../../src/client/index.js";
import { writeClipTestModel } from "../fixtures/clip-test-model.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";
import { distinctPng } from "../helpers/images.js";
import { freePort, reachable, Replica } from "../helpers/replicas.js";
import { startS3Server, TEST_BUCKET, type TestS3Server } from "../helpers/s3.js";

const REDIS_URL = process.env.GLIMPSE_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

const redisUp = await reachable(REDIS_URL);
if (!redisUp) console.warn(`three-replicas test skipped: no Redis at ${REDIS_URL} (set GLIMPSE_TEST_REDIS_URL)`);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** Polls `check` until it returns a value other than undefined; fails after `timeoutMs` naming `what`. */
async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>, everyMs = 100): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`gave up waiting for ${what} after ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

/** Runs `work` over `items`, at most `limit` at a time. */
async function eachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await work(items[next++]);
    }),
  );
}

/** Files anywhere under `dir` (none when it does not exist). */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))];
}

interface Upload {
  id: string;
  sha256: string;
  /** Whether the call started while replica C was down. */
  whileDown: boolean;
}

describe.skipIf(!redisUp)("three replicas on one PostgreSQL, one S3 server and one Redis", () => {
  let db: TestDatabase;
  let sql: postgres.Sql;
  let s3: TestS3Server;
  let root: string;
  let replicas: Replica[];
  let adminKey: string;
  let admin: GlimpseClient;
  let user: { id: string; key: string };
  let glimpse: GlimpseClient;
  const uploads: Upload[] = [];
  const generated = new Set<string>();
  /** Upload acknowledged on A (wait_for_index) until B's search returns it, per probe. */
  const lagsMs: number[] = [];
  /** Delete acknowledged on A until B's search no longer returns it and B's GetImage is NOT_FOUND. */
  const deleteLagsMs: number[] = [];
  let creditCost = 0;
  let granted = 0;
  let killedWhileRunning = false;
  /** What the client saw of GenerateImage beyond successes (retries, refusals), for a failure's message. */
  const generateEvents: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    sql = postgres(db.url, { max: 2, onnotice: () => {} });
    s3 = await startS3Server();
    root = await mkdtemp(path.join(tmpdir(), "glimpse-replicas-"));
    const modelDir = path.join(root, "model");
    await writeClipTestModel(modelDir);
    adminKey = `glk_test${randomBytes(24).toString("base64url")}`;
    const run = randomBytes(4).toString("hex");
    const env = {
      DATABASE_URL: db.url,
      GLIMPSE_DB_POOL_MAX: "5",
      GLIMPSE_BLOBS: `s3://${TEST_BUCKET}/replicas-${run}`,
      GLIMPSE_S3_ENDPOINT: s3.endpoint,
      GLIMPSE_S3_REGION: "us-east-1",
      GLIMPSE_S3_FORCE_PATH_STYLE: "true",
      AWS_ACCESS_KEY_ID: "S3RVER",
      AWS_SECRET_ACCESS_KEY: "S3RVER",
      GLIMPSE_REDIS_URL: REDIS_URL,
      GLIMPSE_REDIS_PREFIX: `glimpse-test-${run}:`,
      GLIMPSE_ADMIN_KEY: adminKey,
      GLIMPSE_MODEL: modelDir,
      GLIMPSE_MODEL_AUTO_PULL: "false",
      GLIMPSE_EMBED_THREADS: "1",
      GLIMPSE_EMBED_BATCH_SIZE: "4",
      GLIMPSE_RATE_LIMIT_PER_MINUTE: "100000",
      // Snapshots often, so the replica that is killed has one to restart from.
      GLIMPSE_SNAPSHOT_EVERY_CHANGES: "5",
      // Claims of a killed replica lapse within the test.
      GLIMPSE_INDEX_CLAIM_LEASE_S: "5",
      GLIMPSE_METRICS: "true",
      GLIMPSE_LOG_LEVEL: "info",
    };
    replicas = [];
    for (const name of ["a", "b", "c"]) {
      const dataDir = path.join(root, name);
      await mkdir(dataDir, { recursive: true });
      replicas.push(new Replica(name, await freePort(), await freePort(), dataDir, env));
    }
    // All three at once on an empty database: they race to migrate it.
    const starting = performance.now();
    for (const r of replicas) r.start();
    await Promise.all(replicas.map((r) => r.waitReady(150_000)));
    console.log(`three replicas ready in ${((performance.now() - starting) / 1000).toFixed(1)} s`);

    const retry = { maxAttempts: 8, initialBackoffMs: 100, maxBackoffMs: 2000 };
    admin = createGlimpseClient({ address: replicas.map((r) => r.address), key: adminKey, retry });
    const created = await admin.accounts.createAccount({
      email: `replicas-${run}@example.com`,
      username: "",
      isAdmin: false,
      initialCredits: "0",
      createApiKey: true,
    });
    user = { id: created.account!.id, key: created.apiKeySecret };
    glimpse = createGlimpseClient({
      address: replicas.map((r) => r.address),
      key: user.key,
      retry,
      onRetry: (e) => {
        if (e.path.endsWith("/GenerateImage")) {
          generateEvents.push(`${new Date().toISOString()} retry after attempt ${e.attempt}: ${Status[e.error.code]} ${e.error.message}`);
        }
      },
    });
  }, 200_000);

  afterAll(async () => {
    admin?.close();
    glimpse?.close();
    await Promise.all((replicas ?? []).map((r) => r.stop()));
    // What the replicas warned about, for whoever reads a failure.
    for (const r of replicas ?? []) {
      const counts = new Map<string, number>();
      for (const line of await r.log()) {
        if (line.level === "warn" || line.level === "error") counts.set(`${line.level}: ${line.msg}`, (counts.get(`${line.level}: ${line.msg}`) ?? 0) + 1);
      }
      if (counts.size > 0) console.log(`replica ${r.name} logged:`, Object.fromEntries(counts));
    }
    await sql?.end();
    await s3?.stop();
    await db?.drop();
    if (root) await rm(root, { recursive: true, force: true });
  }, 60_000);

  it("admits a key's calls across the three replicas up to its limit, no more", async () => {
    // A key limited to 6 calls a minute, spent in one burst spread over the three replicas.
    const limit = 6;
    const { secret } = await glimpse.accounts.createApiKey({ name: "limited", rateLimitPerMinute: limit });
    const limited = createGlimpseClient({ address: replicas.map((r) => r.address), key: secret, retry: false });
    const burstStarted = Date.now();
    const outcomes = await Promise.all(
      Array.from({ length: 36 }, () =>
        limited.accounts.getAccount({}).then(
          () => "ok",
          (err) => (err instanceof GlimpseError ? Status[err.code] : String(err)),
        ),
      ),
    );
    const burstSeconds = (Date.now() - burstStarted) / 1000;
    limited.close();
    const admitted = outcomes.filter((o) => o === "ok").length;
    console.log(`rate limit ${limit}/min: ${admitted} of ${outcomes.length} admitted across 3 replicas in ${burstSeconds.toFixed(1)} s`);
    expect(outcomes.filter((o) => o !== "ok" && o !== "RESOURCE_EXHAUSTED")).toEqual([]);
    // Exactly the limit; a slow burst may see the bucket refill by one token per 10 s.
    expect(admitted).toBeGreaterThanOrEqual(limit);
    expect(admitted).toBeLessThanOrEqual(limit + Math.floor((burstSeconds * limit) / 60));
  }, 60_000);

  it("keeps serving uploads, searches, generations and limited calls round-robin while one replica is killed and restarted", async () => {
    const [a, b, c] = replicas;
    const model = (await glimpse.generation.listModels({})).models.find((m) => m.id === "local:gradient");
    expect(model?.available).toBe(true);
    creditCost = Number(model!.creditCost);
    granted = creditCost * 12;
    await admin.accounts.grantCredits({ accountId: user.id, amount: String(granted), description: "replicas", requestId: randomUUID() });

    let stop = false;
    let down = false;
    const failures: string[] = [];
    const refusedUploads: string[] = [];
    const note = (what: string) => (err: unknown) => void failures.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
    let n = 0;

    const uploader = async () => {
      while (!stop) {
        const i = n++;
        const content = await distinctPng(i);
        const whileDown = down;
        const tags = ["replicas", whileDown ? "while-down" : "while-up"];
        await glimpse.images.uploadImage({ content, fileName: `u${i}.png`, tags } as never).then(
          ({ image }) => void uploads.push({ id: image!.id, sha256: sha(content), whileDown }),
          (err) => {
            // Refused, not lost: an upload answered UNAVAILABLE was never acknowledged (the
            // client does not resend a non-idempotent call; a channel to the restarted replica
            // can still be backing off after the replica is ready). Counted and reported.
            if (err instanceof GlimpseError && err.code === Status.UNAVAILABLE) refusedUploads.push(`upload ${i}: ${err.message}`);
            else note(`upload ${i}`)(err);
          },
        );
        await sleep(50);
      }
    };
    const searcher = async () => {
      const prompts = ["red", "green square", "a blue picture", "yellow and purple"];
      for (let i = 0; !stop; i++) {
        await glimpse.images
          .searchImages({ query: { $case: "prompt", value: prompts[i % prompts.length] }, limit: 10 } as never)
          .catch(note("search"));
        await sleep(100);
      }
    };
    const generator = async () => {
      for (let i = 0; !stop; i++) {
        try {
          const { generation } = await glimpse.generation.generateImage({ prompt: `tile ${i}`, modelId: "local:gradient" } as never);
          generated.add(generation!.id);
        } catch (err) {
          if (err instanceof GlimpseError && err.code === Status.FAILED_PRECONDITION) {
            generateEvents.push(`${new Date().toISOString()} tile ${i} refused: ${err.message}`);
            await sleep(500); // out of credits (or all reserved); a dead replica's reservation may come back
          } else note("generate")(err);
        }
      }
    };
    // Upload on A (answered once A can search it), then search on B until it is there; then
    // delete it on A and search on B until it is gone (and B's GetImage says NOT_FOUND). A probe
    // B does not follow within 30 s fails the run, with what B had applied by then.
    const onA = createGlimpseClient({ address: a.address, key: user.key });
    const onB = createGlimpseClient({ address: b.address, key: user.key });
    const foundOnB = async (tag: string) => {
      const { results } = await onB.images.searchImages({
        query: { $case: "prompt", value: "red" },
        limit: 1,
        filter: { tags: [tag] },
      } as never);
      return results.length > 0;
    };
    const bState = async (id: string, tag: string) => {
      const [row] = await sql`select index_status, tags, tag_terms, owner_id::text as owner, visibility, sha256, created_at, (select array_agg(seq::text order by seq) from index_log where image_id = ${id}) as seqs from images where id = ${id}`;
      const applied = await b.metric("glimpse_index_log_lag").catch(() => NaN);
      const vectors = await Promise.all([a, b].map((r) => r.metric("glimpse_index_vectors").catch(() => NaN)));
      const [images] = await sql`select count(*)::int as n from embeddings`;
      const likeOnB = await onB.images
        .searchImages({ query: { $case: "likeImageId", value: id }, limit: 1 } as never)
        .then((r) => r.results.map((x: { image?: { id?: string } }) => x.image?.id).join(",") || "none", (err) => String(err));
      const byReplicasTag = await onB.images
        .searchImages({ query: { $case: "likeImageId", value: id }, limit: 1, filter: { tags: ["replicas"] } } as never)
        .then((r) => r.results.map((x: { image?: { id?: string } }) => x.image?.id).join(",") || "none", (err) => String(err));
      const adminOnB = createGlimpseClient({ address: b.address, key: adminKey });
      const adminTag = await adminOnB.images
        .searchImages({ query: { $case: "prompt", value: "red" }, limit: 1, filter: { tags: [tag] } } as never)
        .then((r) => r.results.length, (err) => String(err));
      const onAfound = await onA.images
        .searchImages({ query: { $case: "prompt", value: "red" }, limit: 1, filter: { tags: [tag] } } as never)
        .then((r) => r.results.length, (err) => String(err));
      adminOnB.close();
      return (
        `admin's tag search on B: ${adminTag}; user's tag search on A: ${onAfound}; ` +
        `image row ${row ? `index_status ${row.index_status}, log seqs ${row.seqs}, tags ${JSON.stringify(row.tags)}, terms ${JSON.stringify(row.tag_terms)}, owner ${row.owner}, visibility ${row.visibility}, created ${row.created_at?.toISOString?.()}` : "gone"}; B's glimpse_index_log_lag ${applied}; ` +
        `vectors on A / B ${vectors.join(" / ")} of ${images.n} embeddings; B's like-image search: ${likeOnB}; with tag replicas: ${byReplicasTag}`
      );
    };
    const prober = async () => {
      for (let i = 0; !stop; i++) {
        const tag = `lag-${i}`;
        let id = "";
        try {
          const content = await distinctPng(1_000_000 + i);
          const { image } = await onA.images.uploadImage({ content, tags: ["replicas", tag], waitForIndex: true } as never);
          id = image!.id;
          const acked = performance.now();
          await waitFor(`image ${id} searchable on B`, 30_000, async () => ((await foundOnB(tag)) ? true : undefined), 20);
          lagsMs.push(performance.now() - acked);

          await onA.images.deleteImage({ id } as never);
          const deleted = performance.now();
          await waitFor(`image ${id} gone from B`, 30_000, async () => {
            if (await foundOnB(tag)) return undefined;
            const gone = await onB.images.getImage({ id } as never).then(
              () => false,
              (err) => err instanceof GlimpseError && err.code === Status.NOT_FOUND,
            );
            return gone ? true : undefined;
          }, 20);
          deleteLagsMs.push(performance.now() - deleted);
        } catch (err) {
          const state = id && err instanceof Error && err.message.startsWith("gave up waiting") ? ` (${await bState(id, tag)})` : "";
          const message = `lag probe ${i}: ${err instanceof Error ? err.message : String(err)}${state}`;
          failures.push(message);
        }
        await sleep(200);
      }
    };

    // A second limited key, calling all along, the kill included: capped by its limit plus refill.
    const perMinute = 30;
    const capped = createGlimpseClient({
      address: replicas.map((r) => r.address),
      key: (await glimpse.accounts.createApiKey({ name: "limited-under-load", rateLimitPerMinute: perMinute })).secret,
      retry: false,
    });
    const cappedCalls = { ok: 0, refused: 0, unavailable: 0, other: [] as string[], started: 0, ended: 0 };
    const limitedCaller = async () => {
      cappedCalls.started = performance.now();
      while (!stop) {
        await capped.accounts.getAccount({}).then(
          () => void cappedCalls.ok++,
          (err) => {
            if (err instanceof GlimpseError && err.code === Status.RESOURCE_EXHAUSTED) cappedCalls.refused++;
            else if (err instanceof GlimpseError && err.code === Status.UNAVAILABLE) cappedCalls.unavailable++;
            else cappedCalls.other.push(String(err));
          },
        );
        await sleep(20);
      }
      cappedCalls.ended = performance.now();
    };

    const load = [uploader(), uploader(), searcher(), generator(), prober(), limitedCaller()];
    try {
      // Kill C once it has written a snapshot and the run is under way.
      await waitFor("a snapshot on C and 10 uploads", 60_000, async () =>
        (await filesUnder(path.join(c.dataDir, "index"))).length > 0 && uploads.length >= 10 ? true : undefined,
      );
      await c.kill("SIGKILL");
      down = true;
      killedWhileRunning = true;
      await sleep(4000);
      const restarting = performance.now();
      c.start();
      await c.waitReady(120_000);
      console.log(`C killed, restarted and ready again in ${((performance.now() - restarting) / 1000).toFixed(1)} s (plus 4 s down)`);
      down = false;
      await sleep(3000);
    } finally {
      stop = true;
      await Promise.all(load);
      onA.close();
      onB.close();
    }
    capped.close();
    const seconds = (cappedCalls.ended - cappedCalls.started) / 1000;
    console.log(`key limited to ${perMinute}/min under load for ${seconds.toFixed(1)} s:`, cappedCalls);
    expect(cappedCalls.other).toEqual([]);
    expect(cappedCalls.refused).toBeGreaterThan(0);
    // A full bucket at the start, then one token every 2 s.
    expect(cappedCalls.ok).toBeLessThanOrEqual(perMinute + Math.floor((seconds * perMinute) / 60));
    if (refusedUploads.length) console.log(`uploads refused UNAVAILABLE (never acknowledged): ${refusedUploads.join("; ")}`);
    expect(failures, `calls that failed under the run's load:\n${failures.join("\n")}`).toEqual([]);
    expect(uploads.filter((u) => u.whileDown).length).toBeGreaterThan(0);
  }, 240_000);

  it("lost no acknowledged upload: every one is readable, bytes included, from every replica", async () => {
    expect(killedWhileRunning).toBe(true);
    const [, , c] = replicas;
    expect(c.running).toBe(true);
    const ids = uploads.map((u) => u.id);
    const stored = await sql<{ id: string; sha256: string }[]>`select id::text, sha256 from images where id = any(${ids}::bigint[])`;
    expect(stored.length).toBe(new Set(ids).size);
    for (const replica of replicas) {
      const one = createGlimpseClient({ address: replica.address, key: user.key });
      try {
        const wrong: string[] = [];
        await eachLimited(uploads, 6, async (u) => {
          const { image } = await one.images.getImage({ id: u.id } as never);
          const body = await one.images.getImageContent({ id: u.id });
          if (image?.id !== u.id || sha(body.data) !== u.sha256) wrong.push(u.id);
        });
        expect(wrong, `images unreadable or different on ${replica.name}`).toEqual([]);
      } finally {
        one.close();
      }
    }
    console.log(`${uploads.length} acknowledged uploads (${uploads.filter((u) => u.whileDown).length} while C was down), all readable from A, B and C`);
  }, 120_000);

  /** The completed generations the client was never answered, with what the client and the replicas saw. */
  async function unacknowledged(): Promise<string> {
    const rows = await sql`
      select id::text, request_id, replica_id, reserved_at, completed_at, prompt from generations
      where account_id = ${user.id} and status = 1 order by completed_at`;
    const lost = rows.filter((r) => !generated.has(r.id));
    const calls: string[] = [];
    for (const r of replicas) {
      for (const line of await r.log()) {
        if (String(line.method ?? "").endsWith("/GenerateImage") || /generation|reservation/.test(line.msg)) {
          calls.push(`${r.name} ${JSON.stringify(line)}`);
        }
      }
    }
    return [
      `completed but never acknowledged: ${JSON.stringify(lost)}`,
      `client: ${generateEvents.join("\n  ")}`,
      `replicas' GenerateImage calls and generation lines:\n  ${calls.join("\n  ")}`,
    ].join("\n");
  }

  it("spent the credits exactly: every credit bought one acknowledged generation, and balance and ledger agree", async () => {
    // A generation C was running when it died holds its credits until another replica's sweep returns them.
    const books = async () => {
      const [acc] = await sql`select credit_balance::int as balance, reserved_credits::int as reserved from accounts where id = ${user.id}`;
      const [ledger] = await sql`
        select coalesce(sum(amount) filter (where kind = 1), 0)::int as grants,
               coalesce(-sum(amount) filter (where kind = 2), 0)::int as charges,
               coalesce(sum(amount), 0)::int as net
        from ledger where account_id = ${user.id}`;
      const [gen] = await sql`
        select count(*) filter (where status = 1)::int as done, count(*) filter (where status = 0)::int as running
        from generations where account_id = ${user.id}`;
      return { ...acc, ...ledger, ...gen } as Record<string, number>;
    };
    let state = await waitFor("no credits reserved", 90_000, async () => {
      const s = await books();
      return s.reserved === 0 && s.running === 0 ? s : undefined;
    });
    // Whatever came back is spent now, until the service refuses.
    while (state.balance >= creditCost) {
      const { generation } = await glimpse.generation.generateImage({ prompt: "last", modelId: "local:gradient" } as never);
      generated.add(generation!.id);
      state = await books();
    }
    const refusal = await glimpse.generation.generateImage({ prompt: "one too many", modelId: "local:gradient" } as never).catch((e) => e);
    expect(refusal).toBeInstanceOf(GlimpseError);
    expect((refusal as GlimpseError).code).toBe(Status.FAILED_PRECONDITION);
    state = await books();
    console.log(`credits: granted ${granted}, ${generated.size} generations acknowledged at ${creditCost} each`, state);
    if (state.done !== generated.size) console.log(await unacknowledged());
    expect(state).toMatchObject({ balance: granted % creditCost, reserved: 0, running: 0, grants: granted });
    expect(state.charges).toBe(generated.size * creditCost);
    expect(state.done).toBe(generated.size);
    // Each call carried the request id the client filled in, so no retry could run a second generation.
    const [unkeyed] = await sql`select count(*)::int as n from generations where account_id = ${user.id} and request_id is null`;
    expect(unkeyed.n).toBe(0);
    expect(state.net).toBe(state.balance);
    const { account } = await glimpse.accounts.getAccount({});
    expect(Number(account!.creditBalance)).toBe(state.balance);
    const usage = await glimpse.accounts.listUsage({ limit: 100 } as never);
    expect(usage.transactions.reduce((sum, t) => sum + Number(t.amount), 0)).toBe(state.balance);
  }, 150_000);

  it("embedded each image once, and the restarted replica caught up from its snapshot plus the log", async () => {
    const [, , c] = replicas;
    await waitFor("no pending images", 90_000, async () => {
      const [{ n }] = await sql`select count(*)::int as n from images where index_status = 1`;
      return n === 0 ? true : undefined;
    });
    const statuses = await sql`select index_status, count(*)::int as n from images group by 1 order by 1`;
    expect(statuses.map((s) => s.index_status)).toEqual([2]); // all indexed, none failed
    // One stored vector per image: the log has one insert for each, never two.
    const twice = await sql`select image_id::text, count(*)::int as n from index_log where op = 1 group by image_id having count(*) <> 1`;
    expect(twice).toEqual([]);

    // The restarted replica loaded the snapshot it wrote before it was killed, replayed the log after it...
    const loads = await c.indexLoads();
    expect(loads).toHaveLength(2);
    console.log("C's index after restart:", JSON.stringify(loads[1]));
    expect(loads[1]).toMatchObject({ source: "snapshot" });
    expect(Number(loads[1].replayed)).toBeGreaterThan(0);
    // ...and finds what was uploaded while it was down.
    const downIds = uploads.filter((u) => u.whileDown).map((u) => u.id);
    const onC = createGlimpseClient({ address: c.address, key: user.key });
    try {
      expect(uploads.length).toBeLessThan(250); // one page of results holds them all
      let missing: string[] = downIds;
      await waitFor("C searching every image uploaded while it was down", 30_000, async () => {
        const { results } = await onC.images.searchImages({
          query: { $case: "prompt", value: "red" },
          limit: 250,
          filter: { tags: ["replicas"] },
        } as never);
        const ids = new Set(results.map((r) => r.id));
        missing = downIds.filter((id) => !ids.has(id));
        return missing.length === 0 ? true : undefined;
      }).catch((err) => {
        throw new Error(`${(err as Error).message}; missing ${missing.length} of ${downIds.length}: ${missing.slice(0, 10).join(", ")}`);
      });
    } finally {
      onC.close();
    }
  }, 150_000);

  it("has a burst of pending images embedded once across the three indexers (model runs counted on every replica)", async () => {
    // Nothing else embeds meanwhile: no searches by text, no generations.
    const inputs = () => Promise.all(replicas.map((r) => r.metric("glimpse_embed_batch_size_sum")));
    const before = await inputs();
    const burst = 24;
    const ids: string[] = [];
    await eachLimited(
      Array.from({ length: burst }, (_, i) => i),
      4,
      async (i) => {
        const { image } = await glimpse.images.uploadImage({ content: await distinctPng(2_000_000 + i), tags: ["burst"] } as never);
        ids.push(image!.id);
      },
    );
    await waitFor("the burst indexed and every claim on it released", 90_000, async () => {
      const [{ pending }] = await sql`select count(*)::int as pending from images where id = any(${ids}::bigint[]) and index_status = 1`;
      const [{ claims }] = await sql`select count(*)::int as claims from index_claims where image_id = any(${ids}::bigint[])`;
      return pending === 0 && claims === 0 ? true : undefined;
    });
    const after = await inputs();
    const perReplica = after.map((v, i) => v - before[i]);
    console.log(`burst of ${burst} pending images: embedded ${perReplica.join(" + ")} times on A + B + C`);
    expect(perReplica.reduce((x, y) => x + y, 0)).toBe(burst);
  }, 120_000);

  it("reports the cross-replica visibility lags measured under the run's load", () => {
    expect(lagsMs.length).toBeGreaterThan(0);
    expect(deleteLagsMs.length).toBeGreaterThan(0);
    const summary = (lags: number[]) => {
      const sorted = [...lags].sort((x, y) => x - y);
      return (
        `${sorted.length} probes: p50 ${percentile(sorted, 0.5).toFixed(0)} ms, p99 ${percentile(sorted, 0.99).toFixed(0)} ms, ` +
        `max ${sorted[sorted.length - 1].toFixed(0)} ms`
      );
    };
    console.log(`visibility lag (upload acknowledged on A, searchable on B), ${summary(lagsMs)}`);
    console.log(`delete lag (delete acknowledged on A, gone from B's search and GetImage), ${summary(deleteLagsMs)}`);
  });
});
