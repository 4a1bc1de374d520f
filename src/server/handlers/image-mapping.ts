import type { ImageFilterInput } from "../../catalogue/listing.js";
import type {
  Annotations,
  Comment,
  ImageRecord,
  ImageSort,
  ImageStats,
  IndexStatus,
  NsfwLevel,
  Period,
  ReactionKind,
  Visibility,
} from "../../catalogue/types.js";
import { invalidArgument } from "../../errors.js";
import * as pb from "../../gen/glimpse/image/v1/image.js";
import { ImageFilter as PbImageFilter, Period as PbPeriod } from "../../gen/glimpse/image/v1/image_filter.js";
import { ImageSort as PbImageSort } from "../../gen/glimpse/image/v1/image_service.js";

/*
 * Protobuf <-> domain for the image service. Enums with an UNSPECIFIED value map to the
 * documented default; a number outside the enum (a newer client) is INVALID_ARGUMENT.
 */

function enumMapper<P extends number, D>(field: string, table: [P, D][], unspecified: D | undefined) {
  const toDomain = new Map<number, D>(table);
  const toProto = new Map<D, P>(table.map(([p, d]) => [d, p]));
  return {
    in(value: P, fieldName = field): D | undefined {
      if (value === 0) return unspecified;
      const d = toDomain.get(value);
      if (d === undefined) throw invalidArgument({ field: fieldName, description: `unknown value ${value}` });
      return d;
    },
    out(value: D): P {
      return toProto.get(value)!;
    },
  };
}

export const nsfwLevels = enumMapper<pb.NsfwLevel, NsfwLevel>(
  "nsfw_level",
  [
    [pb.NsfwLevel.NSFW_LEVEL_NONE, "none"],
    [pb.NsfwLevel.NSFW_LEVEL_SOFT, "soft"],
    [pb.NsfwLevel.NSFW_LEVEL_MATURE, "mature"],
    [pb.NsfwLevel.NSFW_LEVEL_X, "x"],
  ],
  undefined,
);

export const visibilities = enumMapper<pb.Visibility, Visibility>(
  "visibility",
  [
    [pb.Visibility.VISIBILITY_PRIVATE, "private"],
    [pb.Visibility.VISIBILITY_PUBLIC, "public"],
  ],
  undefined,
);

export const indexStatuses = enumMapper<pb.IndexStatus, IndexStatus>(
  "index_status",
  [
    [pb.IndexStatus.INDEX_STATUS_PENDING, "pending"],
    [pb.IndexStatus.INDEX_STATUS_INDEXED, "indexed"],
    [pb.IndexStatus.INDEX_STATUS_FAILED, "failed"],
    [pb.IndexStatus.INDEX_STATUS_NOT_INDEXED, "not_indexed"],
  ],
  undefined,
);

export const reactionKinds = enumMapper<pb.ReactionKind, ReactionKind>(
  "kind",
  [
    [pb.ReactionKind.REACTION_KIND_LIKE, "like"],
    [pb.ReactionKind.REACTION_KIND_HEART, "heart"],
    [pb.ReactionKind.REACTION_KIND_LAUGH, "laugh"],
    [pb.ReactionKind.REACTION_KIND_CRY, "cry"],
    [pb.ReactionKind.REACTION_KIND_DISLIKE, "dislike"],
  ],
  undefined,
);

export const sorts = enumMapper<PbImageSort, ImageSort>(
  "sort",
  [
    [PbImageSort.IMAGE_SORT_NEWEST, "newest"],
    [PbImageSort.IMAGE_SORT_OLDEST, "oldest"],
    [PbImageSort.IMAGE_SORT_MOST_REACTIONS, "most_reactions"],
    [PbImageSort.IMAGE_SORT_MOST_COMMENTS, "most_comments"],
  ],
  "newest",
);

export const periods = enumMapper<PbPeriod, Period>(
  "filter.period",
  [
    [PbPeriod.PERIOD_ALL_TIME, "all"],
    [PbPeriod.PERIOD_YEAR, "year"],
    [PbPeriod.PERIOD_MONTH, "month"],
    [PbPeriod.PERIOD_WEEK, "week"],
    [PbPeriod.PERIOD_DAY, "day"],
  ],
  "all",
);

