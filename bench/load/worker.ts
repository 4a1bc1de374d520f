/**
 * A load worker: a process of its own (forked by bench/load/main.ts with an IPC channel, never
 * the server's process) that runs the runs it is sent and answers each with its latency samples
 * and outcome counts.
 *
 * - closed loop: `concurrency` callers, each sending its next call when the last one answered;
 *   latency from send to answer;
 * - open loop: calls at a fixed rate whatever the server does, each at its intended time
 *   (start + n / rate); latency from the INTENDED send time to the answer, so time a stalled
 *   server keeps a call waiting to be sent counts (the coordinated-omission correction of wrk2
 *   and k6's constant-arrival-rate). Calls beyond `maxInFlight` are not sent and counted as
 *   dropped (k6's dropped_iterations).
 *
 * A call starting in the warm-up is run but not recorded; the run ends at its deadline, after
 * `maxRequests` recorded calls or on an {type: "end", runId} message, whichever is first, and
 * calls still out then get `timeoutMs` to answer.
 *
 * With `spec.addresses`, call number i goes to address i mod n (round-robin over replicas);
 * with `detail`, the reply also says when each recorded call was sent, where and how it ended.
 */
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { makeCall, outcomeOf, type Call, type ScenarioSpec } from "./scenarios.js";

export interface RunRequest {
  type: "run";
  runId: number;
  spec: ScenarioSpec;
  mode: "closed" | "open";
  /** closed: callers in this worker. */
  concurrency: number;
  /** open: calls per second from this worker. */
  rate: number;
  /** open: offset of this worker's first call, ms (workers interleave their schedules). */
  phaseMs: number;
  /** Epoch ms at which every worker starts (the warm-up). */
  startAt: number;
  warmupMs: number;
  durationMs: number;
  /** Bound on the calls recorded by this worker. */
  maxRequests: number;
  maxInFlight: number;
  /** Whether to reply with every recorded call's send time, address and outcome. */
  detail?: boolean;
}

/** Every recorded call, in recording order (with RunRequest.detail). */
export interface CallDetail {
  /** Epoch ms at which the call was sent (open loop: its intended send time). */
  sentAt: Float64Array;
  /** Index into the spec's addresses (0 without them). */
  route: Uint8Array;
  /** Index into `names`. */
  outcome: Uint16Array;
  names: string[];
}

export interface RunReply {
  type: "result";
  runId: number;
  /** Latency of each recorded call, ms (OK or not). */
  samples: Float64Array;
  outcomes: Record<string, number>;
  dropped: number;
  /** Measured window, ms, from the end of the warm-up to the last recorded answer. */
  windowMs: number;
  detail?: CallDetail;
  error?: string;
}

class Samples {
  data = new Float64Array(1024);
  n = 0;
  push(x: number) {
    if (this.n === this.data.length) {
      const next = new Float64Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.n++] = x;
  }
}

/** Runs that an "end" message may stop early, by run id. */
const ending = new Map<number, () => void>();

/** The scenario's call, sent round-robin over spec.addresses by call number when there are several. */
function routedCall(spec: ScenarioSpec): { call: Call; route: (i: number) => number; close(): void } {
  const addresses = spec.addresses?.length ? spec.addresses : [spec.address];
  const built = addresses.map((address) => makeCall({ ...spec, address }));
  const route = (i: number) => i % built.length;
  return {
    call: (i, timeoutMs) => built[route(i)].call(i, timeoutMs),
    route,
    close: () => built.forEach((b) => b.close()),
  };
}

async function run(req: RunRequest): Promise<RunReply> {
  const { call, route, close } = routedCall(req.spec);
  const samples = new Samples();
  const outcomes: Record<string, number> = {};
  const detail = req.detail ? { sentAt: new Samples(), route: [] as number[], outcome: [] as number[], names: [] as string[] } : undefined;
  let dropped = 0;
  // performance.now() at the common start.
  const t0 = performance.now() + (req.startAt - Date.now());
  const measureFrom = t0 + req.warmupMs;
  const deadline = measureFrom + req.durationMs;
  let lastAnswer = measureFrom;
  let recorded = 0;
  let ended = false;
  ending.set(req.runId, () => (ended = true));
  const full = () => ended || recorded >= req.maxRequests;

  const one = async (i: number, from: number, measured: boolean) => {
    let outcome = "OK";
    try {
      await call(i, req.spec.timeoutMs);
    } catch (err) {
      outcome = outcomeOf(err);
    }
    const end = performance.now();
    if (measured) {
      samples.push(end - from);
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      if (end > lastAnswer) lastAnswer = end;
      if (detail) {
        detail.sentAt.push(req.startAt + (from - t0));
        detail.route.push(route(i));
        let at = detail.names.indexOf(outcome);
        if (at < 0) at = detail.names.push(outcome) - 1;
        detail.outcome.push(at);
      }
    }
  };

  const wait = async (until: number) => {
    const ms = until - performance.now();
    if (ms > 1) await sleep(ms - 0.5);
    while (performance.now() < until) await new Promise<void>((r) => setImmediate(r));
  };

  try {
    await wait(t0);
    if (req.mode === "closed") {
      let next = 0;
      const caller = async (c: number) => {
        for (;;) {
          const now = performance.now();
          if (now >= deadline || full()) return;
          const measured = now >= measureFrom;
          if (measured) recorded++;
          await one(c * 1_000_003 + next++, now, measured);
        }
      };
      await Promise.all(Array.from({ length: req.concurrency }, (_, c) => caller(c)));
    } else {
      const interval = 1000 / req.rate;
      const inFlight = new Set<Promise<void>>();
      for (let n = 0; ; n++) {
        const intended = t0 + req.phaseMs + n * interval;
        if (intended >= deadline || full()) break;
        await wait(intended);
        const measured = intended >= measureFrom;
        if (inFlight.size >= req.maxInFlight) {
          if (measured) dropped++;
          continue;
        }
        if (measured) recorded++;
        const p = one(n, intended, measured).finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      await Promise.all(inFlight);
    }
  } finally {
    ending.delete(req.runId);
    close();
  }
  return {
    type: "result",
    runId: req.runId,
    samples: samples.data.slice(0, samples.n),
    outcomes,
    dropped,
    windowMs: Math.max(1, Math.min(lastAnswer, deadline) - measureFrom),
    detail: detail && {
      sentAt: detail.sentAt.data.slice(0, detail.sentAt.n),
      route: Uint8Array.from(detail.route),
      outcome: Uint16Array.from(detail.outcome),
      names: detail.names,
    },
  };
}

process.on("message", (msg: RunRequest | { type: "exit" } | { type: "end"; runId: number }) => {
  if (msg.type === "exit") process.exit(0);
  if (msg.type === "end") return ending.get(msg.runId)?.();
  if (msg.type !== "run") return;
  run(msg).then(
    (reply) => process.send!(reply),
    (err) =>
      process.send!({
        type: "result",
        runId: msg.runId,
        samples: new Float64Array(0),
        outcomes: {},
        dropped: 0,
        windowMs: 1,
        error: String((err as Error)?.stack ?? err),
      } satisfies RunReply),
  );
});
process.on("disconnect", () => process.exit(0));
process.send!({ type: "hello", pid: process.pid });
