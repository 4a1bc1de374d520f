/**
 * Sweep: the highest open-loop arrival rate a scenario sustains with p99 under a bound. Rates
 * double from a start until one fails, then the gap between the last rate that held and the
 * first that did not is bisected (geometrically) until it is within `precision`; bounded by a
 * number of probes and a deadline, after which the best rate found so far is reported.
 *
 * A rate holds when every call answered OK, none was dropped for want of an in-flight slot,
 * p99 (measured from the intended send time) is at most the bound, and the answered rate is
 * at least 95% of the offered one.
 */

export interface ProbeResult {
  p99_ms: number;
  ok_per_s: number;
  errors: Record<string, number>;
  dropped: number;
}

export interface Probe<S extends ProbeResult> {
  rate: number;
  held: boolean;
  /** Why the rate did not hold; empty when it did. */
  why: string;
  summary: S;
}

export interface SweepOptions {
  p99Ms: number;
  startRate: number;
  maxRate: number;
  maxProbes: number;
  /** Epoch ms after which no probe starts. */
  deadline: number;
  /** Stop bisecting when the failing rate is within this factor of the holding one. */
  precision: number;
}

export interface SweepResult<S extends ProbeResult> {
  /** Highest rate that held, or null when none did. */
  best: Probe<S> | null;
  /** Lowest rate that did not hold above the best, or null. */
  limit: Probe<S> | null;
  probes: Probe<S>[];
  /** Why the sweep stopped. */
  stopped: string;
}

/** Why a probe at `rate` did not hold, or "" when it held. */
export function verdict(rate: number, s: ProbeResult, p99Ms: number): string {
  const reasons: string[] = [];
  const errors = Object.entries(s.errors);
  if (errors.length > 0) reasons.push(`errors ${errors.map(([k, v]) => `${k} ${v}`).join(", ")}`);
  if (s.dropped > 0) reasons.push(`${s.dropped} dropped`);
  if (!(s.p99_ms <= p99Ms)) reasons.push(`p99 ${s.p99_ms} ms > ${p99Ms} ms`);
  if (s.ok_per_s < 0.95 * rate) reasons.push(`answered ${s.ok_per_s}/s of ${rate}/s`);
  return reasons.join("; ");
}

export async function sweep<S extends ProbeResult>(probe: (rate: number) => Promise<S>, o: SweepOptions): Promise<SweepResult<S>> {
  const probes: Probe<S>[] = [];
  let best: Probe<S> | null = null;
  let limit: Probe<S> | null = null;
  let rate = Math.max(1, Math.round(o.startRate));
  let stopped = "";
  for (;;) {
    if (probes.length >= o.maxProbes) {
      stopped = `probe count bound (${o.maxProbes}) reached`;
      break;
    }
    if (Date.now() >= o.deadline) {
      stopped = "time bound reached";
      break;
    }
    const summary = await probe(rate);
    const why = verdict(rate, summary, o.p99Ms);
    const p: Probe<S> = { rate, held: why === "", why, summary };
    probes.push(p);
    if (p.held) best = p;
    else limit = p;
    let next: number;
    if (best && limit) {
      if (limit.rate / best.rate <= o.precision) {
        stopped = `bracketed within ${Math.round((o.precision - 1) * 100)}%`;
        break;
      }
      next = Math.round(Math.sqrt(best.rate * limit.rate));
      if (next <= best.rate || next >= limit.rate) {
        stopped = "bracketed to 1/s";
        break;
      }
    } else if (best) {
      if (best.rate >= o.maxRate) {
        stopped = `held at the highest rate tried (--max-rate ${o.maxRate}/s)`;
        break;
      }
      next = Math.min(o.maxRate, best.rate * 2);
    } else {
      if (rate <= 1) {
        stopped = "did not hold even at 1/s";
        break;
      }
      next = Math.max(1, Math.floor(rate / 2));
    }
    rate = next;
  }
  return { best, limit, probes, stopped };
}
