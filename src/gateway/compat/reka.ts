// Seed 4 (Reka's vision API image search): upload with `index=true`, then search by a natural
// language query.
//
// - POST /compat/reka/v1/images/upload: multipart/form-data with one or more image files (any
//   field name; Reka's clients use `images`) and `index=true|false`. Reka's own `metadata`
//   field is read too: `{"requests": [{"indexing_config": {"index": bool}, "metadata": {...}}]}`,
//   one entry per file in order; an entry's `index` overrides the form's, and its `metadata`
//   becomes the image's meta. Not indexing is the default, as the seed says images "must be
//   uploaded with index: true to be searchable".
//   An indexed upload waits for indexing to end (wait_for_index), so step 2 of the seed's
//   prerequisites ("wait for indexing to complete") is over when the upload answers and the
//   image is searchable at once. When the embedding model is not available the image is still
//   stored, answered as "indexing in progress", and indexed once the model is ready.
//   Answer: `{"results": [{image_id, image_url, indexing_status, upload_timestamp,
//   image_metadata}]}` as Reka's reference gives it; indexing_status is 1 (in progress) or 2
//   (indexed) as Reka documents them, and glimpse adds 0 (stored only, index=false) and 3
//   (indexing failed).
// - POST /compat/reka/v1/images/search: JSON `{query, max_results, threshold}` ->
//   `{"results": [{image_id, image_url, score, upload_timestamp, image_metadata}]}`, highest
//   score first; `score` is glimpse's (1 + cosine) / 2 in [0, 1], the scale `threshold` uses.
// - Auth: `X-Api-Key: <key>` (or `Authorization: Bearer <key>`), checked by glimpse's gRPC
//   middleware; a request with neither is refused before its body is read.
// - Errors: the seed documents none, so they take the shape Reka documents for its whole API,
//   `{"error": {"type", "message", "param"?}}`, with its types and statuses: validation_error
//   400, authentication_error 401, not_found_error 404, rate_limit_error 429 (with
//   Retry-After), server_error 500. Search without an embedding model is a server_error with
//   503: the request is fine, the service cannot run it now.
import { Status, type Client } from "nice-grpc";
import { IndexStatus, type Image } from "../../gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition, type UploadImageRequest } from "../../gen/glimpse/image/v1/image_service.js";
import type { RouteDeps } from "../gateway.js";
import { BodyTooLarge, sendJson, type HttpContext, type Route } from "../http.js";
import { CallFailure, callFor, retryAfterSeconds } from "./calls.js";
import { DomainError } from "../../errors.js";
import { parseMultipart } from "../multipart.js";

type ImageClient = Client<typeof ImageServiceDefinition>;

const DEFAULT_MAX_RESULTS = 10;
/** SearchImages' largest page. */
const MAX_RESULTS = 250;
/** Files one upload request may carry. */
const MAX_FILES = 100;

/** A failure in Reka's error shape. */
class RekaError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly param?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "RekaError";
  }
}

const invalid = (message: string, param?: string) => new RekaError(400, "validation_error", message, param);

/** The Reka-compatible upload and search routes. */
export function rekaRoutes(deps: RouteDeps): Route[] {
  const images = deps.rpc.client(ImageServiceDefinition);
  return [
    {
      method: "POST",
      pattern: "/compat/reka/v1/images/upload",
      rpc: "/glimpse.image.v1.ImageService/UploadImage",
      handle: (ctx) => answer(ctx, () => upload(ctx, images)),
    },
    {
      method: "POST",
      pattern: "/compat/reka/v1/images/search",
      rpc: "/glimpse.image.v1.ImageService/SearchImages",
      handle: (ctx) => answer(ctx, () => search(ctx, images)),
    },
  ];
}

function requireKey(ctx: HttpContext): void {
  if (!ctx.metadata.has("x-api-key") && !ctx.metadata.has("authorization")) {
    throw new RekaError(401, "authentication_error", "missing API key: send it in the X-Api-Key header");
  }
}

