// Seed 3 (Roboflow's image search): POST /compat/roboflow/{workspace}/{project}/search with the
// seed's JSON body, answered as `{offset, total, results}` with exactly the requested `fields`.
//
// How the seed's names land on glimpse:
// - `workspace` is not used: the API key already names the account, and an account is glimpse's
//   workspace (as a Roboflow key belongs to one workspace). Any value is accepted.
// - `project` is used only by `in_dataset: true` (the seed's example), which means "in the
//   project of this URL": meta_equals["dataset"] = project. Without in_dataset the search spans
//   the whole account, as Roboflow's search spans the workspace. `in_dataset: "<name>"` names the
//   dataset itself; `in_dataset: false` adds no condition.
// - `like_image` (an image id) -> like_image_id, `prompt` -> prompt. The SDK may send both; the
//   image then wins, being the more specific query. With neither, the answer is the filtered
//   catalogue, newest first (ListImages), as the seed's "when provided" implies.
// - `tag` -> filter.tags, `class_name` -> filter.class_name, `batch_id` and `annotation_job_id`
//   -> meta_equals of the same keys, `batch: true` and `annotation_job: true` -> meta_keys
//   "batch_id" / "annotation_job_id" (false, which the SDK always sends, adds no condition).
//   Beyond the seed, `split` (-> meta_equals["split"]) and `threshold` (glimpse's score floor)
//   are accepted too.
// - The API key comes from `?api_key=` as in the seed, or from an X-Api-Key or Authorization
//   header.
import { Status, type Client } from "nice-grpc";
import type { Image } from "../../gen/glimpse/image/v1/image.js";
import type { ImageFilter } from "../../gen/glimpse/image/v1/image_filter.js";
import { ImageServiceDefinition } from "../../gen/glimpse/image/v1/image_service.js";
import type { SearchResult } from "../../gen/glimpse/image/v1/search.js";
import type { RouteDeps } from "../gateway.js";
import { BodyTooLarge, sendJson, type HttpContext, type Route } from "../http.js";
import { DomainError } from "../../errors.js";
import { CallFailure, callFor, retryAfterSeconds } from "./calls.js";

type ImageClient = Client<typeof ImageServiceDefinition>;

/** The `fields` the seed lists, plus glimpse's `url` and `score`. */
const FIELDS = [
  ...["id", "name", "annotations", "labels", "split", "tags", "owner", "embedding", "created"],
  ...["url", "score"],
];
const DEFAULT_FIELDS = ["id", "created"];
const DEFAULT_LIMIT = 50;
/** offset is an int32 in glimpse's requests. */
const INT32_MAX = 2 ** 31 - 1;
const MAX_LIMIT = 250;
/** ListImages' largest page; a longer filtered listing is read in several calls. */
const LIST_PAGE = 200;

/**
 * A failure in the error shape of this surface. The seed documents no errors; Roboflow's clients
 * only look for an `error` key (the Python SDK raises `RuntimeError(body["error"])`), so errors
 * are `{"error": {"message", "type"}}` with the HTTP status that fits: 400 bad body, 401 no or
 * bad key, 404 unknown like_image, 429 rate limit (with Retry-After), 503 no embedding model.
 */
class RoboflowError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "RoboflowError";
  }
}

const invalid = (message: string) => new RoboflowError(400, "invalid_request", message);

/** The seed's search body, validated, in glimpse's terms. */
interface SearchPlan {
  query: { $case: "prompt"; value: string } | { $case: "likeImageId"; value: string } | undefined;
  offset: number;
  limit: number;
  threshold: number;
  filter: ImageFilter;
  fields: string[];
}

/** The Roboflow-compatible search route. */
export function roboflowRoutes(deps: RouteDeps): Route[] {
  const images = deps.rpc.client(ImageServiceDefinition);
  return [
    {
      method: "POST",
      pattern: "/compat/roboflow/{workspace}/{project}/search",
      rpc: "/glimpse.image.v1.ImageService/SearchImages",
      handle: (ctx) => answer(ctx, () => search(ctx, images)),
    },
  ];
}

async function search(ctx: HttpContext, images: ImageClient): Promise<unknown> {
  authenticate(ctx);
  const plan = planOf(parseBody(await ctx.body()), ctx.params.project);
  return plan.query ? ranked(ctx, images, plan) : listed(ctx, images, plan);
}

