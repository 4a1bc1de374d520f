// Builds the web gallery (npm run build:web, Vite) only when web/dist is missing or older than
// what it is built from: web/index.html, web/src, web/vite.config.ts and Vite's version.
// `npm start` and `npm test` run this first, so the bridge always has a current page to serve
// at `/` while a restart with nothing changed costs a few stats.
//
// Plain JavaScript, no dependencies: it runs before anything else, with nothing but node.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const web = path.join(root, "web");
const output = path.join(web, "dist", "index.html");
const stamp = path.join(web, "dist", ".stamp");

function filesUnder(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? filesUnder(full) : [full];
  });
}

function buildRecipe() {
  const command = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")).scripts["build:web"];
  const vite = path.join(root, "node_modules", "vite", "package.json");
  const version = existsSync(vite) ? JSON.parse(readFileSync(vite, "utf8")).version : "missing";
  return `${command}\nvite ${version}\n`;
}

function staleReason(recipe) {
  if (!existsSync(output)) return "web/dist is missing";
  if (!existsSync(stamp) || readFileSync(stamp, "utf8") !== recipe) return "the build command or Vite changed";
  const built = statSync(output).mtimeMs;
  const sources = [path.join(web, "index.html"), path.join(web, "vite.config.ts"), ...filesUnder(path.join(web, "src"))];
  const newer = sources.find((file) => statSync(file).mtimeMs > built);
  return newer === undefined ? undefined : `${path.relative(root, newer)} changed`;
}

const recipe = buildRecipe();
const reason = staleReason(recipe);
if (reason !== undefined) {
  console.error(`building the web gallery: ${reason}`);
  const result = spawnSync("npm", ["run", "--silent", "build:web"], { cwd: root, stdio: "inherit", shell: process.platform === "win32" });
  if (result.status !== 0) process.exit(result.status ?? 1);
  writeFileSync(stamp, recipe);
}
