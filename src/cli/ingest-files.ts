import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { Visibility } from "../gen/glimpse/image/v1/image.js";

/** Extensions of the formats the server accepts (it sniffs the bytes; this only picks files). */
const IMAGE_EXTENSIONS = new Set([".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".avif", ".tif", ".tiff"]);

/** An image file found under the ingest root. */
export interface ImageFile {
  /** Path relative to the root, with `/` separators (the same on every platform). */
  relative: string;
  absolute: string;
  size: number;
  mtimeMs: number;
  /** Sub-folder names from the root down: `animals/dogs/x.jpg` -> `animals`, `dogs`. */
  folderTags: string[];
  /** `x.jpg.json` beside it, when there is one. */
  sidecar: string | undefined;
}

/** What a walk found. */
export interface WalkResult {
  images: ImageFile[];
  /** Files that are neither images nor an image's sidecar (relative paths). */
  skipped: string[];
}

/**
 * Every image file under `root`, in a stable (sorted) order. Hidden files and folders (a name
 * starting with a dot) are left out; `x.jpg.json` is x.jpg's sidecar, not a skipped file.
 */
export async function walk(root: string): Promise<WalkResult> {
  const images: ImageFile[] = [];
  const skipped: string[] = [];
  const visit = async (dir: string, folders: string[]): Promise<void> => {
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const names = new Set(entries.filter((e) => e.isFile()).map((e) => e.name));
    for (const entry of entries) {
      if (entry.name.startsWith(".")) continue;
      const absolute = path.join(dir, entry.name);
      const relative = [...folders, entry.name].join("/");
      if (entry.isDirectory()) {
        await visit(absolute, [...folders, entry.name]);
        continue;
      }
      if (!entry.isFile()) continue;
      const lower = entry.name.toLowerCase();
      if (IMAGE_EXTENSIONS.has(path.extname(lower))) {
        const facts = await stat(absolute);
        const sidecarName = `${entry.name}.json`;
        images.push({
          relative,
          absolute,
          size: facts.size,
          mtimeMs: facts.mtimeMs,
          folderTags: folders,
          sidecar: names.has(sidecarName) ? path.join(dir, sidecarName) : undefined,
        });
      } else if (!(lower.endsWith(".json") && names.has(entry.name.slice(0, -5)) && IMAGE_EXTENSIONS.has(path.extname(entry.name.slice(0, -5).toLowerCase())))) {
        skipped.push(relative);
      }
    }
  };
  await visit(root, []);
  return { images, skipped };
}

/** What a sidecar `x.jpg.json` may set. */
export interface Sidecar {
  tags: string[];
  visibility: Visibility | undefined;
  meta: Record<string, unknown> | undefined;
}

/** A sidecar file that cannot be used; the message says which field is wrong. */
export class SidecarError extends Error {}

/**
 * Reads a sidecar: a JSON object with optional `tags` (strings), `visibility` (`public`,
 * `private`, or the enum names `VISIBILITY_PUBLIC` / `VISIBILITY_PRIVATE`) and `meta` (an
 * object, stored as the image's meta). Unknown fields are an error, so a typo is not lost.
 */
export async function readSidecar(file: string): Promise<Sidecar> {
  let value: unknown;
  try {
    value = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new SidecarError(`sidecar ${path.basename(file)} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SidecarError(`sidecar ${path.basename(file)} must be a JSON object`);
  }
  const fields = value as Record<string, unknown>;
  const where = `sidecar ${path.basename(file)}`;
  for (const key of Object.keys(fields)) {
    if (!["tags", "visibility", "meta"].includes(key)) throw new SidecarError(`${where}: unknown field ${JSON.stringify(key)} (tags, visibility, meta)`);
  }
  const tags = fields.tags ?? [];
  if (!Array.isArray(tags) || tags.some((t) => typeof t !== "string")) throw new SidecarError(`${where}: tags must be a list of strings`);
  let visibility: Visibility | undefined;
  if (fields.visibility !== undefined) {
    const text = String(fields.visibility).toUpperCase().replace(/^VISIBILITY_/, "");
    if (text === "PUBLIC") visibility = Visibility.VISIBILITY_PUBLIC;
    else if (text === "PRIVATE") visibility = Visibility.VISIBILITY_PRIVATE;
    else throw new SidecarError(`${where}: visibility must be "public" or "private", got ${JSON.stringify(fields.visibility)}`);
  }
  const meta = fields.meta;
  if (meta !== undefined && (typeof meta !== "object" || meta === null || Array.isArray(meta))) {
    throw new SidecarError(`${where}: meta must be a JSON object`);
  }
  return { tags: tags as string[], visibility, meta: meta as Record<string, unknown> | undefined };
}

/**
 * The upload's AIP-155 request id: a UUID (RFC 9562 version 8, name-based) derived from the
 * file's path under the root and its bytes, so running the same ingest again sends the same
 * id and the server answers with what it stored the first time instead of storing twice.
 */
export function uploadRequestId(relative: string, sha256: string): string {
  const hex = createHash("sha256").update(`glimpse-ingest\0${relative}\0${sha256}`).digest("hex").slice(0, 32).split("");
  hex[12] = "8";
  hex[16] = ((parseInt(hex[16], 16) & 0x3) | 0x8).toString(16);
  const h = hex.join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
