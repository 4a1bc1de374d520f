import { Violations } from "../errors.js";
import { normaliseTags } from "./tags.js";
import type { Annotations, BoundingBox, JsonObject, NsfwLevel, Visibility } from "./types.js";

const MAX_FILE_NAME = 255;
const MAX_USERNAME = 100;
const MAX_META_BYTES = 64 * 1024;
const MAX_CLASSES = 1000;
const MAX_BOXES = 10_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Why text that holds U+0000 is refused. PostgreSQL cannot store it in text or jsonb, so it
 * is refused by name before it reaches the store (where it would fail as an internal error).
 */
export const NUL_DESCRIPTION = "must not contain the NUL character (U+0000)";

/** {@link NUL_DESCRIPTION} for a map or object key. */
export const KEY_NUL_DESCRIPTION = `the key ${NUL_DESCRIPTION}`;

/** Records a violation when `text` holds U+0000. Returns whether it is free of it. */
export function checkText(text: string, field: string, v: Violations): boolean {
  return v.check(!text.includes("\u0000"), field, NUL_DESCRIPTION);
}

/** A map or object key as it appears in a field path, with control characters escaped. */
export function keyInPath(key: string): string {
  // eslint-disable-next-line no-control-regex
  return key.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Most NUL violations one JSON value reports: enough to fix the request, short enough to send. */
const MAX_TEXT_VIOLATIONS = 10;

/**
 * Checks every key and string of a JSON value (a google.protobuf.Struct, Value or ListValue
 * in its plain form) for U+0000, naming object members `field.key` and list items `field[i]`
 * as the HTTP bridge does; stops after 10 findings. Iterative, so deep nesting cannot exhaust
 * the stack.
 */
export function checkJsonText(value: unknown, field: string, v: Violations): void {
  let found = 0;
  const pending: [unknown, string][] = [[value, field]];
  for (let next = pending.pop(); next !== undefined && found < MAX_TEXT_VIOLATIONS; next = pending.pop()) {
    const [item, path] = next;
    if (typeof item === "string") {
      if (!checkText(item, path, v)) found++;
    } else if (Array.isArray(item)) {
      for (let i = item.length - 1; i >= 0; i--) pending.push([item[i], `${path}[${i}]`]);
    } else if (typeof item === "object" && item !== null && !(item instanceof Date) && !ArrayBuffer.isView(item)) {
      for (const [key, member] of Object.entries(item).reverse()) {
        const at = `${path}.${keyInPath(key)}`;
        if (!v.check(!key.includes("\u0000"), at, KEY_NUL_DESCRIPTION)) found++;
        pending.push([member, at]);
      }
    }
  }
}

/** Keeps the base name of a file path; strips control characters other than NUL, which is refused. */
export function cleanFileName(name: string, field: string, v: Violations): string {
  checkText(name, field, v);
  // eslint-disable-next-line no-control-regex
  const base = (name.split(/[\\/]/).pop() ?? "").replace(/[\u0000-\u001f\u007f]/g, "").trim();
  v.check(base.length <= MAX_FILE_NAME, field, `must be at most ${MAX_FILE_NAME} characters`);
  return base;
}

/** A creator credit: trimmed, at most 100 characters, no NUL. */
export function cleanUsername(name: string, field: string, v: Violations): string {
  checkText(name, field, v);
  const text = name.trim();
  v.check(text.length <= MAX_USERNAME, field, `must be at most ${MAX_USERNAME} characters`);
  return text;
}

/** The largest value of PostgreSQL's bigint (and protobuf's int64). */
export const INT64_MAX = 2n ** 63n - 1n;

/** Whether `text` is decimal digits naming a value PostgreSQL's bigint holds (0..2^63-1). */
export function isInt64Digits(text: string): boolean {
  return /^\d{1,19}$/.test(text) && BigInt(text) <= INT64_MAX;
}

/** A positive int64 id, or null when unset. */
export function positiveId(value: bigint | null | undefined, field: string, v: Violations): bigint | null {
  if (value === null || value === undefined) return null;
  v.check(value > 0n, field, "must be > 0");
  return value;
}

/** Free-form generation metadata: at most 64 KiB as JSON, no NUL in any key or string. */
export function cleanMeta(meta: JsonObject | null | undefined, field: string, v: Violations): JsonObject | null {
  if (meta === null || meta === undefined) return null;
  checkJsonText(meta, field, v);
  const size = Buffer.byteLength(JSON.stringify(meta));
  v.check(size <= MAX_META_BYTES, field, `must be at most 64 KiB as JSON, got ${(size / 1024).toFixed(1)} KiB`);
  return meta;
}

/** An AIP-155 request id: empty (none) or a UUID. Returns it lower-cased, or null. */
export function requestIdOf(text: string, field: string, v: Violations): string | null {
  if (text === "") return null;
  return v.check(UUID.test(text), field, "must be a UUID such as 3f0c2a9e-5b1d-4c1e-9a7b-2d4e6f8a0b1c")
    ? text.toLowerCase()
    : null;
}

/**
 * Validates annotations: non-negative integer class counts, boxes with a class name and a
 * non-negative size. Classes absent from `classes` but present in boxes are counted from them.
 * Box bounds are checked against the image later, once its size is known.
 */
export function cleanAnnotations(input: Annotations | undefined, field: string, v: Violations): Annotations {
  const classes: Record<string, number> = {};
  const boxes: BoundingBox[] = [];
  if (!input) return { classes, boxes };
  const entries = Object.entries(input.classes ?? {});
  v.check(entries.length <= MAX_CLASSES, `${field}.classes`, `at most ${MAX_CLASSES} classes`);
  for (const [name, count] of entries) {
    if (!v.check(!name.includes("\u0000"), `${field}.classes[${keyInPath(name)}]`, KEY_NUL_DESCRIPTION)) continue;
    const key = name.trim();
    if (!v.check(key.length > 0 && key.length <= 100, `${field}.classes`, "class names must be 1..100 characters")) continue;
    if (!v.check(Number.isInteger(count) && count >= 0, `${field}.classes[${key}]`, "must be a count >= 0")) continue;
    classes[key] = count;
  }
  const list = input.boxes ?? [];
  v.check(list.length <= MAX_BOXES, `${field}.boxes`, `at most ${MAX_BOXES} boxes`);
  list.forEach((box, i) => {
    const f = `${field}.boxes[${i}]`;
    checkText(box.className, `${f}.class_name`, v);
    const className = box.className.trim();
    v.check(className.length > 0 && className.length <= 100, `${f}.class_name`, "is required (1..100 characters)");
    v.check(box.width >= 0 && box.height >= 0, f, "width and height must be >= 0");
    if (box.confidence !== undefined) {
      v.check(box.confidence >= 0 && box.confidence <= 1, `${f}.confidence`, "must be in [0, 1]");
    }
    boxes.push({ ...box, className });
  });
  if (entries.length === 0) for (const box of boxes) classes[box.className] = (classes[box.className] ?? 0) + 1;
  return { classes, boxes };
}

/** Checks that every box lies inside an image of this size. */
export function checkBoxesInside(a: Annotations, width: number, height: number, field: string, v: Violations): void {
  a.boxes.forEach((box, i) => {
    const inside = box.x >= 0 && box.y >= 0 && box.x + box.width <= width && box.y + box.height <= height;
    v.check(inside, `${field}.boxes[${i}]`, `must lie inside the ${width}x${height} image`);
  });
}

/** The raw, caller-given fields of an image, before normalisation. */
export interface ImageFieldsInput {
  fileName?: string;
  tags?: string[];
  username?: string;
  postId?: bigint | null;
  modelId?: bigint | null;
  modelVersionId?: bigint | null;
  nsfwLevel?: NsfwLevel;
  meta?: JsonObject | null;
  annotations?: Annotations;
  visibility?: Visibility;
}

/** Normalises the fields present in `input`, recording problems under `prefix` + field name. */
export function cleanImageFields(input: ImageFieldsInput, prefix: string, v: Violations) {
  return {
    fileName: input.fileName === undefined ? undefined : cleanFileName(input.fileName, `${prefix}file_name`, v),
    tags: input.tags === undefined ? undefined : normaliseTags(input.tags, `${prefix}tags`, v),
    username: input.username === undefined ? undefined : cleanUsername(input.username, `${prefix}username`, v),
    postId: input.postId === undefined ? undefined : positiveId(input.postId, `${prefix}post_id`, v),
    modelId: input.modelId === undefined ? undefined : positiveId(input.modelId, `${prefix}model_id`, v),
    modelVersionId:
      input.modelVersionId === undefined ? undefined : positiveId(input.modelVersionId, `${prefix}model_version_id`, v),
    nsfwLevel: input.nsfwLevel,
    meta: input.meta === undefined ? undefined : cleanMeta(input.meta, `${prefix}meta`, v),
    annotations:
      input.annotations === undefined ? undefined : cleanAnnotations(input.annotations, `${prefix}annotations`, v),
    visibility: input.visibility,
  };
}
