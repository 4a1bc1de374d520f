/**
 * The index snapshot cache of the load harness, shared by its modes (servers and replicas).
 */
import { existsSync } from "node:fs";
import { createHash } from "node:crypto";
import { cp, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import os from "node:os";
import path from "node:path";

/**
 * Index snapshots (unless --no-index-cache): the snapshot a server writes right after
 * building its index on an untouched copy of a template, kept and copied into the data
 * directory of later servers on copies of the same template, which then load it (about a
 * second) instead of rebuilding (minutes at 100k on a busy machine). Keyed by the template and
 * the code that writes and reads snapshots; a snapshot the build cannot use is rebuilt anyway.
 */
export async function indexCacheDir(template: string, root: string): Promise<string> {
  const hash = createHash("sha256");
  for (const file of ["src/vector/vector-index.ts", "src/search/filter-index.ts", "src/search/index-keeper.ts"]) {
    hash.update(await readFile(path.join(root, file)).catch(() => Buffer.alloc(0)));
  }
  return path.join(os.tmpdir(), `glimpse-load-index-${template}-${hash.digest("hex").slice(0, 12)}`);
}

/** Waits (up to 5 min) for the snapshot written after the build, and keeps a copy, before any load. */
export async function keepIndex(dataDir: string, cached: string): Promise<void> {
  const until = Date.now() + 5 * 60_000;
  const manifest = async () => (await readdir(path.join(dataDir, "index")).catch(() => [])).some((d) => existsSync(path.join(dataDir, "index", d, "snapshot.json")));
  while (!(await manifest())) {
    if (Date.now() > until) return console.log("no index snapshot written within 5 min of ready; not cached");
    await sleep(500);
  }
  const tmp = `${cached}.${process.pid}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  await cp(path.join(dataDir, "index"), path.join(tmp, "index"), { recursive: true });
  await writeFile(path.join(tmp, "ok"), new Date().toISOString());
  await rm(cached, { recursive: true, force: true });
  await rename(tmp, cached);
  console.log(`index snapshot kept in ${cached} for later runs on this template`);
}
