import { describe, expect, it } from "vitest";
import { Batcher, type BatcherOptions, type BatcherTimers } from "../../src/embedding/batcher.js";
import { DomainError } from "../../src/errors.js";

/** Timers that fire only when the test moves time on. */
class ManualTimers implements BatcherTimers {
  private time = 0;
  private readonly pending = new Map<number, { at: number; callback: () => void }>();
  private nextHandle = 1;

  now(): number {
    return this.time;
  }

  setTimeout(callback: () => void, ms: number): unknown {
    const handle = this.nextHandle++;
    this.pending.set(handle, { at: this.time + ms, callback });
    return handle;
  }

  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }

  /** Moves time on by `ms`, firing what falls due in order. */
  advance(ms: number): void {
    const until = this.time + ms;
    for (;;) {
      const next = [...this.pending.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (next === undefined) break;
      this.pending.delete(next[0]);
      this.time = next[1].at;
      next[1].callback();
    }
    this.time = until;
  }

  get armed(): number {
    return this.pending.size;
  }
}

/** A run function whose calls the test sees and finishes by hand. */
function controlledRun<I, O>() {
  const calls: { items: I[]; resolve(outputs: O[]): void; reject(error: unknown): void }[] = [];
  const run = (items: I[]) =>
    new Promise<O[]>((resolve, reject) => {
      calls.push({ items, resolve, reject });
    });
  return { calls, run };
}

/** Lets promise callbacks (settled batches, the next schedule) run. */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

function setup(overrides: Partial<BatcherOptions<string, string>> = {}) {
  const timers = new ManualTimers();
  const { calls, run } = controlledRun<string, string>();
  const batcher = new Batcher<string, string>({ maxBatchSize: 3, maxWaitMs: 10, maxQueue: 100, run, timers, ...overrides });
  return { timers, calls, batcher };
}

/** Settles `promise` into a plain record so a test can look at it without awaiting. */
function watch<T>(promise: Promise<T>) {
  const state: { value?: T; error?: unknown; settled: boolean } = { settled: false };
  promise.then(
    (value) => Object.assign(state, { value, settled: true }),
    (error: unknown) => Object.assign(state, { error, settled: true }),
  );
  return state;
}

