// Builds the WASM kernel (npm run build:native) only when native/build/kernel.wasm is missing or
// older than what it is built from: the AssemblyScript sources under native/assembly, the
// compiler's version, and the build command itself. `npm start`, `npm test` and the benches run
// this first, so a restart costs a stat of a few files instead of a 16 s compile, while an edit
// of the kernel (or a fresh clone, which has no build) still gets a fresh one.
//
// Plain JavaScript, no dependencies: it runs before anything else, with nothing but node.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const output = path.join(root, "native", "build", "kernel.wasm");
// Records the command and compiler version the build was made with: a change of either (new
// flags in package.json, an upgraded assemblyscript) makes the build stale even with older files.
const stamp = path.join(root, "native", "build", "kernel.stamp");

/** Every file under a directory, recursively. */
function filesUnder(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? filesUnder(full) : [full];
  });
}

/** What the build depends on besides its source files: the command and the compiler version. */
function buildRecipe() {
  const command = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")).scripts["build:native"];
  const compiler = path.join(root, "node_modules", "assemblyscript", "package.json");
  const version = existsSync(compiler) ? JSON.parse(readFileSync(compiler, "utf8")).version : "missing";
  return `${command}\nassemblyscript ${version}\n`;
}

/** Why the build must run again, or undefined when it is current. */
function staleReason(recipe) {
  if (!existsSync(output)) return "native/build/kernel.wasm is missing";
  if (!existsSync(stamp) || readFileSync(stamp, "utf8") !== recipe) return "the build command or compiler changed";
  const built = statSync(output).mtimeMs;
  const newer = filesUnder(path.join(root, "native", "assembly")).find((file) => statSync(file).mtimeMs > built);
  return newer === undefined ? undefined : `${path.relative(root, newer)} changed`;
}

const recipe = buildRecipe();
const reason = staleReason(recipe);
if (reason !== undefined) {
  console.error(`building the WASM kernel: ${reason}`);
  const result = spawnSync("npm", ["run", "--silent", "build:native"], { cwd: root, stdio: "inherit", shell: process.platform === "win32" });
  if (result.status !== 0) process.exit(result.status ?? 1);
  writeFileSync(stamp, recipe);
}
