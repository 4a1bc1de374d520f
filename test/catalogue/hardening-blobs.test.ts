import { mkdir, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { BlobEntry, BlobRange, BlobRead, BlobStore } from "../../src/blobs/blob-store.js";
import { DEFAULT_ACCOUNT_ID } from "../../src/accounts/account-service.js";
import { analyseImage, contentSha256, pooledAnalyse, type Analyse } from "../../src/catalogue/analyse.js";
import { CatalogueService } from "../../src/catalogue/catalogue-service.js";
import { DecodePool } from "../../src/catalogue/decode-pool.js";
import { startOrphanSweeping, sweepOrphans } from "../../src/catalogue/orphan-sweep.js";
import { SnowflakeGenerator } from "../../src/catalogue/snowflake.js";
import type { Caller } from "../../src/catalogue/types.js";
import { systemClock } from "../../src/clock.js";
import { DomainError } from "../../src/errors.js";
import type { Logger } from "../../src/logging/logger.js";
import { connect, type Sql } from "../../src/store/db.js";
import { ImagesRepository, transaction, type Db, type Tx } from "../../src/store/images-repository.js";
import { migrate } from "../../src/store/migrate.js";
import { backdate, testBlobKind, testBlobStore, type TestBlobStore } from "../helpers/blobs.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";
import { distinctPng } from "../helpers/images.js";
import { testLogger } from "../helpers/log.js";

const HOUR_MS = 3_600_000;

/**
 * The run's blob store (files, or S3 with GLIMPSE_TEST_BLOBS=s3), whose deletes a test can
 * watch or make fail.
 */
class WatchedBlobs implements BlobStore {
  beforeDelete?: (sha256: string) => Promise<void>;
  constructor(readonly inner: BlobStore) {}
  async delete(sha256: string): Promise<void> {
    await this.beforeDelete?.(sha256);
    return this.inner.delete(sha256);
  }
  put(bytes: Uint8Array, sha256?: string): Promise<string> {
    return this.inner.put(bytes, sha256);
  }
  get(sha256: string): Promise<Buffer> {
    return this.inner.get(sha256);
  }
  read(sha256: string, range?: BlobRange): Promise<BlobRead> {
    return this.inner.read(sha256, range);
  }
  has(sha256: string): Promise<boolean> {
    return this.inner.has(sha256);
  }
  list(): Promise<string[]> {
    return this.inner.list();
  }
  entries(): AsyncIterable<BlobEntry> {
    return this.inner.entries();
  }
  sweepTemp(maxAgeMs?: number): Promise<number> {
    return this.inner.sweepTemp(maxAgeMs);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** The real repository, with a hook a test can run in place of one insert or after a delete. */
class WatchedImages extends ImagesRepository {
  failNextInsert?: () => void;
  afterDelete?: () => void;
  override async insert(...args: Parameters<ImagesRepository["insert"]>) {
    const fail = this.failNextInsert;
    this.failNextInsert = undefined;
    if (fail) {
      fail();
      throw new Error("the database went away mid-upload");
    }
    return super.insert(...args);
  }
  override async delete(id: bigint, db: Db): Promise<void> {
    await super.delete(id, db);
    this.afterDelete?.();
  }
}


describe("blobs outlive their rows, never the other way round", () => {
  let db: TestDatabase;
  let sql: Sql;
  let made: TestBlobStore;
  let blobs: WatchedBlobs;
  /** Places a blob's write in the past, as if it had been stored then. */
  const age = (sha256: string, ms: number) => made.age(sha256, ms);
  let images: WatchedImages;
  let catalogue: CatalogueService;
  let analyseCalls: number;
  /** Runs once before the next transaction starts (after the one in progress has committed). */
  let beforeNextTransaction: (() => Promise<void>) | undefined;
  let other: Caller;
  const owner: Caller = { accountId: DEFAULT_ACCOUNT_ID, isAdmin: false };
  let n = 0;
  const nextPng = () => distinctPng(1000 + n++);

  const tx = async <T>(fn: (tx: Tx) => Promise<T>): Promise<T> => {
    const hook = beforeNextTransaction;
    beforeNextTransaction = undefined;
    await hook?.();
    return transaction(sql, fn);
  };
  const counted: Analyse = (bytes, limits, field, options) => {
    analyseCalls++;
    return analyseImage(bytes, limits, field, options);
  };
  const serviceWith = (analyse: Analyse) =>
    new CatalogueService({
      images,
      transaction: tx,
      blobs,
      clock: systemClock,
      ids: new SnowflakeGenerator(7, systemClock),
      limits: { maxBytes: 1024 * 1024, maxPixels: 4_000_000 },
      analyse,
      logger: testLogger(),
    });
  const rows = async (sha256: string) =>
    Number((await sql`select count(*) as n from images where sha256 = ${sha256}`)[0].n);
  /** Every image row whose blob file is missing: must always be none. */
  const rowsWithoutBytes = async () => {
    const all = await sql<{ id: bigint; sha256: string }[]>`select id, sha256 from images`;
    const missing: string[] = [];
    for (const row of all) if (!(await blobs.has(row.sha256))) missing.push(row.id.toString());
    return missing;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    sql = connect({ url: db.url, max: 6, logger: testLogger() });
    await migrate(sql, testLogger());
    const [row] = await sql<{ id: string }[]>`insert into accounts (username) values ('other') returning id`;
    other = { accountId: row.id, isAdmin: false };
  });
  afterAll(async () => {
    await sql?.end();
    await db?.drop();
  });
  beforeEach(async () => {
    made = await testBlobStore();
    blobs = new WatchedBlobs(made.store);
    images = new WatchedImages(sql);
    analyseCalls = 0;
    beforeNextTransaction = undefined;
    catalogue = serviceWith(counted);
  });
  afterEach(async () => {
    expect(await rowsWithoutBytes()).toEqual([]);
    // Each test has a blob store of its own; its rows go with it.
    await sql`delete from images`;
    await made.dispose();
  });

  describe("DeleteImage", () => {
    it("commits the row's removal before it removes the blob", async () => {
      const { image } = await catalogue.upload(owner, { content: await nextPng(), index: false });
      const seen: number[] = [];
      // Another connection sees only committed rows.
      blobs.beforeDelete = async (sha256) => void seen.push(await rows(sha256));
      await catalogue.delete(owner, image.id);
      expect(seen).toEqual([0]);
      expect(await blobs.has(image.sha256)).toBe(false);
    });

    it("leaves an orphan file, never a row without bytes, when removing the blob fails", async () => {
      const { image } = await catalogue.upload(owner, { content: await nextPng(), index: false });
      blobs.beforeDelete = async () => {
        throw new Error("killed before the unlink");
      };
      await catalogue.delete(owner, image.id); // the image is gone: the caller sees success
      await expect(catalogue.get(owner, image.id)).rejects.toMatchObject({ code: "NOT_FOUND" });
      expect(await blobs.has(image.sha256)).toBe(true);

      // The sweep takes the orphan once it is past the grace period.
      blobs.beforeDelete = undefined;
      await age(image.sha256, 2 * HOUR_MS);
      expect(await sweepOrphans({ images, transaction: tx, blobs }, { graceMs: HOUR_MS })).toEqual({ blobs: 1, temp: 0 });
      expect(await blobs.has(image.sha256)).toBe(false);
    });

    it("keeps the blob when an upload of the same bytes lands between the commit and the unlink", async () => {
      const content = await nextPng();
      const { image } = await catalogue.upload(owner, { content, index: false });
      let theirs: bigint | undefined;
      images.afterDelete = () => {
        images.afterDelete = undefined;
        // The next transaction is the blob's release: another account stores the bytes first.
        beforeNextTransaction = async () => {
          theirs = (await catalogue.upload(other, { content, index: false })).image.id;
        };
      };
      await catalogue.delete(owner, image.id);
      expect(theirs).toBeDefined();
      const { content: stored } = await catalogue.getWithContent(other, theirs!);
      expect(stored.equals(content)).toBe(true);
    });

    it("keeps the blob while another account's image still has the same bytes", async () => {
      const content = await nextPng();
      const mine = await catalogue.upload(owner, { content, index: false });
      const theirs = await catalogue.upload(other, { content, index: false });
      await catalogue.delete(owner, mine.image.id);
      expect((await catalogue.getWithContent(other, theirs.image.id)).content.equals(content)).toBe(true);
      await catalogue.delete(other, theirs.image.id);
      expect(await blobs.has(mine.image.sha256)).toBe(false);
    });
  });

  describe("UploadImage's cleanup after a failed insert", () => {
    it("removes the blob it wrote when nothing references it", async () => {
      const content = await nextPng();
      images.failNextInsert = () => undefined;
      await expect(catalogue.upload(owner, { content, index: false })).rejects.toThrow("went away");
      expect(await blobs.list()).toEqual([]);
    });

    it("keeps the blob when an upload of the same bytes references it before the cleanup", async () => {
      const content = await nextPng();
      images.failNextInsert = () => {
        beforeNextTransaction = async () => void (await catalogue.upload(other, { content, index: false }));
      };
      await expect(catalogue.upload(owner, { content, index: false })).rejects.toThrow("went away");
      expect(await rows(contentSha256(content))).toBe(1);
      expect(await blobs.has(contentSha256(content))).toBe(true);
    });
  });

  describe("the orphan sweep", () => {
    // Temp files are the file store's partial writes; S3 shows no object before its upload completes.
    it.skipIf(testBlobKind() === "s3")("removes old unreferenced blobs and stale temp files, keeping referenced and fresh ones", async () => {
      const root = made.root!;
      const referenced = (await catalogue.upload(owner, { content: await nextPng(), index: false })).image.sha256;
      const orphan = await blobs.put(await nextPng());
      const fresh = await blobs.put(await nextPng());
      await age(referenced, 2 * HOUR_MS);
      await age(orphan, 2 * HOUR_MS);
      const tmp = path.join(root, "tmp");
      await mkdir(tmp, { recursive: true });
      await writeFile(path.join(tmp, `${orphan}.stale`), "half a write");
      await writeFile(path.join(tmp, `${fresh}.in-progress`), "a write in progress");
      await backdate(path.join(tmp, `${orphan}.stale`), 2 * HOUR_MS);

      const result = await sweepOrphans({ images, transaction: tx, blobs }, { graceMs: HOUR_MS, batchSize: 2 });
      expect(result).toEqual({ blobs: 1, temp: 1 });
      expect(await blobs.list()).toEqual([referenced, fresh].sort());
      expect(await readdir(tmp)).toEqual([`${fresh}.in-progress`]);
    });

    it("removes old unreferenced blobs, keeping referenced and fresh ones, in any store", async () => {
      const referenced = (await catalogue.upload(owner, { content: await nextPng(), index: false })).image.sha256;
      const orphan = await blobs.put(await nextPng());
      const fresh = await blobs.put(await nextPng());
      await age(referenced, 2 * HOUR_MS);
      await age(orphan, 2 * HOUR_MS);
      const result = await sweepOrphans({ images, transaction: tx, blobs }, { graceMs: HOUR_MS, batchSize: 2 });
      expect(result).toEqual({ blobs: 1, temp: 0 });
      expect(await blobs.list()).toEqual([referenced, fresh].sort());
    });

    it("runs at start and reports what it removed", async () => {
      const orphan = await blobs.put(await nextPng());
      await age(orphan, 2 * HOUR_MS);
      let reported: (fields: unknown) => void = () => undefined;
      const removed = new Promise((resolve) => (reported = resolve));
      const logger: Logger = { ...testLogger(), info: (_msg, fields) => reported(fields) };
      const stop = startOrphanSweeping({ images, transaction: tx, blobs, logger }, { intervalMs: HOUR_MS, graceMs: HOUR_MS });
      try {
        expect(await removed).toEqual({ blobs: 1, temp: 0 });
      } finally {
        await stop();
      }
      expect(await blobs.has(orphan)).toBe(false);
    });
  });

  describe("an upload of bytes already stored", () => {
    it("answers with the existing image without decoding", async () => {
      const content = await nextPng();
      const first = await catalogue.upload(owner, { content, index: false });
      expect(analyseCalls).toBe(1);
      const again = await catalogue.upload(owner, { content, index: false, fileName: "another-name.png" });
      expect(again).toEqual({ image: first.image, deduplicated: true });
      expect(analyseCalls).toBe(1);
      // Another account's first upload of the same bytes is its own image, analysed.
      const theirs = await catalogue.upload(other, { content, index: false });
      expect(theirs.deduplicated).toBe(false);
      expect(analyseCalls).toBe(2);
    });

    it("is answered even while every decode slot is taken", async () => {
      const pool = new DecodePool({ concurrency: 1, maxQueue: 0 });
      const busy = serviceWith(pooledAnalyse(pool));
      const stored = await nextPng();
      const first = await busy.upload(owner, { content: stored, index: false });
      let finish: () => void = () => undefined;
      const blocker = pool.run(() => new Promise<void>((resolve) => (finish = resolve)));
      try {
        await expect(busy.upload(owner, { content: stored, index: false })).resolves.toEqual({
          image: first.image,
          deduplicated: true,
        });
        const refused = await busy.upload(owner, { content: await nextPng(), index: false }).catch((e) => e);
        expect(refused).toBeInstanceOf(DomainError);
        expect(refused).toMatchObject({ code: "RESOURCE_EXHAUSTED" });
        expect((refused as DomainError).retryAfterMs).toBeGreaterThan(0);
      } finally {
        finish();
        await blocker;
      }
    });

    it("still checks annotation boxes against the stored image", async () => {
      const content = await nextPng(); // 32x24
      await catalogue.upload(owner, { content, index: false });
      const boxes = [{ className: "x", x: 30, y: 0, width: 10, height: 5, confidence: 1 }];
      await expect(
        catalogue.upload(owner, { content, index: false, annotations: { classes: {}, boxes } }),
      ).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    });

    it("writes back bytes an earlier fault lost", async () => {
      const content = await nextPng();
      const { image } = await catalogue.upload(owner, { content, index: false });
      await blobs.inner.delete(image.sha256); // as the old delete could leave it
      const again = await catalogue.upload(owner, { content, index: false });
      expect(again.deduplicated).toBe(true);
      expect((await catalogue.getWithContent(owner, image.id)).content.equals(content)).toBe(true);
      expect(analyseCalls).toBe(1);
    });
  });
});
