import { createHash } from "node:crypto";
import { invalidArgument } from "../errors.js";
import type { Keyset } from "../store/images-repository.js";
import type { ImageFilter, ImageSort } from "./types.js";
import { isInt64Digits } from "./validate.js";

/** Latest time a JavaScript Date holds (PostgreSQL's timestamptz reaches further). */
const MAX_TIME_MS = 8.64e15;
/** Largest page number a token carries: the next one must still fit an int32. */
const MAX_PAGE = 2 ** 31 - 2;

/** A reaction or comment count as PostgreSQL's integer columns hold it. */
function isCount(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 2 ** 31 - 1;
}

/** What a ListImages page token remembers about the walk it continues. */
export interface PageToken {
  /** Fingerprint of the filter and sort the walk was started with. */
  query: string;
  /** The last image of the previous page. */
  after: Keyset;
  /** When the walk began: periods are measured from here, ranked walks are pinned to it. */
  startedAt: Date;
  /** 1-based number of the page this token fetches. */
  page: number;
}

/** A stable fingerprint of a filter and sort; a token is only valid for the same query. */
export function queryFingerprint(filter: ImageFilter, sort: ImageSort): string {
  const canonical = JSON.stringify({ ...filter, metaEquals: Object.entries(filter.metaEquals).sort(), sort }, (_k, v) =>
    typeof v === "bigint" ? v.toString() : v,
  );
  return createHash("sha256").update(canonical).digest("base64url").slice(0, 16);
}

/** Serialises a token; opaque to callers (base64url JSON). */
export function encodePageToken(token: PageToken): string {
  const body = {
    v: 1,
    q: token.query,
    r: token.after.rank,
    i: token.after.id.toString(),
    t: token.startedAt.getTime(),
    p: token.page,
  };
  return Buffer.from(JSON.stringify(body)).toString("base64url");
}

/** Parses a token, or answers INVALID_ARGUMENT against `field`. */
export function decodePageToken(text: string, field: string, expectedQuery: string): PageToken {
  const bad = (why: string) => invalidArgument({ field, description: why });
  let body: { v?: unknown; q?: unknown; r?: unknown; i?: unknown; t?: unknown; p?: unknown };
  try {
    body = JSON.parse(Buffer.from(text, "base64url").toString("utf8"));
  } catch {
    throw bad("is not a page token returned by ListImages");
  }
  if (
    body === null ||
    body.v !== 1 ||
    typeof body.q !== "string" ||
    !(body.r === null || typeof body.r === "number") ||
    typeof body.i !== "string" ||
    typeof body.t !== "number" ||
    typeof body.p !== "number" ||
    // The id must fit a bigint, the rank (a counter) an integer column, the time a Date, and
    // the page's successor an int32: anything else was not issued here.
    !isInt64Digits(body.i) ||
    !(body.r === null || isCount(body.r)) ||
    !(Number.isInteger(body.t) && body.t >= 0 && body.t <= MAX_TIME_MS) ||
    !(Number.isInteger(body.p) && body.p >= 1 && body.p <= MAX_PAGE)
  ) {
    throw bad("is not a page token returned by ListImages");
  }
  if (body.q !== expectedQuery) {
    throw bad("was issued for a different filter or sort; start again without a token");
  }
  return { query: body.q, after: { rank: body.r, id: BigInt(body.i) }, startedAt: new Date(body.t), page: body.p };
}