async function search(ctx: HttpContext, images: ImageClient): Promise<unknown> {
  requireKey(ctx);
  const body = jsonObject(await ctx.body());
  const { query, max_results: maxResults = DEFAULT_MAX_RESULTS, threshold = 0 } = body;
  if (typeof query !== "string" || query.trim() === "") throw invalid("query is required: a non-empty string", "query");
  if (typeof maxResults !== "number" || !Number.isInteger(maxResults) || maxResults < 1 || maxResults > MAX_RESULTS) {
    throw invalid(`max_results must be an integer within 1..${MAX_RESULTS}`, "max_results");
  }
  if (typeof threshold !== "number" || !(threshold >= 0 && threshold <= 1)) {
    throw invalid("threshold must be a number within [0, 1]", "threshold");
  }
  const res = await callFor(ctx, (options) =>
    images.searchImages(
      { query: { $case: "prompt", value: query }, limit: maxResults, threshold, fields: ["image"] },
      options,
    ),
  );
  return {
    results: res.results.map((r) => ({
      image_id: r.id,
      image_url: r.image?.url ?? "",
      score: r.score,
      upload_timestamp: seconds(r.image?.createdAt),
      image_metadata: r.image?.meta ?? {},
    })),
  };
}

function jsonObject(raw: Buffer): Record<string, unknown> {
  let body: unknown;
  try {
    body = JSON.parse(raw.toString("utf8"));
  } catch (err) {
    throw invalid(`the body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw invalid("the body must be a JSON object");
  return body as Record<string, unknown>;
}

/** One file of an upload form. */
interface FilePart {
  fileName: string;
  content: Buffer;
}

/** An upload form: its files in order, and its plain fields. */
interface UploadForm {
  files: FilePart[];
  fields: Map<string, string>;
}

async function upload(ctx: HttpContext, images: ImageClient): Promise<unknown> {
  requireKey(ctx);
  const form = await parseForm(ctx);
  if (form.files.length === 0) throw invalid("at least one image file is required", "images");
  const index = indexField(form.fields.get("index"));
  const perFile = metadataField(form.fields.get("metadata"), form.files.length);
  const results = [];
  // One UploadImage per file, in order; a failure answers at once. Files stored before it stay
  // stored, and sending the same bytes again returns them (glimpse deduplicates by content).
  for (const [i, file] of form.files.entries()) {
    // The request's admission paid for the first file; each further one costs a token.
    if (i > 0) await ctx.charge();
    const entry = perFile[i];
    const request: Partial<UploadImageRequest> = {
      content: file.content,
      fileName: file.fileName,
      index: entry?.index ?? index,
      meta: entry?.metadata,
    };
    const image = await uploadOne(ctx, images, request);
    results.push({
      image_id: image.id,
      image_url: image.url,
      indexing_status: indexingStatus(image.indexStatus),
      upload_timestamp: seconds(image.createdAt),
      image_metadata: image.meta ?? {},
    });
  }
  return { results };
}

/**
 * Uploads one image, waiting for its indexing when it is indexed. Without an embedding model
 * that wait is refused, nothing stored (FAILED_PRECONDITION when none is installed,
 * UNAVAILABLE while it loads); the image is then stored without waiting and is indexed once
 * the model is ready.
 */
async function uploadOne(ctx: HttpContext, images: ImageClient, request: Partial<UploadImageRequest>): Promise<Image> {
  const store = (waitForIndex: boolean) =>
    callFor(ctx, (options) => images.uploadImage({ ...request, waitForIndex }, options));
  if (!request.index) return (await store(false)).image!;
  try {
    return (await store(true)).image!;
  } catch (err) {
    const noModel = err instanceof CallFailure && (err.code === Status.FAILED_PRECONDITION || err.code === Status.UNAVAILABLE);
    if (noModel) return (await store(false)).image!;
    throw err;
  }
}

/** Reka's indexing_status numbers (1, 2), with glimpse's 0 and 3 for states Reka does not name. */
function indexingStatus(status: IndexStatus): number {
  switch (status) {
    case IndexStatus.INDEX_STATUS_INDEXED:
      return 2;
    case IndexStatus.INDEX_STATUS_PENDING:
      return 1;
    case IndexStatus.INDEX_STATUS_FAILED:
      return 3;
    default:
      return 0;
  }
}

function indexField(value: string | undefined): boolean {
  if (value === undefined || value === "") return false;
  const text = value.trim().toLowerCase();
  if (text === "true" || text === "1") return true;
  if (text === "false" || text === "0") return false;
  throw invalid("index must be true or false", "index");
}

/** An entry of `metadata.requests` as sent, before it is checked. */
interface RawFileOptions {
  indexing_config?: { index?: unknown };
  metadata?: unknown;
}

/** Reka's `metadata` form field: per-file indexing choice and custom metadata. */
/** One file's entry of Reka's `metadata` field. */
interface FileOptions {
  index?: boolean;
  metadata?: Record<string, unknown>;
}

function metadataField(value: string | undefined, files: number): FileOptions[] {
  if (value === undefined || value.trim() === "") return [];
  const fail = (why: string) => invalid(`metadata ${why}`, "metadata");
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw fail("is not valid JSON");
  }
  const requests = (parsed as { requests?: unknown } | null)?.requests;
  if (requests === undefined) return [];
  if (!Array.isArray(requests)) throw fail("must be an object with a `requests` array");
  if (requests.length > files) throw fail(`has ${requests.length} requests for ${files} files`);
  return requests.map((entry: unknown, i) => {
    if (typeof entry !== "object" || entry === null) throw fail(`requests[${i}] must be an object`);
    const { indexing_config: config, metadata } = entry as RawFileOptions;
    const index = config?.index;
    if (index !== undefined && typeof index !== "boolean") {
      throw fail(`requests[${i}].indexing_config.index must be true or false`);
    }
    if (metadata !== undefined && (typeof metadata !== "object" || metadata === null || Array.isArray(metadata))) {
      throw fail(`requests[${i}].metadata must be an object`);
    }
    const custom = metadata as Record<string, unknown> | undefined;
    return { index, metadata: custom && Object.keys(custom).length > 0 ? custom : undefined };
  });
}

/** Reads a multipart/form-data body (within the bridge's body limit) into files and fields. */
async function parseForm(ctx: HttpContext): Promise<UploadForm> {
  const contentType = ctx.req.headers["content-type"] ?? "";
  if (!/^multipart\/form-data\b/i.test(contentType)) {
    throw invalid("the body must be multipart/form-data with the image files");
  }
  const parts = await parseMultipart(await ctx.body(), contentType, {
    maxFiles: MAX_FILES,
    filesField: "images",
    maxFieldBytes: 1024 * 1024,
  });
  return {
    files: parts.files.map((f) => ({ fileName: f.filename, content: f.data })),
    fields: new Map(parts.fields.map((f) => [f.name, f.value])),
  };
}

/** Unix time in seconds, as Reka's upload_timestamp. */
function seconds(date: Date | undefined): number | null {
  return date ? date.getTime() / 1000 : null;
}


/** glimpse's request fields in Reka's names. */
const PARAMS: Record<string, string> = {
  prompt: "query",
  limit: "max_results",
  threshold: "threshold",
  content: "images",
  file_name: "images",
  meta: "metadata",
};

function errorOf(failure: CallFailure): RekaError {
  const message = failure.grpcMessage;
  switch (failure.code) {
    case Status.INVALID_ARGUMENT: {
      const field = failure.violations[0]?.field.replace(/[.[].*$/, "");
      return invalid(message, field === undefined ? undefined : PARAMS[field]);
    }
    case Status.UNAUTHENTICATED:
      return new RekaError(401, "authentication_error", message);
    case Status.PERMISSION_DENIED:
      return new RekaError(403, "permission_error", message);
    case Status.NOT_FOUND:
      return new RekaError(404, "not_found_error", message);
    case Status.RESOURCE_EXHAUSTED: {
      return new RekaError(429, "rate_limit_error", message, undefined, { "retry-after": retryAfterSeconds(failure.retryAfterMs) });
    }
    case Status.FAILED_PRECONDITION:
    case Status.UNAVAILABLE: {
      // A passing state (the model still loading, say) says when to come back.
      const retry = failure.retryAfterMs === undefined ? undefined : { "retry-after": retryAfterSeconds(failure.retryAfterMs) };
      return new RekaError(503, "server_error", message, undefined, retry);
    }
    case Status.DEADLINE_EXCEEDED:
      return new RekaError(504, "server_error", message);
    case Status.CANCELLED:
      return new RekaError(499, "server_error", message);
    default:
      return new RekaError(500, "server_error", "internal error");
  }
}

/** Sends the handler's value as JSON, or its failure in Reka's error shape. */
async function answer(ctx: HttpContext, handler: () => Promise<unknown>): Promise<void> {
  let error: RekaError;
  try {
    return sendJson(ctx.res, 200, await handler());
  } catch (err) {
    if (err instanceof RekaError) error = err;
    else if (err instanceof CallFailure) error = errorOf(err);
    else if (err instanceof DomainError) error = errorOf(CallFailure.of(err));
    else if (err instanceof BodyTooLarge) error = new RekaError(413, "validation_error", err.message);
    else throw err;
  }
  const body = { type: error.type, message: error.message, ...(error.param ? { param: error.param } : {}) };
  sendJson(ctx.res, error.status, { error: body }, error.headers);
}
