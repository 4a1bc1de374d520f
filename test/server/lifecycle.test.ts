import { describe, expect, it } from "vitest";
import { Lifecycle, ServerShutdown } from "../../src/server/middleware/lifecycle.js";

/*
 * What a handler sees of shutdown through its signal: a call still running when the grace
 * period ends is aborted with ServerShutdown (its caller gets UNAVAILABLE and retries
 * elsewhere), a call that never ends by itself is aborted as draining starts, and a call its
 * caller cancelled keeps that reason. The signal is made when first read: whenever the
 * handler reads it, it must tell the same story.
 */
describe("the lifecycle of calls", () => {
  const serving = () => {
    const lifecycle = new Lifecycle();
    lifecycle.phase = "serving";
    return lifecycle;
  };
  const path = "/glimpse.image.v1.ImageService/GetImage";

  it("aborts calls still running after the grace period with ServerShutdown, whenever their handler reads its signal", async () => {
    const lifecycle = serving();
    const readEarly = lifecycle.admit(path, new AbortController().signal);
    const early = readEarly.signal;
    const readLate = lifecycle.admit(path, new AbortController().signal);
    expect(lifecycle.inFlight).toBe(2);
    const draining = lifecycle.drain(0);
    // The grace period has not ended: nothing is aborted yet.
    expect(early.aborted).toBe(false);
    await new Promise((resolve) => early.addEventListener("abort", resolve, { once: true }));
    expect(early.reason).toBeInstanceOf(ServerShutdown);
    expect(readLate.signal.aborted).toBe(true);
    expect(readLate.signal.reason).toBeInstanceOf(ServerShutdown);
    readEarly.leave();
    readLate.leave();
    expect(await draining).toEqual({ aborted: 2 });
    expect(lifecycle.inFlight).toBe(0);
  });

  it("aborts a call that never ends by itself as soon as draining starts", async () => {
    const lifecycle = serving();
    const watch = lifecycle.admit(path, new AbortController().signal);
    watch.abortOnTerminate();
    const draining = lifecycle.drain(60_000);
    expect(watch.signal.aborted).toBe(true);
    expect(watch.signal.reason).toBeInstanceOf(ServerShutdown);
    watch.leave();
    expect(await draining).toEqual({ aborted: 0 });
  });

  it("keeps the caller's reason when the caller cancelled first", async () => {
    const lifecycle = serving();
    const caller = new AbortController();
    const unread = lifecycle.admit(path, caller.signal);
    const read = lifecycle.admit(path, caller.signal);
    const signal = read.signal;
    // A call of another caller, to see when the grace period has ended.
    const witness = lifecycle.admit(path, new AbortController().signal);
    const graceOver = new Promise((resolve) => witness.signal.addEventListener("abort", resolve, { once: true }));
    const cancelled = new Error("cancelled by the client");
    caller.abort(cancelled);
    const draining = lifecycle.drain(0);
    await graceOver;
    expect(witness.signal.reason).toBeInstanceOf(ServerShutdown);
    expect(signal.reason).toBe(cancelled);
    expect(unread.signal.reason).toBe(cancelled);
    for (const call of [read, unread, witness]) call.leave();
    expect(await draining).toEqual({ aborted: 3 });
  });

  it("follows the caller's cancellation while the call runs", () => {
    const lifecycle = serving();
    const caller = new AbortController();
    const call = lifecycle.admit(path, caller.signal);
    const signal = call.signal;
    caller.abort("gone");
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe("gone");
    call.leave();
  });

  it("refuses calls before serving and while draining, but not health checks", async () => {
    const lifecycle = new Lifecycle();
    expect(() => lifecycle.admit(path, new AbortController().signal)).toThrow("glimpse is starting; retry shortly");
    lifecycle.admit("/grpc.health.v1.Health/Check", new AbortController().signal).leave();
    lifecycle.phase = "serving";
    await lifecycle.drain(0);
    expect(() => lifecycle.admit(path, new AbortController().signal)).toThrow("glimpse is shutting down; retry shortly");
  });
});
