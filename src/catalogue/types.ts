/** Plain domain types of the catalogue; the transport maps protobuf to and from these. */

/** Who is calling: the account acting, and whether it may read and change everything. */
export interface Caller {
  accountId: string;
  isAdmin: boolean;
}

/** Mature-content level, ordered: a filter on a level returns that level and below. */
export type NsfwLevel = "none" | "soft" | "mature" | "x";
export const NSFW_LEVELS: readonly NsfwLevel[] = ["none", "soft", "mature", "x"];

export type Visibility = "private" | "public";
export type IndexStatus = "not_indexed" | "pending" | "indexed" | "failed";
export const INDEX_STATUSES: readonly IndexStatus[] = ["not_indexed", "pending", "indexed", "failed"];

export type ReactionKind = "like" | "heart" | "laugh" | "cry" | "dislike";
export const REACTION_KINDS: readonly ReactionKind[] = ["like", "heart", "laugh", "cry", "dislike"];

/** A labelled region of an image, in pixels of the image as displayed. */
export interface BoundingBox {
  className: string;
  x: number;
  y: number;
  width: number;
  height: number;
  confidence?: number;
}

export interface Annotations {
  /** Class name -> number of instances. */
  classes: Record<string, number>;
  boxes: BoundingBox[];
}

export interface ImageStats {
  like: number;
  heart: number;
  laugh: number;
  cry: number;
  dislike: number;
  comments: number;
}

/** JSON object, as stored in `meta`. */
export type JsonObject = { [key: string]: unknown };

/** A catalogue image as stored. */
export interface ImageRecord {
  id: bigint;
  ownerId: string;
  sha256: string;
  fileName: string;
  mediaType: string;
  width: number;
  height: number;
  byteSize: number;
  blurhash: string;
  /** Unsigned 64-bit perceptual hash. */
  phash: bigint;
  tags: string[];
  nsfwLevel: NsfwLevel;
  postId: bigint | null;
  modelId: bigint | null;
  modelVersionId: bigint | null;
  username: string;
  meta: JsonObject | null;
  annotations: Annotations;
  visibility: Visibility;
  indexStatus: IndexStatus;
  indexError: string;
  stats: ImageStats;
  createdAt: Date;
  updatedAt: Date;
}

/** The fields a caller provides with an upload (after validation and normalisation). */
export interface NewImageFields {
  fileName: string;
  tags: string[];
  username: string;
  postId: bigint | null;
  modelId: bigint | null;
  modelVersionId: bigint | null;
  nsfwLevel: NsfwLevel;
  meta: JsonObject | null;
  annotations: Annotations;
  visibility: Visibility;
  index: boolean;
}

/** The fields UpdateImage may change. */
export type UpdatableField =
  | "fileName"
  | "tags"
  | "username"
  | "postId"
  | "modelId"
  | "modelVersionId"
  | "nsfwLevel"
  | "meta"
  | "annotations"
  | "visibility";

export interface Comment {
  id: bigint;
  imageId: bigint;
  accountId: string;
  username: string;
  text: string;
  createdAt: Date;
}

export type ImageSort = "newest" | "oldest" | "most_reactions" | "most_comments";
export type Period = "all" | "year" | "month" | "week" | "day";

/** Which images a listing (or a search) may return. Empty fields mean "any". */
export interface ImageFilter {
  includeTags: string[];
  excludeTags: string[];
  username: string | null;
  postId: bigint | null;
  modelId: bigint | null;
  modelVersionId: bigint | null;
  /** true: nsfw above none; false: none only. */
  nsfw: boolean | null;
  /** This level and below. */
  maxNsfwLevel: NsfwLevel | null;
  period: Period;
  visibility: Visibility | null;
  indexStatus: IndexStatus | null;
  className: string | null;
  metaEquals: Record<string, string>;
  metaKeys: string[];
}