/** A required positive id field. */
export function idIn(value: string, field: string): bigint {
  const id = BigInt(value || "0");
  if (id <= 0n) throw invalidArgument({ field, description: "is required and must be > 0" });
  return id;
}

/** An optional int64 field: undefined stays undefined (unset). */
export function optionalIdIn(value: string | undefined): bigint | null {
  return value === undefined ? null : BigInt(value);
}

export function annotationsIn(a: pb.Annotations | undefined): Annotations | undefined {
  if (!a) return undefined;
  return {
    classes: { ...a.classes },
    boxes: a.boxes.map((b) => ({
      className: b.className,
      x: b.x,
      y: b.y,
      width: b.width,
      height: b.height,
      ...(b.confidence === undefined ? {} : { confidence: b.confidence }),
    })),
  };
}

export function statsOut(s: ImageStats): pb.ImageStats {
  return {
    likeCount: String(s.like),
    heartCount: String(s.heart),
    laughCount: String(s.laugh),
    cryCount: String(s.cry),
    dislikeCount: String(s.dislike),
    commentCount: String(s.comments),
    reactionCount: String(s.like + s.heart + s.laugh + s.cry + s.dislike),
  };
}

/** The absolute URL of an image's bytes on the HTTP bridge. */
export function contentUrl(publicUrl: string, id: bigint): string {
  return `${publicUrl}/v1/images/${id}/content`;
}

/** A stored image as the contract shows it. */
export function imageOut(
  image: ImageRecord,
  publicUrl: string,
  extra: { deduplicated?: boolean; content?: Buffer } = {},
): pb.Image {
  const classes = image.annotations.classes;
  return {
    id: image.id.toString(),
    url: contentUrl(publicUrl, image.id),
    fileName: image.fileName,
    mediaType: image.mediaType,
    width: image.width,
    height: image.height,
    byteSize: String(image.byteSize),
    hash: image.blurhash,
    sha256: image.sha256,
    phash: image.phash.toString(16).padStart(16, "0"),
    tags: image.tags,
    nsfw: image.nsfwLevel !== "none",
    nsfwLevel: nsfwLevels.out(image.nsfwLevel),
    createdAt: image.createdAt,
    updatedAt: image.updatedAt,
    postId: image.postId?.toString(),
    modelId: image.modelId?.toString(),
    modelVersionId: image.modelVersionId?.toString(),
    username: image.username,
    meta: image.meta ?? undefined,
    stats: statsOut(image.stats),
    annotations: {
      count: Object.values(classes).reduce((a, b) => a + b, 0),
      classes,
      boxes: image.annotations.boxes.map((b) => ({ ...b })),
    },
    owner: image.ownerId,
    visibility: visibilities.out(image.visibility),
    indexStatus: indexStatuses.out(image.indexStatus),
    indexError: image.indexError,
    deduplicated: extra.deduplicated ?? false,
    content: extra.content,
  };
}

export function commentOut(c: Comment): pb.Comment {
  return {
    id: c.id.toString(),
    imageId: c.imageId.toString(),
    accountId: c.accountId,
    username: c.username,
    text: c.text,
    createdAt: c.createdAt,
  };
}

/** The filter message in domain form (still unvalidated: the service checks it). */
export function filterIn(f: PbImageFilter | undefined): ImageFilterInput {
  if (!f) return {};
  return {
    tags: f.tags,
    excludeTags: f.excludeTags,
    tagsQuery: f.tagsQuery,
    username: f.username,
    postId: optionalIdIn(f.postId),
    modelId: optionalIdIn(f.modelId),
    modelVersionId: optionalIdIn(f.modelVersionId),
    nsfw: f.nsfw ?? null,
    nsfwLevel: nsfwLevels.in(f.nsfwLevel, "filter.nsfw_level") ?? null,
    period: periods.in(f.period) ?? "all",
    visibility: visibilities.in(f.visibility, "filter.visibility") ?? null,
    indexStatus: indexStatuses.in(f.indexStatus, "filter.index_status") ?? null,
    className: f.className,
    metaEquals: f.metaEquals,
    metaKeys: f.metaKeys,
  };
}
