import { NsfwLevel, type Image } from "../../gen/glimpse/image/v1/image.js";
import { Period, type ImageFilter } from "../../gen/glimpse/image/v1/image_filter.js";
import {
  ImageServiceDefinition,
  ImageSort,
  type DeepPartial,
  type ListImagesRequest,
} from "../../gen/glimpse/image/v1/image_service.js";
import type { RouteDeps } from "../gateway.js";
import type { HttpContext, Route } from "../http.js";
import {
  badParameter,
  callOnBehalf,
  compatRoute,
  exactNumber,
  positiveId,
  queryValue,
  sendCompatJson,
  wholeNumber,
  type JsonOut,
} from "./catalogue-shapes.js";

/**
 * Seed 2 (civitai's `GET /api/v1/images`) under /compat/civitai: its query parameters, its
 * items and its `metadata` block, as a thin adapter over ListImages.
 *
 * `metadata.nextCursor` is, as the seed describes it, the id of the first image of the next
 * batch; passed back as `cursor` it starts a page at that image (ListImages accepts an image
 * id as its cursor). `nextPage` instead carries glimpse's opaque cursor, which also holds the
 * sort key and the walk's start time, so following it never repeats an image under a ranked
 * sort whose counts change meanwhile. On the last page both are left out.
 */

const PATH = "/compat/civitai/api/v1/images";

/** Seed 2 caps `limit` at 200, glimpse's own maximum page size. */
const MAX_LIMIT = 200;

/** Seed sort names, compared without case or spaces ("Most Reactions", "most+reactions"). */
const SORTS: Record<string, ImageSort> = {
  mostreactions: ImageSort.IMAGE_SORT_MOST_REACTIONS,
  mostcomments: ImageSort.IMAGE_SORT_MOST_COMMENTS,
  newest: ImageSort.IMAGE_SORT_NEWEST,
};

const PERIODS: Record<string, Period> = {
  alltime: Period.PERIOD_ALL_TIME,
  year: Period.PERIOD_YEAR,
  month: Period.PERIOD_MONTH,
  week: Period.PERIOD_WEEK,
  day: Period.PERIOD_DAY,
};

/** `nsfw` as a level name: that level and every level below it. */
const NSFW_LEVELS: Record<string, NsfwLevel> = {
  none: NsfwLevel.NSFW_LEVEL_NONE,
  soft: NsfwLevel.NSFW_LEVEL_SOFT,
  mature: NsfwLevel.NSFW_LEVEL_MATURE,
  x: NsfwLevel.NSFW_LEVEL_X,
};

const NSFW_NAMES: Partial<Record<NsfwLevel, string>> = {
  [NsfwLevel.NSFW_LEVEL_NONE]: "None",
  [NsfwLevel.NSFW_LEVEL_SOFT]: "Soft",
  [NsfwLevel.NSFW_LEVEL_MATURE]: "Mature",
  [NsfwLevel.NSFW_LEVEL_X]: "X",
};

/** ListImages request fields, as glimpse names them in violations, to seed 2's parameters. */
const PARAMETER_NAMES: Record<string, string> = {
  limit: "limit",
  page_size: "limit",
  page: "page",
  cursor: "cursor",
  page_token: "cursor",
  "filter.post_id": "postId",
  "filter.model_id": "modelId",
  "filter.model_version_id": "modelVersionId",
  "filter.username": "username",
  "filter.nsfw": "nsfw",
  "filter.nsfw_level": "nsfw",
  "filter.period": "period",
};

/** `/compat/civitai/api/v1/images`: seed 2's image list. */
export function civitaiRoutes(deps: RouteDeps): Route[] {
  const images = deps.rpc.client(ImageServiceDefinition);
  return [
    compatRoute(deps, "GET", PATH, async (ctx) => {
      const request = listRequest(ctx.url.searchParams);
      const response = await callOnBehalf(ctx, PARAMETER_NAMES, (options) => images.listImages(request, options));
      const metadata = response.metadata;
      const token = metadata?.nextCursor || undefined;
      // The seed's nextCursor: the id of the first image of the next batch.
      const nextCursor = token && metadata?.nextImageId ? exactNumber(metadata.nextImageId) : undefined;
      sendCompatJson(ctx.res, 200, {
        items: response.images.map(civitaiImage),
        metadata: {
          nextCursor,
          currentPage: metadata?.currentPage ?? 1,
          pageSize: metadata?.pageSize ?? response.images.length,
          nextPage: nextCursor === undefined ? undefined : nextPageUrl(deps, ctx, request, token!),
        },
      });
    }),
  ];
}

