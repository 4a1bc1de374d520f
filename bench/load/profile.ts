/**
 * Self time by function in a V8 .cpuprofile (what `node --cpu-prof` and the inspector's
 * Profiler write), split into ours (the build's src/) and everything else, so a load run can
 * name the hot spots of the call it drove.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { round } from "../lib.js";

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

export interface HotFunction {
  function: string;
  /** path (and line, outside .ts files), relative to the build's root when inside it. */
  location: string;
  self_ms: number;
  /** Share of the busy time (all samples but idle). */
  self_pct: number;
}

export interface ProfileSummary {
  file: string;
  total_ms: number;
  busy_ms: number;
  idle_ms: number;
  gc_ms: number;
  /** Self time in this build's src/ (generated code in src/gen included) as a share of busy time. */
  ours_pct: number;
  top: HotFunction[];
  ours: HotFunction[];
}

function locate(url: string, root: string): { location: string; ours: boolean } {
  if (!url) return { location: "", ours: false };
  let file = url;
  try {
    if (url.startsWith("file:")) file = fileURLToPath(url);
  } catch {
    // keep the url as it is
  }
  const rel = path.relative(root, file);
  const inside = !rel.startsWith("..") && !path.isAbsolute(rel);
  return { location: inside ? rel : file, ours: inside && rel.startsWith(`src${path.sep}`) };
}

/** Reads a .cpuprofile and sums self time per function (name and source line). */
export async function summariseProfile(file: string, root: string, top = 25): Promise<ProfileSummary> {
  const profile = JSON.parse(await readFile(file, "utf8")) as CpuProfile;
  const byNode = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; the time after it (until the next) is its own.
  for (let i = 0; i < profile.samples.length; i++) {
    const us = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + us);
  }
  const byFunction = new Map<string, { function: string; location: string; ours: boolean; us: number }>();
  let totalUs = 0;
  let idleUs = 0;
  let gcUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byNode.get(id)!;
    totalUs += us;
    if (frame.functionName === "(idle)") idleUs += us;
    if (frame.functionName === "(garbage collector)") gcUs += us;
    const { location, ours } = locate(frame.url, root);
    // Under tsx the .ts files run transpiled without their source map, so their line numbers
    // are not the source's: name the file only.
    const where = !location ? "" : location.endsWith(".ts") ? location : `${location}:${frame.lineNumber + 1}`;
    const name = frame.functionName || "(anonymous)";
    const key = `${name} ${where}`;
    const entry = byFunction.get(key) ?? { function: name, location: where, ours, us: 0 };
    entry.us += us;
    byFunction.set(key, entry);
  }
  const busyUs = totalUs - idleUs;
  const rank = (list: typeof byFunction extends Map<string, infer V> ? V[] : never) =>
    list
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((e) => ({ function: e.function, location: e.location, self_ms: round(e.us / 1000, 1), self_pct: round((100 * e.us) / busyUs, 2) }));
  const all = [...byFunction.values()].filter((e) => e.function !== "(idle)");
  const ours = all.filter((e) => e.ours);
  return {
    file,
    total_ms: round(totalUs / 1000, 1),
    busy_ms: round(busyUs / 1000, 1),
    idle_ms: round(idleUs / 1000, 1),
    gc_ms: round(gcUs / 1000, 1),
    ours_pct: round((100 * ours.reduce((a, e) => a + e.us, 0)) / busyUs, 1),
    top: rank(all),
    ours: rank(ours),
  };
}
