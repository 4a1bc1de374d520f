import { pipeline } from "node:stream/promises";
import { ClientError, Status, type Metadata } from "nice-grpc";
import type { BlobRead, BlobStore } from "../blobs/blob-store.js";
import type { Logger } from "../logging/logger.js";
import { invalidArgument } from "../errors.js";
import { ImageServiceDefinition, type ImageServiceClient } from "../gen/glimpse/image/v1/image_service.js";
import { Visibility, type Image } from "../gen/glimpse/image/v1/image.js";
import { renderStatus, sendError } from "./errors.js";
import type { RouteDeps } from "./gateway.js";
import { sendJson, type HttpContext, type Route } from "./http.js";

/** The route of an image's bytes (GetImageContent's binding, and where Image.url points). */
export const CONTENT_PATH = "/v1/images/{id}/content";

/**
 * How long a browser may reuse a private image without asking again. The bytes behind an id
 * never change (content-addressed), so the only thing a long lifetime risks is the caller's
 * own cache outliving its key.
 */
const PRIVATE_MAX_AGE_S = 86_400;
/**
 * How long any cache, shared ones included, may keep a public image. Shorter than the
 * private lifetime: an owner can make an image private or delete it, and shared caches go on
 * serving it for at most this long.
 */
const PUBLIC_MAX_AGE_S = 3_600;

/**
 * `GET` and `HEAD /v1/images/{id}/content`: an image's original bytes as raw HTTP content.
 * Metadata comes from GetImage, called in-process through the gRPC middleware
 * with the caller's credentials, so auth, visibility and rate limits are gRPC's own;
 * the bytes are then streamed from the blob store (files or S3), only the range asked for.
 *
 * - `ETag` is the sha256 (strong), `Last-Modified` the upload time, `Accept-Ranges: bytes`.
 * - `Cache-Control`: `private, max-age=86400, immutable` (with `Vary` on the key headers) for
 *   private images, `public, max-age=3600, immutable` for public ones.
 * - `If-None-Match` (`*` or a list, weak comparison) and, without it, `If-Modified-Since`
 *   answer 304.
 * - `Range` with one range (`bytes=a-b`, `a-`, `-n`) answers 206 with `Content-Range`; one
 *   that starts past the end answers 416 with `Content-Range: bytes *\/size`. Several ranges
 *   in one request, or a malformed header, are ignored: 200 with the whole body.
 * - `If-Range` (an ETag, compared strongly, or the Last-Modified date) that does not match
 *   turns a range request into a 200 with the whole body.
 */
export function contentRoutes(deps: RouteDeps): Route[] {
  const images = deps.rpc.client(ImageServiceDefinition);
  return [
    {
      method: "GET",
      pattern: CONTENT_PATH,
      rpc: "/glimpse.image.v1.ImageService/GetImageContent",
      handle: (ctx) => serveContent(images, deps.blobs, deps.logger, ctx),
    },
  ];
}

