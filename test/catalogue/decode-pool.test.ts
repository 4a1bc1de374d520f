import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { analyseImage, DEFAULT_LIMITS } from "../../src/catalogue/analyse.js";
import { DecodePool } from "../../src/catalogue/decode-pool.js";
import { DomainError } from "../../src/errors.js";
import { distinctPng } from "../helpers/images.js";

/** A task the test finishes by hand, to hold a slot for as long as it likes. */
function gate() {
  let open: () => void = () => undefined;
  let fail: (error: Error) => void = () => undefined;
  const done = new Promise<void>((resolve, reject) => {
    open = resolve;
    fail = reject;
  });
  return { task: () => done, open, fail };
}

describe("DecodePool", () => {
  it("runs no more than its concurrency at once and the rest in arrival order", async () => {
    const pool = new DecodePool({ concurrency: 3, maxQueue: 10 });
    let running = 0;
    let most = 0;
    const started: number[] = [];
    const gates = Array.from({ length: 10 }, gate);
    const runs = gates.map((g, i) =>
      pool.run(async () => {
        started.push(i);
        most = Math.max(most, ++running);
        await g.task();
        running--;
        return i;
      }),
    );
    await Promise.resolve();
    expect(pool.active).toBe(3);
    expect(pool.queued).toBe(7);
    for (const g of gates) {
      g.open();
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await Promise.all(runs)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(most).toBe(3);
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(pool.active).toBe(0);
  });

  it("refuses with RESOURCE_EXHAUSTED and a retry delay when its queue is full", async () => {
    const pool = new DecodePool({ concurrency: 1, maxQueue: 2 });
    const g = gate();
    const runs = [pool.run(g.task), pool.run(g.task), pool.run(g.task)];
    const refused = await pool.run(g.task).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(DomainError);
    expect(refused).toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    expect((refused as DomainError).retryAfterMs).toBeGreaterThan(0);
    g.open();
    await Promise.all(runs);
    // Room again once the queue drained.
    await expect(pool.run(async () => "ok")).resolves.toBe("ok");
  });

  it("drops a waiter whose signal aborts, and passes the slot on after a failed task", async () => {
    const pool = new DecodePool({ concurrency: 1, maxQueue: 1 });
    const first = gate();
    const running = pool.run(first.task);
    const controller = new AbortController();
    const waiting = pool.run(async () => "never", controller.signal);
    controller.abort(new Error("caller went away"));
    await expect(waiting).rejects.toThrow("caller went away");
    expect(pool.queued).toBe(0);
    // The queue has room again, and a failing task frees its slot.
    const next = pool.run(async () => "next");
    first.fail(new Error("corrupt"));
    await expect(running).rejects.toThrow("corrupt");
    await expect(next).resolves.toBe("next");
    expect(pool.active).toBe(0);
    // An already aborted signal never queues.
    await expect(pool.run(async () => 1, AbortSignal.abort(new Error("late")))).rejects.toThrow("late");
  });

  it("rejects settings that could never run anything", () => {
    expect(() => new DecodePool({ concurrency: 0, maxQueue: 1 })).toThrow(/concurrency/);
    expect(() => new DecodePool({ concurrency: 1, maxQueue: -1 })).toThrow(/maxQueue/);
  });
});

describe("analyseImage through a decode pool", () => {
  it("waits for a slot before decoding, and is refused when none can be had", async () => {
    const pool = new DecodePool({ concurrency: 1, maxQueue: 0 });
    const busy = gate();
    const holding = pool.run(busy.task);
    const png = await distinctPng(1);
    await expect(analyseImage(png, DEFAULT_LIMITS, "content", { pool })).rejects.toMatchObject({
      code: "RESOURCE_EXHAUSTED",
    });
    busy.open();
    await holding;
    const facts = await analyseImage(png, DEFAULT_LIMITS, "content", { pool });
    expect(facts).toMatchObject({ mediaType: "image/png", width: 32, height: 24 });
  });

  it("refuses a decompression bomb from its header without taking a slot", async () => {
    const pool = new DecodePool({ concurrency: 1, maxQueue: 0 });
    const busy = gate();
    const holding = pool.run(busy.task);
    const bomb = await sharp({ create: { width: 4000, height: 4000, channels: 3, background: "#000" } }).png().toBuffer();
    await expect(
      analyseImage(bomb, { ...DEFAULT_LIMITS, maxPixels: 1_000_000 }, "content", { pool }),
    ).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    busy.open();
    await holding;
  });
});
