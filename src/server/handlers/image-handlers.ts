import type { CatalogueService, UploadInput } from "../../catalogue/catalogue-service.js";
import type { ListingService, ListPage } from "../../catalogue/listing.js";
import type { UpdatableField } from "../../catalogue/types.js";
import { invalidArgument } from "../../errors.js";
import { Status as RpcStatus } from "../../gen/google/rpc/status.js";
import { ImageView, IndexStatus, NsfwLevel, ReactionKind, Visibility } from "../../gen/glimpse/image/v1/image.js";
import { ImageFilter, Period } from "../../gen/glimpse/image/v1/image_filter.js";
import {
  ImageSort,
  type ImageServiceImplementation,
  type ListImagesRequest,
  type UploadImageRequest,
} from "../../gen/glimpse/image/v1/image_service.js";
import type { AppCallContext } from "../context.js";
import { toStatus } from "../middleware/errors.js";
import { statusOf } from "../status-details.js";
import {
  annotationsIn,
  commentOut,
  filterIn,
  idIn,
  imageOut,
  nsfwLevels,
  optionalIdIn,
  reactionKinds,
  sorts,
  statsOut,
  visibilities,
} from "./image-mapping.js";

type Ctx = AppCallContext;

/** What the image handlers are built from. */
export interface ImageHandlerDeps {
  catalogue: CatalogueService;
  listing: ListingService;
  publicUrl: string;
}

const UPDATE_PATHS: Record<string, UpdatableField> = {
  file_name: "fileName",
  tags: "tags",
  username: "username",
  post_id: "postId",
  model_id: "modelId",
  model_version_id: "modelVersionId",
  nsfw_level: "nsfwLevel",
  meta: "meta",
  annotations: "annotations",
  visibility: "visibility",
};

function uploadIn(r: UploadImageRequest, field = ""): UploadInput {
  return {
    content: r.content,
    fileName: r.fileName,
    tags: r.tags,
    username: r.username,
    postId: optionalIdIn(r.postId),
    modelId: optionalIdIn(r.modelId),
    modelVersionId: optionalIdIn(r.modelVersionId),
    nsfwLevel: nsfwLevels.in(r.nsfwLevel, `${field}nsfw_level`) ?? "none",
    meta: r.meta ?? null,
    annotations: annotationsIn(r.annotations),
    visibility: visibilities.in(r.visibility, `${field}visibility`) ?? "private",
    index: r.index,
    waitForIndex: r.waitForIndex,
    requestId: r.requestId,
  };
}

/** Query parameters that repeat a ListImages filter in the HTTP bridge's GET form. */
function filterQuery(f: ImageFilter | undefined, params: URLSearchParams): void {
  if (!f) return;
  for (const t of f.tags) params.append("filter.tags", t);
  for (const t of f.excludeTags) params.append("filter.excludeTags", t);
  if (f.tagsQuery) params.set("filter.tagsQuery", f.tagsQuery);
  if (f.username) params.set("filter.username", f.username);
  if (f.postId !== undefined) params.set("filter.postId", f.postId);
  if (f.modelId !== undefined) params.set("filter.modelId", f.modelId);
  if (f.modelVersionId !== undefined) params.set("filter.modelVersionId", f.modelVersionId);
  if (f.nsfw !== undefined) params.set("filter.nsfw", String(f.nsfw));
  if (f.nsfwLevel) params.set("filter.nsfwLevel", NsfwLevel[f.nsfwLevel]);
  if (f.period) params.set("filter.period", Period[f.period]);
  if (f.visibility) params.set("filter.visibility", Visibility[f.visibility]);
  if (f.indexStatus) params.set("filter.indexStatus", IndexStatus[f.indexStatus]);
  if (f.className) params.set("filter.className", f.className);
  for (const k of f.metaKeys) params.append("filter.metaKeys", k);
}

/** The relative URL of the next page, paging the way the request did. */
export function nextPageUrl(request: ListImagesRequest, page: ListPage): string {
  if (page.nextPageToken === "") return "";
  const params = new URLSearchParams();
  filterQuery(request.filter, params);
  if (request.sort) params.set("sort", ImageSort[request.sort]);
  params.set("pageSize", String(page.pageSize));
  if (request.includeTotal) params.set("includeTotal", "true");
  switch (page.form) {
    case "page":
      params.set("page", String(page.currentPage + 1));
      break;
    case "zero_based_page":
      params.set("zeroBasedPage", String(page.currentPage));
      break;
    case "offset":
      params.set("offset", String(page.nextOffset));
      break;
    case "cursor":
      params.set("cursor", page.nextPageToken);
      break;
    default:
      params.set("pageToken", page.nextPageToken);
  }
  return `/v1/images?${params}`;
}

/** The largest value PostgreSQL's bigint holds. */
const INT64_MAX = 9_223_372_036_854_775_807n;