/**
 * The ListImages request for seed 2's query parameters. Values are checked here so a bad
 * one is named as the seed names it; ranges glimpse checks itself (limit, ids > 0) come
 * back from the call renamed the same way. Unknown parameters are ignored.
 */
function listRequest(params: URLSearchParams): DeepPartial<ListImagesRequest> {
  const filter: DeepPartial<ImageFilter> = {};
  const request: DeepPartial<ListImagesRequest> = { filter };
  const limit = queryValue(params, "limit");
  if (limit !== undefined) request.limit = wholeNumber("limit", limit, 0, MAX_LIMIT);
  for (const name of ["postId", "modelId", "modelVersionId"] as const) {
    const value = queryValue(params, name);
    if (value !== undefined) filter[name] = positiveId(name, value);
  }
  const username = queryValue(params, "username");
  if (username !== undefined) filter.username = username;
  const nsfw = queryValue(params, "nsfw")?.toLowerCase();
  if (nsfw === "true" || nsfw === "false") filter.nsfw = nsfw === "true";
  else if (nsfw !== undefined) filter.nsfwLevel = choice("nsfw", nsfw, NSFW_LEVELS, "true, false, None, Soft, Mature or X");
  const sort = queryValue(params, "sort");
  if (sort !== undefined) request.sort = choice("sort", sort, SORTS, "Most Reactions, Most Comments or Newest");
  const period = queryValue(params, "period");
  if (period !== undefined) filter.period = choice("period", period, PERIODS, "AllTime, Year, Month, Week or Day");
  const page = queryValue(params, "page");
  const cursor = queryValue(params, "cursor");
  if (page !== undefined && cursor !== undefined) throw badParameter("cursor", "give either page or cursor, not both");
  // Pages are 1-based, as in the seed's example (currentPage 1, nextPage page=2).
  if (page !== undefined) request.page = wholeNumber("page", page, 1, 2 ** 31 - 2);
  if (cursor !== undefined) request.cursor = cursor;
  return request;
}

/** The enum value a seed name stands for, compared without case or spaces. */
function choice<T>(name: string, text: string, values: Record<string, T>, allowed: string): T {
  const value = values[text.toLowerCase().replace(/[\s+_-]/g, "")];
  if (value === undefined) throw badParameter(name, `must be one of ${allowed}, got '${text}'`);
  return value;
}

/**
 * The absolute URL of the next batch: this request's parameters unchanged, with `page` one
 * further when the caller pages by number, and otherwise `cursor` set to the next cursor
 * (stable while images arrive).
 */
function nextPageUrl(deps: RouteDeps, ctx: HttpContext, request: DeepPartial<ListImagesRequest>, nextCursor: string): string {
  const params = new URLSearchParams(ctx.url.searchParams);
  params.delete("page");
  params.delete("cursor");
  if (request.page) params.set("page", String(request.page + 1));
  else params.set("cursor", nextCursor);
  return `${deps.publicUrl().replace(/\/+$/, "")}${PATH}?${params}`;
}

/**
 * One item in seed 2's shape. Ids and counters are exact JSON numbers (glimpse's ids are
 * 64-bit snowflakes). `postId` is null and `meta` null when the image has none, and
 * `username` is the creator credit given at upload ("" when none).
 */
function civitaiImage(image: Image): JsonOut {
  const stats = image.stats;
  const count = (value: string | undefined) => exactNumber(value ?? "0");
  return {
    id: exactNumber(image.id),
    url: image.url,
    hash: image.hash,
    width: image.width,
    height: image.height,
    nsfw: image.nsfw,
    nsfwLevel: NSFW_NAMES[image.nsfwLevel] ?? "None",
    createdAt: image.createdAt?.toISOString() ?? null,
    postId: image.postId === undefined ? null : exactNumber(image.postId),
    stats: {
      cryCount: count(stats?.cryCount),
      laughCount: count(stats?.laughCount),
      likeCount: count(stats?.likeCount),
      dislikeCount: count(stats?.dislikeCount),
      heartCount: count(stats?.heartCount),
      commentCount: count(stats?.commentCount),
    },
    meta: (image.meta as JsonOut | undefined) ?? null,
    username: image.username,
  };
}
