import { Violations } from "../errors.js";
import { normaliseTags } from "./tags.js";
import type { Annotations, BoundingBox, JsonObject, NsfwLevel, Visibility } from "./types.js";

const MAX_FILE_NAME = 255;
const MAX_USERNAME = 100;
const MAX_META_BYTES = 64 * 1024;
const MAX_CLASSES = 1000;
const MAX_BOXES = 10_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Keeps the base name of a file path; strips control characters. */
export function cleanFileName(name: string, field: string, v: Violations): string {
  // eslint-disable-next-line no-control-regex
  const base = (name.split(/[\\/]/).pop() ?? "").replace(/[\u0000-\u001f\u007f]/g, "").trim();
  v.check(base.length <= MAX_FILE_NAME, field, `must be at most ${MAX_FILE_NAME} characters`);
  return base;
}

export function cleanUsername(name: string, field: string, v: Violations): string {
  const text = name.trim();
  v.check(text.length <= MAX_USERNAME, field, `must be at most ${MAX_USERNAME} characters`);
  return text;
}

/** A positive int64 id, or null when unset. */
export function positiveId(value: bigint | null | undefined, field: string, v: Violations): bigint | null {
  if (value === null || value === undefined) return null;
  v.check(value > 0n, field, "must be > 0");
  return value;
}

export function cleanMeta(meta: JsonObject | null | undefined, field: string, v: Violations): JsonObject | null {
  if (meta === null || meta === undefined) return null;
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
    const key = name.trim();
    if (!v.check(key.length > 0 && key.length <= 100, `${field}.classes`, "class names must be 1..100 characters")) continue;
    if (!v.check(Number.isInteger(count) && count >= 0, `${field}.classes[${key}]`, "must be a count >= 0")) continue;
    classes[key] = count;
  }
  const list = input.boxes ?? [];
  v.check(list.length <= MAX_BOXES, `${field}.boxes`, `at most ${MAX_BOXES} boxes`);
  list.forEach((box, i) => {
    const f = `${field}.boxes[${i}]`;
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
