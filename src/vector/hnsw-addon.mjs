// Which compiled hnswlib-node addon the HNSW graph runs on. The package's own build is made by
// `npm install` for baseline x86-64 (SSE distance code). scripts/build-hnsw-if-stale.mjs builds
// the same source a second time with AVX2 and FMA (`-O3 -mavx2 -mfma`: every Intel CPU since
// Haswell, every AMD CPU since Zen), into native/build/, on a machine whose CPU runs it; this
// module picks that build only on a CPU that runs it (on an older one it would die of SIGILL),
// and the package's otherwise. hnswlib chooses its AVX inner product at compile time from those
// flags. bench/results/hnsw-flags.md measured -march=x86-64-v3 (the same vector extensions):
// the ef-64 walk 1.17x as fast, graph construction 1.29x.
//
// Plain JavaScript: the graph's worker thread (graph-worker.mjs) and the build script load it
// without the TypeScript loader.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);

/** The compiler flags of the second build. */
export const AVX2_CXXFLAGS = "-O3 -mavx2 -mfma";
/** Where scripts/build-hnsw-if-stale.mjs puts the second build. */
export const AVX2_DIR = fileURLToPath(new URL("../../native/build/hnswlib-avx2/", import.meta.url));
export const AVX2_ADDON = `${AVX2_DIR}addon.node`;

/** The instruction sets that build needs, as /proc/cpuinfo names them. */
const AVX2_FLAGS = ["avx", "avx2", "fma"];

let cpuAnswer;
/** Whether this CPU runs AVX2 and FMA code (read from /proc/cpuinfo: Linux on x86-64 only). */
export function cpuRunsAvx2() {
  if (cpuAnswer !== undefined) return cpuAnswer;
  cpuAnswer = false;
  if (process.arch === "x64" && process.platform === "linux") {
    try {
      const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => l.startsWith("flags"));
      const flags = new Set((line ?? "").split(":")[1]?.trim().split(/\s+/) ?? []);
      cpuAnswer = AVX2_FLAGS.every((f) => flags.has(f));
    } catch {
      // No /proc: the baseline build.
    }
  }
  return cpuAnswer;
}

/**
 * The build to run: `baseline` when asked for, or when the CPU or the AVX2 build is not there;
 * `avx2` otherwise.
 */
export function chooseBuild(wanted = "auto") {
  if (wanted !== "auto" && wanted !== "baseline") throw new RangeError(`unknown hnswlib build ${wanted}`);
  return wanted === "auto" && cpuRunsAvx2() && existsSync(AVX2_ADDON) ? "avx2" : "baseline";
}

/** hnswlib-node's exports from one build (`chooseBuild`'s answer). */
export function loadBuild(build) {
  return build === "avx2" ? require(AVX2_ADDON) : require("hnswlib-node");
}

/** hnswlib-node's exports from the chosen build. */
export function loadHnswlib(wanted = "auto") {
  const build = chooseBuild(wanted);
  return { build, hnswlib: loadBuild(build) };
}
