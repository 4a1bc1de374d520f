import { createHash } from "node:crypto";
import { appendFile, mkdir, readFile } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";

/** One file the server has stored (or found already stored), as the journal remembers it. */
export interface JournalEntry {
  path: string;
  size: number;
  mtimeMs: number;
  sha256: string;
  imageId: string;
}

/**
 * What earlier runs of one ingest (same folder, server and key) stored, one JSON line per file,
 * appended as each upload is answered: a run that is interrupted and started again skips the
 * files recorded here (same path, size and modification time) without reading or sending
 * them. Losing the journal costs only bandwidth: the request ids derived from path and bytes
 * still make the server answer with what it stored before.
 */
export class IngestJournal {
  private readonly byContent = new Map<string, JournalEntry>();

  private constructor(
    readonly file: string,
    private readonly entries: Map<string, JournalEntry>,
  ) {
    for (const entry of entries.values()) this.byContent.set(entry.sha256, entry);
  }

  /** The journal's default location: under $XDG_CACHE_HOME (or ~/.cache), named by folder, servers and key. */
  static defaultPath(env: NodeJS.ProcessEnv, root: string, addresses: string, key: string): string {
    const cache = env.XDG_CACHE_HOME || path.join(env.HOME || homedir(), ".cache");
    const name = createHash("sha256")
      .update(`${path.resolve(root)}\n${addresses}\n${createHash("sha256").update(key).digest("hex")}`)
      .digest("hex")
      .slice(0, 24);
    return path.join(cache, "glimpse", "ingest", `${name}.jsonl`);
  }

  /** Reads the journal at `file` (empty when it does not exist; unreadable lines are ignored). */
  static async open(file: string): Promise<IngestJournal> {
    const entries = new Map<string, JournalEntry>();
    let text = "";
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue;
      try {
        const entry = JSON.parse(line) as JournalEntry;
        if (typeof entry.path === "string" && typeof entry.imageId === "string") entries.set(entry.path, entry);
      } catch {
        // A line cut short by a crash: that file is simply sent again.
      }
    }
    await mkdir(path.dirname(file), { recursive: true });
    return new IngestJournal(file, entries);
  }

  /** The entry for an unchanged file (same path, size and modification time), if any. */
  stored(relative: string, size: number, mtimeMs: number): JournalEntry | undefined {
    const entry = this.entries.get(relative);
    return entry && entry.size === size && entry.mtimeMs === mtimeMs ? entry : undefined;
  }

  /** Whether some file with these bytes was stored by an earlier run or earlier in this one. */
  hasContent(sha256: string): JournalEntry | undefined {
    return this.byContent.get(sha256);
  }

  /** Records a stored file; written at once, so an interrupted run keeps it. */
  async record(entry: JournalEntry): Promise<void> {
    this.entries.set(entry.path, entry);
    this.byContent.set(entry.sha256, entry);
    await appendFile(this.file, `${JSON.stringify(entry)}\n`);
  }
}