describe("Batcher", () => {
  it("runs a full batch at once and gives each caller its own output, in order", async () => {
    const { calls, batcher } = setup();
    const results = ["a", "b", "c"].map((item) => batcher.submit(item));
    expect(calls.map((c) => c.items)).toEqual([["a", "b", "c"]]);
    calls[0].resolve(["A", "B", "C"]);
    await expect(Promise.all(results)).resolves.toEqual(["A", "B", "C"]);
  });

  it("runs a lone item maxWaitMs after it was queued, not before", async () => {
    const { timers, calls, batcher } = setup();
    const result = batcher.submit("a");
    timers.advance(9);
    expect(calls).toHaveLength(0);
    expect(batcher.queued).toBe(1);
    timers.advance(1);
    expect(calls.map((c) => c.items)).toEqual([["a"]]);
    expect(batcher.queued).toBe(0);
    calls[0].resolve(["A"]);
    await expect(result).resolves.toBe("A");
  });

  it("groups what arrives within the wait, timed from the first item", async () => {
    const { timers, calls, batcher } = setup({ maxBatchSize: 10 });
    const a = batcher.submit("a");
    timers.advance(6);
    const b = batcher.submit("b");
    timers.advance(4);
    expect(calls.map((c) => c.items)).toEqual([["a", "b"]]);
    calls[0].resolve(["A", "B"]);
    await expect(Promise.all([a, b])).resolves.toEqual(["A", "B"]);
  });

  it("runs one batch at a time; the next forms meanwhile and starts when the first ends", async () => {
    const { timers, calls, batcher } = setup({ maxBatchSize: 2 });
    const first = [batcher.submit("a"), batcher.submit("b")];
    const second = [batcher.submit("c"), batcher.submit("d"), batcher.submit("e")];
    expect(calls).toHaveLength(1);
    expect(batcher.queued).toBe(3);
    timers.advance(100);
    expect(calls).toHaveLength(1);

    calls[0].resolve(["A", "B"]);
    await flush();
    expect(calls.map((c) => c.items)).toEqual([
      ["a", "b"],
      ["c", "d"],
    ]);
    calls[1].resolve(["C", "D"]);
    await flush();
    // "e" was queued with c and d and has waited past maxWaitMs: it runs at once.
    expect(calls.map((c) => c.items)).toEqual([["a", "b"], ["c", "d"], ["e"]]);
    calls[2].resolve(["E"]);
    await expect(Promise.all([...first, ...second])).resolves.toEqual(["A", "B", "C", "D", "E"]);
  });

  it("fails every item of a failed run with its error, and goes on with the next batch", async () => {
    const { calls, batcher } = setup({ maxBatchSize: 2 });
    const failing = [batcher.submit("a"), batcher.submit("b")];
    const next = [batcher.submit("c"), batcher.submit("d")];
    const error = new Error("model crashed");
    calls[0].reject(error);
    for (const p of failing) await expect(p).rejects.toBe(error);
    await flush();
    calls[1].resolve(["C", "D"]);
    await expect(Promise.all(next)).resolves.toEqual(["C", "D"]);
  });

  it("fails a batch whose run returns the wrong number of outputs", async () => {
    const { calls, batcher } = setup({ maxBatchSize: 2 });
    const results = [batcher.submit("a"), batcher.submit("b")];
    calls[0].resolve(["A"]);
    for (const p of results) await expect(p).rejects.toMatchObject({ code: "INTERNAL" });
  });

  it("refuses at once with RESOURCE_EXHAUSTED and a retry hint when maxQueue items wait", async () => {
    const { timers, calls, batcher } = setup({ maxBatchSize: 2, maxQueue: 2 });
    const running = [batcher.submit("a"), batcher.submit("b")]; // running, not waiting
    const waiting = [batcher.submit("c"), batcher.submit("d")];
    const refused = batcher.submit("e");
    await expect(refused).rejects.toBeInstanceOf(DomainError);
    await expect(refused).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    const error = (await refused.catch((e: unknown) => e)) as DomainError;
    expect(error.retryAfterMs).toBeGreaterThan(0);

    calls[0].resolve(["A", "B"]);
    await flush();
    calls[1].resolve(["C", "D"]);
    await expect(Promise.all([...running, ...waiting])).resolves.toEqual(["A", "B", "C", "D"]);
    // Room again.
    const later = batcher.submit("f");
    timers.advance(10);
    calls[2].resolve(["F"]);
    await expect(later).resolves.toBe("F");
  });

  it("takes an aborted item out of the queue and rejects it with the signal's reason", async () => {
    const { timers, calls, batcher } = setup();
    const controller = new AbortController();
    const kept = batcher.submit("a");
    const aborted = batcher.submit("b", controller.signal);
    const reason = new Error("caller went away");
    controller.abort(reason);
    await expect(aborted).rejects.toBe(reason);
    expect(batcher.queued).toBe(1);
    timers.advance(10);
    expect(calls.map((c) => c.items)).toEqual([["a"]]);
    calls[0].resolve(["A"]);
    await expect(kept).resolves.toBe("A");
  });

  it("runs nothing when the only queued item is aborted", async () => {
    const { timers, calls, batcher } = setup();
    const controller = new AbortController();
    const aborted = batcher.submit("a", controller.signal);
    controller.abort();
    await expect(aborted).rejects.toMatchObject({ name: "AbortError" });
    expect(timers.armed).toBe(0);
    timers.advance(100);
    expect(calls).toHaveLength(0);
  });

  it("times a left-over item's wait from when it was queued", async () => {
    const { timers, calls, batcher } = setup({ maxBatchSize: 2 });
    const first = [batcher.submit("a")];
    timers.advance(4);
    first.push(batcher.submit("b")); // full: runs at t=4
    timers.advance(2);
    const late = [batcher.submit("c"), batcher.submit("d"), batcher.submit("e")]; // queued at t=6
    timers.advance(3);
    calls[0].resolve(["A", "B"]);
    await flush(); // t=9: c and d run; e is due at t=16 (not 19, as timing from now would say)
    calls[1].resolve(["C", "D"]);
    await flush();
    timers.advance(6);
    expect(calls).toHaveLength(2);
    timers.advance(1);
    expect(calls.map((c) => c.items)).toEqual([["a", "b"], ["c", "d"], ["e"]]);
    calls[2].resolve(["E"]);
    await expect(Promise.all([...first, ...late])).resolves.toEqual(["A", "B", "C", "D", "E"]);
  });

  it("rejects an already aborted signal without queueing", async () => {
    const { batcher } = setup();
    const reason = new Error("too late");
    await expect(batcher.submit("a", AbortSignal.abort(reason))).rejects.toBe(reason);
    expect(batcher.queued).toBe(0);
  });

  it("stops waiting for an item whose batch is running when its signal aborts", async () => {
    const { calls, batcher } = setup({ maxBatchSize: 2 });
    const controller = new AbortController();
    const aborted = batcher.submit("a", controller.signal);
    const other = batcher.submit("b");
    controller.abort(new Error("deadline"));
    await expect(aborted).rejects.toThrow("deadline");
    calls[0].resolve(["A", "B"]);
    await expect(other).resolves.toBe("B");
  });

  it("close() fails queued items with UNAVAILABLE, lets the running batch finish, then refuses", async () => {
    const { calls, batcher } = setup({ maxBatchSize: 2 });
    const running = batcher.submit("a");
    const alsoRunning = batcher.submit("b");
    const queued = batcher.submit("c");
    const closed = watch(batcher.close());
    await expect(queued).rejects.toMatchObject({ code: "UNAVAILABLE" });
    await flush();
    expect(closed.settled).toBe(false);
    calls[0].resolve(["A", "B"]);
    await expect(Promise.all([running, alsoRunning])).resolves.toEqual(["A", "B"]);
    await flush();
    expect(closed.settled).toBe(true);
    await expect(batcher.submit("d")).rejects.toMatchObject({ code: "UNAVAILABLE" });
    expect(calls).toHaveLength(1);
  });
});
