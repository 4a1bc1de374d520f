import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { clusteredVectors, makeRandom } from "../../bench/vectors.js";
import { VectorIndex } from "../../src/vector/vector-index.js";

const DIM = 32;
const K = 10;

/** The same index on both threads, changed the same way. */
async function pair(initialCapacity = 64) {
  const inline = await VectorIndex.create({ modelId: "m", dimension: DIM, initialCapacity, graphThread: "inline" });
  const worker = await VectorIndex.create({ modelId: "m", dimension: DIM, initialCapacity, graphThread: "worker" });
  return { inline, worker, both: [inline, worker] };
}

describe("the HNSW graph on a thread of its own", () => {
  const open: VectorIndex[] = [];
  afterEach(() => {
    for (const index of open.splice(0)) index.dispose();
  });

  it("answers as the graph on the calling thread does, through inserts past capacity, deletes, slot reuse and filters", async () => {
    const { inline, worker, both } = await pair();
    open.push(...both);
    const { vectors, queries } = clusteredVectors({ count: 3000, dimension: DIM, clusters: 12, queries: 20, seed: 3 });
    const random = makeRandom(5);
    const ids = vectors.map((_, i) => 9_000_000_000_000_000_000n + BigInt(i) * 7n);
    for (const index of both) vectors.forEach((v, i) => index.upsert(ids[i], v)); // 3000 slots: the graph grows 64 -> 4096
    const removed = ids.filter(() => random() < 0.2);
    for (const index of both) {
      for (const id of removed) index.remove(id);
      // Reuses the freed slots, in the same order on both.
      vectors.slice(0, 100).forEach((v, i) => index.upsert(1_000_000n + BigInt(i), v));
    }
    expect(worker.slots).toBe(inline.slots);
    const allowed = new Uint8Array(worker.slots);
    for (let s = 0; s < allowed.length; s++) allowed[s] = random() < 0.3 ? 1 : 0;
    for (const query of queries) {
      const want = await inline.searchHnsw(query, K, 64);
      expect(await worker.searchHnsw(query, K, 64)).toEqual(want);
      expect(want.map((n) => n.id).filter((id) => removed.includes(id))).toEqual([]);
      const filtered = await worker.searchHnsw(query, K, 128, allowed);
      expect(filtered).toEqual(await inline.searchHnsw(query, K, 128, allowed));
      for (const n of filtered) expect(allowed[worker.slot(n.id)!]).toBe(1);
    }
  }, 60_000);

  it("sees every change made before a search, without waiting for the thread", async () => {
    const { worker } = await pair();
    open.push(worker);
    const v = (x: number) => Float32Array.from({ length: DIM }, (_, d) => (d === x ? 1 : 0));
    worker.upsert(11n, v(0));
    expect((await worker.searchHnsw(v(0), 1, 16))[0].id).toBe(11n);
    worker.remove(11n);
    worker.upsert(12n, v(0)); // slot 0 again, now another image
    const [top] = await worker.searchHnsw(v(0), 1, 16);
    expect(top).toEqual({ id: 12n, cosine: 1 });
    // A search in flight while its slot changes hands names the image the slot held when it ran.
    const inFlight = worker.searchHnsw(v(0), 1, 16);
    worker.remove(12n);
    worker.upsert(13n, v(1));
    expect((await inFlight)[0].id).toBe(12n);
    expect((await worker.searchHnsw(v(0), 1, 16))[0].id).toBe(13n);
  });

  it("answers a lone caller's walk without a trip through the event loop, exactly as inline", async () => {
    const calls = { running: 1 };
    const walks: number[] = [];
    const inline = await VectorIndex.create({ modelId: "m", dimension: DIM, initialCapacity: 64, graphThread: "inline" });
    const worker = await VectorIndex.create({
      modelId: "m",
      dimension: DIM,
      initialCapacity: 64,
      graphThread: "worker",
      pace: { callsRunning: () => calls.running },
      onWalk: (ms) => walks.push(ms),
    });
    open.push(inline, worker);
    const { vectors, queries } = clusteredVectors({ count: 2000, dimension: DIM, clusters: 10, queries: 20, seed: 21 });
    for (const index of [inline, worker]) vectors.forEach((v, i) => index.upsert(BigInt(i + 1), v));
    await worker.graphSettled();
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    let takenAtOnce = 0;
    for (const [i, query] of queries.entries()) {
      await sleep(2); // the event loop sleeps between one caller's calls
      // Inserts posted just before are applied before the walk, polled for or not.
      for (const index of [inline, worker]) index.upsert(10_000n + BigInt(i), vectors[i * 7]);
      const answer = worker.searchHnsw(query, K, 64);
      // Taken before searchHnsw returned: the main thread polled for it (a loaded machine may
      // not run the graph's thread within the poll's bound, so not every time).
      if (worker.graphAwaited === 0) takenAtOnce++;
      expect(await answer).toEqual(await inline.searchHnsw(query, K, 64));
    }
    expect(takenAtOnce).toBeGreaterThan(0);
    // With another call running the answer comes through the event loop, as under load.
    calls.running = 2;
    await sleep(2);
    const answer = worker.searchHnsw(queries[1], K, 64);
    expect(worker.graphAwaited).toBe(1);
    expect(await answer).toEqual(await inline.searchHnsw(queries[1], K, 64));
    // Every walk's own time was reported, measured on the graph's thread.
    expect(walks).toHaveLength(queries.length + 1);
    for (const ms of walks) expect(ms).toBeGreaterThan(0);
  }, 60_000);

  it("writes a snapshot from the thread and loads it onto either thread", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "glimpse-graph-"));
    try {
      const { inline, worker, both } = await pair();
      open.push(...both);
      const { vectors, queries } = clusteredVectors({ count: 1500, dimension: DIM, clusters: 8, queries: 10, seed: 9 });
      for (const index of both) {
        vectors.forEach((v, i) => index.upsert(BigInt(i + 1), v));
        index.remove(1n);
      }
      worker.lastSeq = 42n;
      await worker.writeSnapshot(dir);
      // Changes after the write reach the live index only.
      worker.remove(2n);
      for (const graphThread of ["inline", "worker"] as const) {
        const loaded = (await VectorIndex.loadSnapshot(dir, { modelId: "m", dimension: DIM, graphThread }))!;
        open.push(loaded);
        expect(loaded.lastSeq).toBe(42n);
        expect(loaded.size).toBe(1499);
        for (const query of queries) {
          const want = await inline.searchHnsw(query, K, 64);
          expect(await loaded.searchHnsw(query, K, 64)).toEqual(want);
          expect((await worker.searchHnsw(query, K, 64)).map((n) => n.id)).not.toContain(2n);
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("closes without taking the process down while changes are still queued", async () => {
    // Terminating the thread in the middle of an insert made hnswlib throw into a dying
    // engine, a fatal error that ended the whole process (a stop during a rebuild, say).
    const dim = 128;
    const random = makeRandom(17);
    for (let round = 0; round < 20; round++) {
      const index = await VectorIndex.create({ modelId: "m", dimension: dim, initialCapacity: 64, graphThread: "worker" });
      for (let i = 0; i < 400; i++) index.upsert(BigInt(i + 1), Float32Array.from({ length: dim }, () => random() - 0.5));
      await new Promise((resolve) => setTimeout(resolve, random() * 30));
      index.dispose();
      await expect(index.searchHnsw(new Float32Array(dim).fill(0.1), 1, 16)).rejects.toThrow(/graph thread stopped \(closed\)/);
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(process.exitCode ?? 0).toBe(0);
  }, 60_000);

  it("fails its searches, instead of hanging, once the thread is gone", async () => {
    const { worker } = await pair();
    worker.upsert(1n, new Float32Array(DIM).fill(0.1));
    worker.dispose();
    await expect(worker.searchHnsw(new Float32Array(DIM).fill(0.1), 1, 16)).rejects.toThrow(/graph thread stopped/);
  });
});