/** The key from `?api_key=` unless a header brings one; no key at all is a 401 before any work. */
function authenticate(ctx: HttpContext): void {
  const fromQuery = ctx.url.searchParams.get("api_key");
  if (!ctx.metadata.has("authorization") && !ctx.metadata.has("x-api-key")) {
    if (!fromQuery) {
      throw new RoboflowError(401, "unauthorized", "this endpoint needs an API key: add ?api_key=<key> to the URL");
    }
    // gRPC metadata carries printable ASCII only, as every API key is.
    if (!/^[\x20-\x7e]*$/.test(fromQuery)) throw new RoboflowError(401, "unauthorized", "api_key is not a valid API key");
    ctx.metadata.set("x-api-key", fromQuery);
  }
}

/**
 * JSON, tolerating trailing commas before `}` or `]`: the seed's own example request has one
 * (`"limit": 125,` closing the object), and curl sends it as written.
 */
function parseBody(raw: Buffer): Record<string, unknown> {
  const text = raw.toString("utf8");
  if (text.trim() === "") return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    try {
      body = JSON.parse(withoutTrailingCommas(text));
    } catch (err) {
      throw invalid(`the body is not valid JSON: ${(err as Error).message}`);
    }
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw invalid("the body must be a JSON object");
  return body as Record<string, unknown>;
}

/** Drops each comma that only whitespace separates from a closing bracket, outside strings. */
function withoutTrailingCommas(text: string): string {
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      out += c;
      if (c === "\\") out += text[++i] ?? "";
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
      out += c;
    } else if (c === "," && /^\s*[}\]]/.test(text.slice(i + 1))) {
      continue;
    } else {
      out += c;
    }
  }
  return out;
}

function planOf(body: Record<string, unknown>, project: string): SearchPlan {
  const problems: string[] = [];
  // Absent, null and "" all mean "not given", as the SDK leaves out what it was not passed.
  const text = (name: string): string | undefined => {
    const value = body[name];
    if (value === undefined || value === null || value === "") return undefined;
    if (typeof value === "string") return value;
    problems.push(`${name}: must be a string`);
    return undefined;
  };
  const flag = (name: string): boolean => {
    const value = body[name];
    if (value === undefined || value === null || typeof value === "boolean") return value === true;
    problems.push(`${name}: must be true or false`);
    return false;
  };
  const integer = (name: string, fallback: number, min: number, max: number): number => {
    const value = body[name];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      problems.push(`${name}: must be an integer within ${min}..${max}`);
      return fallback;
    }
    return value;
  };

  const likeImage = body.like_image;
  let likeImageId: string | undefined;
  if (typeof likeImage === "number" && Number.isInteger(likeImage) && likeImage > 0) likeImageId = String(likeImage);
  else if (typeof likeImage === "string" && likeImage !== "") likeImageId = likeImage;
  else if (likeImage !== undefined && likeImage !== null && likeImage !== "") {
    problems.push("like_image: must be an image id");
  }
  if (likeImageId !== undefined && !isImageId(likeImageId)) {
    throw new RoboflowError(404, "not_found", `like_image: no image has the id '${likeImageId}'`);
  }
  const prompt = text("prompt");

  const filter: Partial<ImageFilter> & { metaEquals: Record<string, string>; metaKeys: string[] } = {
    metaEquals: {},
    metaKeys: [],
  };
  const tag = text("tag");
  if (tag !== undefined) filter.tags = [tag];
  const className = text("class_name");
  if (className !== undefined) filter.className = className;
  const inDataset = body.in_dataset;
  if (inDataset === true) filter.metaEquals.dataset = project;
  else if (typeof inDataset === "string" && inDataset !== "") filter.metaEquals.dataset = inDataset;
  else if (inDataset !== undefined && inDataset !== null && inDataset !== false && inDataset !== "") {
    problems.push("in_dataset: must be a dataset name, or true for this URL's project");
  }
  for (const [key, name] of [["batch_id", "batch"], ["annotation_job_id", "annotation_job"]] as const) {
    const id = text(key);
    if (id !== undefined) filter.metaEquals[key] = id;
    else if (flag(name)) filter.metaKeys.push(key);
  }
  const split = text("split");
  if (split !== undefined) filter.metaEquals.split = split;

  const threshold = body.threshold ?? 0;
  if (typeof threshold !== "number" || !(threshold >= 0 && threshold <= 1)) {
    problems.push("threshold: must be a number within [0, 1]");
  }

  const fields = fieldsOf(body.fields, problems);
  const query = likeImageId !== undefined
    ? ({ $case: "likeImageId", value: likeImageId } as const)
    : prompt !== undefined
      ? ({ $case: "prompt", value: prompt } as const)
      : undefined;
  if (!query && fields.includes("embedding")) {
    problems.push("fields: 'embedding' needs a prompt or like_image (only a similarity search reads embeddings)");
  }
  const plan: SearchPlan = {
    query,
    offset: integer("offset", 0, 0, INT32_MAX),
    limit: integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
    threshold: typeof threshold === "number" ? threshold : 0,
    filter: filter as ImageFilter,
    fields,
  };
  if (problems.length > 0) throw invalid(problems.join("; "));
  return plan;
}

