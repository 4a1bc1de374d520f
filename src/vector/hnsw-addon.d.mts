import type hnswlib from "hnswlib-node";

/** `auto`: the AVX2 build where the CPU runs it and it was built; `baseline`: the package's. */
export type HnswBuildChoice = "auto" | "baseline";
export type HnswBuild = "avx2" | "baseline";

export const AVX2_CXXFLAGS: string;
export const AVX2_DIR: string;
export const AVX2_ADDON: string;
export function cpuRunsAvx2(): boolean;
export function chooseBuild(wanted?: HnswBuildChoice): HnswBuild;
export function loadBuild(build: HnswBuild): typeof hnswlib;
export function loadHnswlib(wanted?: HnswBuildChoice): { build: HnswBuild; hnswlib: typeof hnswlib };