async function serveContent(images: ImageServiceClient, blobs: BlobStore, logger: Logger, ctx: HttpContext): Promise<void> {
  const { req, res, params } = ctx;
  if (!/^-?\d{1,19}$/.test(params.id)) {
    return sendError(res, invalidArgument({ field: "id", description: `must be an integer, got "${params.id}"` }));
  }
  // One download is one call for the rate limit, however many gRPC calls serve it.
  try {
    await ctx.admit();
  } catch (error) {
    return sendError(res, error);
  }
  const image = await call(ctx, (options) => images.getImage({ id: params.id }, options));
  if (!image?.image) return;
  const meta = image.image;
  const etag = `"${meta.sha256}"`;
  const modified = meta.createdAt ?? new Date(0);
  const headers: Record<string, string> = {
    etag,
    "last-modified": modified.toUTCString(),
    "cache-control": cacheControl(meta),
    "accept-ranges": "bytes",
  };
  if (meta.visibility !== Visibility.VISIBILITY_PUBLIC) headers.vary = "Authorization, X-Api-Key";

  if (notModified(req.headers["if-none-match"], req.headers["if-modified-since"], etag, modified)) {
    res.writeHead(304, headers);
    res.end();
    return;
  }

  const ifRange = single(req.headers["if-range"]);
  const range = ifRange === undefined || ifRangeMatches(ifRange, etag, modified) ? req.headers.range : undefined;
  const size = Number(meta.byteSize);
  const plan = planRange(range, size);
  if (plan.kind === "unsatisfiable") {
    const message = `range not satisfiable: the image has ${size} bytes`;
    return sendJson(res, 416, renderStatus({ code: Status.OUT_OF_RANGE, message, details: [] }), {
      "content-range": `bytes */${size}`,
    });
  }

  headers["content-type"] = meta.mediaType;
  headers["x-content-type-options"] = "nosniff";
  if (req.method === "HEAD") {
    if (plan.kind === "partial") headers["content-range"] = `bytes ${plan.start}-${plan.end}/${size}`;
    headers["content-length"] = String(plan.kind === "partial" ? plan.end - plan.start + 1 : size);
    res.writeHead(plan.kind === "partial" ? 206 : 200, headers);
    res.end();
    return;
  }
  // GetImage has checked the caller may read the image; its bytes come straight from the
  // store, only the range asked for, never held whole in memory.
  let blob: BlobRead;
  try {
    blob = await blobs.read(meta.sha256, plan.kind === "partial" ? { start: plan.start, end: plan.end } : undefined);
  } catch (error) {
    return sendError(res, error);
  }
  // Only if the stored size were wrong would these differ from the plan: the bytes sent are the truth.
  if (plan.kind === "partial") {
    headers["content-range"] = `bytes ${blob.start}-${blob.end}/${blob.size}`;
    headers["content-length"] = String(blob.end - blob.start + 1);
    res.writeHead(206, headers);
  } else {
    headers["content-length"] = String(blob.size);
    res.writeHead(200, headers);
  }
  try {
    await pipeline(blob.body, res, { signal: ctx.signal });
  } catch (error) {
    // A client that went away ends the read; anything else cuts the response short.
    if (!ctx.signal.aborted && !res.destroyed) logger.warn("streaming image bytes failed", { error });
    res.destroy();
  }
}

/** A header Node may give as a list (unknown names repeat), as one value. */
function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(", ") : value;
}

function cacheControl(image: Image): string {
  return image.visibility === Visibility.VISIBILITY_PUBLIC
    ? `public, max-age=${PUBLIC_MAX_AGE_S}, immutable`
    : `private, max-age=${PRIVATE_MAX_AGE_S}, immutable`;
}

/**
 * Whether the caller's copy is current (RFC 9110 13.1.2, 13.1.3): `If-None-Match` decides
 * when present, by weak comparison; otherwise `If-Modified-Since`, at one-second resolution.
 */
export function notModified(
  ifNoneMatch: string | undefined,
  ifModifiedSince: string | undefined,
  etag: string,
  modified: Date,
): boolean {
  if (ifNoneMatch !== undefined) {
    const tags = entityTags(ifNoneMatch);
    return tags.includes("*") || tags.some((tag) => opaque(tag) === opaque(etag));
  }
  if (ifModifiedSince === undefined) return false;
  const since = Date.parse(ifModifiedSince);
  return !Number.isNaN(since) && Math.floor(modified.getTime() / 1000) * 1000 <= since;
}

/** Whether `If-Range` still names this representation: a strong ETag match, or the exact date. */
function ifRangeMatches(value: string, etag: string, modified: Date): boolean {
  const trimmed = value.trim();
  if (trimmed.startsWith('"') || trimmed.startsWith("W/")) return trimmed === etag;
  const date = Date.parse(trimmed);
  return !Number.isNaN(date) && date === Math.floor(modified.getTime() / 1000) * 1000;
}

/** The entity tags (or `*`) of a header such as `W/"a", "b"`. */
function entityTags(header: string): string[] {
  return header.match(/(?:W\/)?"[^"]*"|\*/g) ?? [];
}

function opaque(tag: string): string {
  return tag.startsWith("W/") ? tag.slice(2) : tag;
}

/** What a `Range` header asks of a body of `size` bytes. */
export type RangePlan =
  | { kind: "full" }
  | { kind: "partial"; start: number; end: number }
  | { kind: "unsatisfiable" };