function fieldsOf(value: unknown, problems: string[]): string[] {
  if (value === undefined || value === null) return DEFAULT_FIELDS;
  if (!Array.isArray(value) || !value.every((f) => typeof f === "string")) {
    problems.push("fields: must be an array of field names");
    return DEFAULT_FIELDS;
  }
  const unknown = value.filter((f) => !FIELDS.includes(f));
  if (unknown.length > 0) {
    const names = unknown.map((f) => `'${f}'`).join(", ");
    problems.push(`fields: unknown ${names}; options are ${FIELDS.join(", ")}`);
  }
  const fields = [...new Set(value as string[])];
  return fields.length === 0 ? DEFAULT_FIELDS : fields;
}

/** A positive int64 in decimal: glimpse's ids. Anything else names no image. */
function isImageId(id: string): boolean {
  return /^[1-9][0-9]{0,18}$/.test(id) && BigInt(id) <= 9223372036854775807n;
}

/** A similarity search: one SearchImages call. */
async function ranked(ctx: HttpContext, images: ImageClient, plan: SearchPlan): Promise<unknown> {
  const res = await callFor(ctx, (options) =>
    images.searchImages(
      {
        query: plan.query,
        offset: plan.offset,
        limit: plan.limit,
        threshold: plan.threshold,
        filter: plan.filter,
        fields: plan.fields.filter((f) => f !== "score"),
      },
      options,
    ),
  );
  const results = res.results.map((r) => selectFromResult(r, plan.fields));
  return { offset: res.offset, total: Number(res.total), results };
}

/** No query: the filtered catalogue, newest first, read in ListImages pages of at most 200. */
async function listed(ctx: HttpContext, images: ImageClient, plan: SearchPlan): Promise<unknown> {
  const found: Image[] = [];
  let total = 0;
  for (let first = true; found.length < plan.limit; first = false) {
    const want = Math.min(LIST_PAGE, plan.limit - found.length);
    const res = await callFor(ctx, (options) =>
      images.listImages(
        { filter: plan.filter, offset: plan.offset + found.length, pageSize: want, includeTotal: first },
        options,
      ),
    );
    if (first) total = Number(res.metadata?.totalItems ?? 0);
    found.push(...res.images);
    if (res.images.length < want) break;
  }
  return { offset: plan.offset, total, results: found.map((image) => selectFromImage(image, plan.fields)) };
}

/** The seed's value of each selected field, in the order the request named them. */
function selected(fields: string[], value: (field: string) => unknown): Record<string, unknown> {
  return Object.fromEntries(fields.map((f) => [f, value(f)]));
}

function selectFromResult(r: SearchResult, fields: string[]): Record<string, unknown> {
  return selected(fields, (f) => {
    switch (f) {
      case "id": return r.id;
      case "name": return r.name;
      case "annotations": return annotationsOut(r.annotations);
      case "labels": return r.labels;
      case "split": return r.split === "" ? null : r.split;
      case "tags": return r.tags;
      case "owner": return r.owner;
      case "embedding": return r.embedding;
      case "created": return seconds(r.created);
      case "url": return r.url;
      default: return r.score;
    }
  });
}

