// Builds hnswlib-node's addon a second time with AVX2 and FMA (src/vector/hnsw-addon.mjs says
// why and when it is used), into native/build/hnswlib-avx2/, only on a CPU that runs it and only
// when that build is missing or was made from another hnswlib-node, Node ABI or set of flags.
// `npm start`, `npm test` and the load benchmark run this first; a restart costs a stat or two.
//
// node-gyp is npm's own (npm names it to the scripts it runs), the headers those of the running
// node when it ships them (no download). A build that fails is reported and skipped: the graph
// then runs on the package's baseline build, as it would on a CPU without AVX2.
//
// Plain JavaScript: it runs before anything else, with nothing but node.
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { AVX2_ADDON, AVX2_CXXFLAGS, AVX2_DIR, cpuRunsAvx2 } from "../src/vector/hnsw-addon.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const installed = path.join(root, "node_modules", "hnswlib-node");
const stamp = path.join(AVX2_DIR, "build.stamp");

/** npm's node-gyp: the one npm names to its scripts, else the one beside the global npm. */
function nodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  try {
    const global = execFileSync("npm", ["root", "-g"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    const script = path.join(global, "npm", "node_modules", "node-gyp", "bin", "node-gyp.js");
    if (existsSync(script)) return script;
  } catch {
    // below
  }
  return undefined;
}

function build() {
  if (!cpuRunsAvx2() || !existsSync(installed)) return;
  const version = JSON.parse(readFileSync(path.join(installed, "package.json"), "utf8")).version;
  const recipe = `hnswlib-node ${version}\nnode abi ${process.versions.modules} ${process.arch}\nCXXFLAGS ${AVX2_CXXFLAGS}\n`;
  if (existsSync(AVX2_ADDON) && existsSync(stamp) && readFileSync(stamp, "utf8") === recipe) return;
  const gyp = nodeGyp();
  if (gyp === undefined) return console.error("hnswlib AVX2 build skipped: npm's node-gyp not found (the baseline build runs)");
  console.error(`building hnswlib-node ${version} with ${AVX2_CXXFLAGS} (once; the baseline build runs where this fails)`);
  const dir = mkdtempSync(path.join(os.tmpdir(), "glimpse-hnswlib-"));
  try {
    cpSync(installed, dir, { recursive: true, filter: (src) => !src.startsWith(path.join(installed, "build")) });
    const args = [gyp, "rebuild"];
    const nodedir = path.resolve(path.dirname(process.execPath), "..");
    if (existsSync(path.join(nodedir, "include", "node", "node.h"))) args.push(`--nodedir=${nodedir}`);
    const result = spawnSync(process.execPath, args, {
      cwd: dir,
      // binding.gyp asks node for node-addon-api's headers, which the copy finds in the project's modules.
      env: { ...process.env, CXXFLAGS: AVX2_CXXFLAGS, NODE_PATH: path.join(root, "node_modules") },
      encoding: "utf8",
    });
    const built = path.join(dir, "build", "Release", "addon.node");
    if (result.status !== 0 || !existsSync(built)) {
      console.error(`hnswlib AVX2 build failed (the baseline build runs):\n${`${result.stdout ?? ""}${result.stderr ?? ""}`.slice(-2000)}`);
      return;
    }
    mkdirSync(AVX2_DIR, { recursive: true });
    // A rename replaces the file whole, also under a process that has the old one loaded.
    copyFileSync(built, `${AVX2_ADDON}.tmp`);
    renameSync(`${AVX2_ADDON}.tmp`, AVX2_ADDON);
    writeFileSync(stamp, recipe);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

build();