/**
 * Reads a `Range` header (RFC 9110 14.1.2): one `bytes=a-b`, `bytes=a-` or `bytes=-n`.
 * A header that is absent, malformed, in another unit or asks for several ranges is ignored
 * (the whole body); a range starting at or past the end, or an empty suffix, cannot be met.
 */
export function planRange(header: string | undefined, size: number): RangePlan {
  if (header === undefined) return { kind: "full" };
  const set = /^\s*bytes\s*=(.*)$/i.exec(header);
  if (!set) return { kind: "full" };
  const specs = set[1].split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (specs.length !== 1) return { kind: "full" };
  const spec = /^(\d*)\s*-\s*(\d*)$/.exec(specs[0]);
  if (!spec || (spec[1] === "" && spec[2] === "")) return { kind: "full" };
  if (spec[1] === "") {
    const suffix = Number(spec[2]);
    if (suffix === 0 || size === 0) return { kind: "unsatisfiable" };
    return { kind: "partial", start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(spec[1]);
  const last = spec[2] === "" ? Infinity : Number(spec[2]);
  if (last < start) return { kind: "full" };
  if (start >= size) return { kind: "unsatisfiable" };
  return { kind: "partial", start, end: Math.min(last, size - 1) };
}

/** Options a call on the caller's behalf takes. */
interface CallerOptions {
  metadata: Metadata;
  signal: AbortSignal;
  onTrailer(trailer: Metadata): void;
}

/**
 * Makes one call on the caller's behalf; a gRPC error is answered as grpc-gateway's JSON error and gives
 * undefined. A call the client abandoned gives undefined without an answer (nobody listens).
 */
async function call<T>(ctx: HttpContext, run: (options: CallerOptions) => Promise<T>): Promise<T | undefined> {
  let trailer: Metadata | undefined;
  try {
    return await run({ metadata: ctx.metadata, signal: ctx.signal, onTrailer: (t) => (trailer = t) });
  } catch (err) {
    if (ctx.signal.aborted) return undefined;
    if (!(err instanceof ClientError)) throw err;
    sendError(ctx.res, err, { trailer });
    return undefined;
  }
}

/**
 * What the OpenAPI document adds to GetImageContent's operation for this route's HTTP
 * behaviour: the conditional and range request headers, and the 206, 304 and 416 answers.
 */
export function contentOperationExtras(): { parameters: object[]; responses: Record<string, object> } {
  const header = (name: string, description: string) => ({
    name,
    in: "header",
    description,
    schema: { type: "string" },
  });
  const common = {
    ETag: { description: "The sha256 of the bytes, quoted (a strong validator).", schema: { type: "string" } },
    "Last-Modified": { description: "When the image was uploaded.", schema: { type: "string" } },
    "Cache-Control": {
      description:
        `\`private, max-age=${PRIVATE_MAX_AGE_S}, immutable\` for private images, ` +
        `\`public, max-age=${PUBLIC_MAX_AGE_S}, immutable\` for public ones.`,
      schema: { type: "string" },
    },
  };
  const bytes = { "*/*": { schema: { type: "string", format: "binary" } } };
  return {
    parameters: [
      header("Range", "One byte range: `bytes=a-b`, `bytes=a-` or `bytes=-n`. Several ranges get the whole body."),
      header("If-Range", "An ETag or Last-Modified date; when it does not match, Range is ignored."),
      header("If-None-Match", "ETags (or `*`) the client holds; a match answers 304."),
      header("If-Modified-Since", "Without If-None-Match: answers 304 unless the image is newer."),
    ],
    responses: {
      "200": {
        description: "The bytes, with the image's media type as the Content-Type.",
        headers: { ...common, "Accept-Ranges": { schema: { type: "string", const: "bytes" } } },
        content: bytes,
      },
      "206": {
        description: "The requested byte range.",
        headers: { ...common, "Content-Range": { schema: { type: "string" }, description: "`bytes a-b/size`" } },
        content: bytes,
      },
      "304": { description: "The client's copy is current; no body.", headers: common },
      "416": {
        description: "The range starts past the end. Content-Range gives the size (`bytes */size`).",
        headers: { "Content-Range": { schema: { type: "string" } } },
        content: { "application/json": { schema: { $ref: "#/components/schemas/google.rpc.Status" } } },
      },
    },
  };
}