function selectFromImage(image: Image, fields: string[]): Record<string, unknown> {
  const split = image.meta?.split;
  return selected(fields, (f) => {
    switch (f) {
      case "id": return image.id;
      case "name": return image.fileName;
      case "annotations": return annotationsOut(image.annotations);
      case "labels": return Object.keys(image.annotations?.classes ?? {}).sort(byteOrder);
      case "split": return typeof split === "string" && split !== "" ? split : null;
      case "tags": return image.tags;
      case "owner": return image.owner;
      case "created": return seconds(image.createdAt);
      case "url": return image.url;
      // "score" without a query: nothing was ranked.
      default: return null;
    }
  });
}

/** SearchResult's order of labels: by UTF-8 bytes. */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** The seed's annotation summary: object count and count per class (boxes are glimpse's own). */
function annotationsOut(a: { count: number; classes: Record<string, number> } | undefined) {
  return { count: a?.count ?? 0, classes: a?.classes ?? {} };
}

/** Unix time in seconds, Roboflow's convention for `created` (its SDK reads it with fromtimestamp). */
function seconds(date: Date | undefined): number | null {
  return date ? date.getTime() / 1000 : null;
}


/**
 * glimpse's request paths in the seed's names: `filter.tags[0]` -> `tag`, `like_image_id` ->
 * `like_image`, `filter.meta_equals[batch_id]` -> `batch_id` (the dataset is in_dataset's, or
 * the URL's project).
 */
function seedMessage(message: string): string {
  return message
    .replace(/\blike_image_id\b/g, "like_image")
    .replace(/\bfilter\.meta_equals\[(\w+)\]/g, (_m, key: string) =>
      key === "dataset" ? "in_dataset (or the URL's project)" : key,
    )
    .replace(/\bfilter\.tags(\[\d+\])?/g, "tag")
    .replace(/\bfilter\./g, "");
}

/** The HTTP answer to a failed call. */
function errorOf(failure: CallFailure): RoboflowError {
  const message = failure.grpcMessage;
  switch (failure.code) {
    case Status.INVALID_ARGUMENT:
      return invalid(seedMessage(message));
    case Status.UNAUTHENTICATED:
      return new RoboflowError(401, "unauthorized", message);
    case Status.PERMISSION_DENIED:
      return new RoboflowError(403, "forbidden", message);
    case Status.NOT_FOUND:
      return new RoboflowError(404, "not_found", seedMessage(message));
    case Status.RESOURCE_EXHAUSTED: {
      return new RoboflowError(429, "rate_limited", message, { "retry-after": retryAfterSeconds(failure.retryAfterMs) });
    }
    case Status.FAILED_PRECONDITION:
      // A like_image that is not indexed (yet) is the request's problem; anything else is the
      // embedding model being absent or loading: the service cannot search right now.
      return / is not indexed /.test(message)
        ? invalid(`like_image: ${message}`)
        : new RoboflowError(503, "unavailable", message);
    case Status.CANCELLED:
      return new RoboflowError(499, "cancelled", message);
    case Status.UNAVAILABLE:
      // A passing state (the model still loading, say) says when to come back.
      return new RoboflowError(
        503,
        "unavailable",
        message,
        failure.retryAfterMs === undefined ? undefined : { "retry-after": retryAfterSeconds(failure.retryAfterMs) },
      );
    case Status.DEADLINE_EXCEEDED:
      return new RoboflowError(504, "timeout", message);
    default:
      return new RoboflowError(500, "internal", "internal error");
  }
}

/** Sends the handler's value as JSON, or its failure in this surface's error shape. */
async function answer(ctx: HttpContext, handler: () => Promise<unknown>): Promise<void> {
  let error: RoboflowError;
  try {
    return sendJson(ctx.res, 200, await handler());
  } catch (err) {
    if (err instanceof RoboflowError) error = err;
    else if (err instanceof CallFailure) error = errorOf(err);
    else if (err instanceof DomainError) error = errorOf(CallFailure.of(err));
    else if (err instanceof BodyTooLarge) error = new RoboflowError(413, "invalid_request", err.message);
    else throw err;
  }
  sendJson(ctx.res, error.status, { error: { message: error.message, type: error.type } }, error.headers);
}