/** The catalogue RPCs of glimpse.image.v1.ImageService. */
export function imageHandlers(deps: ImageHandlerDeps): Partial<ImageServiceImplementation<Ctx>> {
  const { catalogue, listing, publicUrl } = deps;

  /** AddReaction and RemoveReaction: the same call with `add` true or false. */
  async function react(request: { imageId: string; kind: ReactionKind }, context: Ctx, add: boolean) {
    const kind = reactionKinds.in(request.kind);
    if (!kind) throw invalidArgument({ field: "kind", description: "is required" });
    const { stats, changed } = await catalogue.react(context.caller, idIn(request.imageId, "image_id"), kind, add);
    return { stats: statsOut(stats), changed };
  }

  return {
    async uploadImage(request, context) {
      const { image, deduplicated } = await catalogue.upload(context.caller, { ...uploadIn(request), signal: context.signal });
      return { image: imageOut(image, publicUrl, { deduplicated }) };
    },

    async *batchUploadImages(requests, context) {
      let index = 0;
      for await (const item of requests) {
        const requestId = item.request?.requestId ?? "";
        try {
          // The call's own token pays for the first item; every further item costs one more.
          if (index > 0) await context.charge();
          if (!item.request) throw invalidArgument({ field: "request", description: "is required" });
          const { image, deduplicated } = await catalogue.upload(context.caller, { ...uploadIn(item.request, "request."), signal: context.signal });
          yield { index, requestId, result: { $case: "image", value: imageOut(image, publicUrl, { deduplicated }) } };
        } catch (err) {
          if (context.signal.aborted) throw err;
          // One bad item answers with the status UploadImage would have given, and the batch goes on.
          const failure = toStatus(err, context);
          const status: RpcStatus = statusOf(failure.code, failure.message, failure.domain);
          yield { index, requestId, result: { $case: "error", value: status } };
        }
        index++;
      }
    },

    async getImage(request, context) {
      const id = idIn(request.id, "id");
      if (request.view === ImageView.IMAGE_VIEW_WITH_CONTENT) {
        const { image, content } = await catalogue.getWithContent(context.caller, id);
        return { image: imageOut(image, publicUrl, { content }) };
      }
      return { image: imageOut(await catalogue.get(context.caller, id), publicUrl) };
    },

    async getImageContent(request, context) {
      const { image, content } = await catalogue.getWithContent(context.caller, idIn(request.id, "id"));
      return { contentType: image.mediaType, data: content, extensions: [] };
    },

    async listImages(request, context) {
      const page = await listing.list(context.caller, {
        filter: filterIn(request.filter),
        sort: sorts.in(request.sort) ?? "newest",
        pageSize: request.pageSize,
        limit: request.limit,
        pageToken: request.pageToken,
        cursor: request.cursor,
        page: request.page,
        zeroBasedPage: request.zeroBasedPage,
        offset: request.offset,
        includeTotal: request.includeTotal,
      });
      return {
        images: page.images.map((i) => imageOut(i, publicUrl)),
        nextPageToken: page.nextPageToken,
        metadata: {
          nextCursor: page.nextPageToken,
          currentPage: page.currentPage,
          pageSize: page.pageSize,
          nextPage: nextPageUrl(request, page),
          totalItems: page.total === undefined ? undefined : String(page.total),
          nextImageId: page.nextImageId?.toString(),
        },
      };
    },

    async updateImage(request, context) {
      const image = request.image;
      if (!image) throw invalidArgument({ field: "image", description: "is required" });
      const id = idIn(image.id, "image.id");
      const paths = request.updateMask ?? [];
      if (paths.length === 0) {
        throw invalidArgument({ field: "update_mask", description: "is required: name the fields to change" });
      }
      const mask = new Set<UpdatableField>();
      for (const path of paths) {
        // Field masks arrive in proto field names over gRPC and lowerCamelCase over JSON.
        const snake = path.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
        if (snake === "*") Object.values(UPDATE_PATHS).forEach((f) => mask.add(f));
        else if (UPDATE_PATHS[snake]) mask.add(UPDATE_PATHS[snake]);
        else {
          throw invalidArgument({
            field: "update_mask",
            description: `unknown or read-only path ${JSON.stringify(path)}; updatable: ${Object.keys(UPDATE_PATHS).join(", ")}`,
          });
        }
      }
      const updated = await catalogue.update(context.caller, id, [...mask], {
        fileName: image.fileName,
        tags: image.tags,
        username: image.username,
        postId: optionalIdIn(image.postId),
        modelId: optionalIdIn(image.modelId),
        modelVersionId: optionalIdIn(image.modelVersionId),
        nsfwLevel: nsfwLevels.in(image.nsfwLevel, "image.nsfw_level"),
        meta: image.meta ?? null,
        annotations: annotationsIn(image.annotations),
        visibility: visibilities.in(image.visibility, "image.visibility"),
      });
      return { image: imageOut(updated, publicUrl) };
    },

    async deleteImage(request, context) {
      await catalogue.delete(context.caller, idIn(request.id, "id"));
      return {};
    },

    addReaction: (request, context) => react(request, context, true),
    removeReaction: (request, context) => react(request, context, false),

    async addComment(request, context) {
      const comment = await catalogue.addComment(
        context.caller,
        idIn(request.imageId, "image_id"),
        request.text,
        request.requestId,
      );
      return { comment: commentOut(comment) };
    },

    async listComments(request, context) {
      let after = 0n;
      if (request.pageToken !== "") {
        const text = Buffer.from(request.pageToken, "base64url").toString();
        // The sequence must fit PostgreSQL's bigint: a forged token is the caller's mistake.
        if (!/^c\d{1,19}$/.test(text) || BigInt(text.slice(1)) > INT64_MAX) {
          throw invalidArgument({ field: "page_token", description: "is not a token returned by ListComments" });
        }
        after = BigInt(text.slice(1));
      }
      const { comments, next } = await catalogue.listComments(
        context.caller,
        idIn(request.imageId, "image_id"),
        after,
        request.pageSize,
      );
      return {
        comments: comments.map(commentOut),
        nextPageToken: next === undefined ? "" : Buffer.from(`c${next}`).toString("base64url"),
      };
    },
  };
}
