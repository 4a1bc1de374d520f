import type { Clock } from "../clock.js";
import { invalidArgument, Violations } from "../errors.js";
import { rankColumn, type ImagesRepository, type Keyset } from "../store/images-repository.js";
import { decodePageToken, encodePageToken, queryFingerprint } from "./page-token.js";
import { MAX_FILTER_TAGS, normaliseTags, parseTagExpression } from "./tags.js";
import type { Caller, ImageFilter, ImageRecord, ImageSort, IndexStatus, NsfwLevel, Period, Visibility } from "./types.js";
import { isInt64Digits, positiveId } from "./validate.js";

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 200;
/** Largest page number: the next one must still fit an int32. */
const MAX_PAGE = 2 ** 31 - 2;
/** Largest offset: its page number (offset / page size + 1) must fit an int32 too. */
const MAX_OFFSET = 2 ** 31 - 2;

/** A filter as callers give it, before validation. */
export interface ImageFilterInput {
  tags?: string[];
  excludeTags?: string[];
  tagsQuery?: string;
  username?: string;
  postId?: bigint | null;
  modelId?: bigint | null;
  modelVersionId?: bigint | null;
  nsfw?: boolean | null;
  nsfwLevel?: NsfwLevel | null;
  period?: Period;
  visibility?: Visibility | null;
  indexStatus?: IndexStatus | null;
  className?: string;
  metaEquals?: Record<string, string>;
  metaKeys?: string[];
}

/**
 * Validates and normalises a filter; problems are recorded under `prefix` + the field name.
 * Shared by listing and search, so both accept exactly the same filters.
 */
export function parseFilter(input: ImageFilterInput, v: Violations, prefix = "filter."): ImageFilter {
  const include = normaliseTags(input.tags ?? [], `${prefix}tags`, v, MAX_FILTER_TAGS);
  const exclude = normaliseTags(input.excludeTags ?? [], `${prefix}exclude_tags`, v, MAX_FILTER_TAGS);
  const expression = parseTagExpression(input.tagsQuery ?? "", `${prefix}tags_query`, v);
  const nsfw = input.nsfw ?? null;
  const maxNsfwLevel = input.nsfwLevel ?? null;
  v.check(
    nsfw === null || maxNsfwLevel === null,
    `${prefix}nsfw`,
    "give either nsfw (true/false) or nsfw_level, not both",
  );
  const metaEquals = input.metaEquals ?? {};
  const metaKeys = input.metaKeys ?? [];
  v.check(Object.keys(metaEquals).length <= 10, `${prefix}meta_equals`, "at most 10 entries");
  v.check(metaKeys.length <= 10, `${prefix}meta_keys`, "at most 10 keys");
  const username = (input.username ?? "").trim();
  const className = (input.className ?? "").trim();
  return {
    includeTags: [...new Set([...include, ...expression.include])],
    excludeTags: [...new Set([...exclude, ...expression.exclude])],
    username: username === "" ? null : username,
    postId: positiveId(input.postId, `${prefix}post_id`, v),
    modelId: positiveId(input.modelId, `${prefix}model_id`, v),
    modelVersionId: positiveId(input.modelVersionId, `${prefix}model_version_id`, v),
    nsfw,
    maxNsfwLevel,
    period: input.period ?? "all",
    visibility: input.visibility ?? null,
    indexStatus: input.indexStatus ?? null,
    className: className === "" ? null : className,
    metaEquals,
    metaKeys,
  };
}

/** A ListImages request in domain terms. Zero means unset for the numeric paging fields. */
export interface ListInput {
  filter: ImageFilterInput;
  sort: ImageSort;
  pageSize: number;
  limit: number;
  pageToken: string;
  cursor: string;
  page: number;
  zeroBasedPage: number;
  offset: number;
  includeTotal: boolean;
}

/** How the request chose its starting point; the next-page link pages the same way. */
export type PagingForm = "first" | "token" | "cursor" | "page" | "zero_based_page" | "offset";

export interface ListPage {
  images: ImageRecord[];
  /** Keyset token continuing after this page; empty on the last page. */
  nextPageToken: string;
  /** 1-based number of this page. */
  currentPage: number;
  pageSize: number;
  /** Offset of the image after this page (for offset walks). */
  nextOffset: number;
  form: PagingForm;
  total: number | undefined;
  /** Id of the first image of the next page; undefined on the last page. */
  nextImageId: bigint | undefined;
}

/** ListImages: every filter, sort and paging form of the catalogue. */
export class ListingService {
  constructor(
    private readonly images: ImagesRepository,
    private readonly clock: Clock,
  ) {}

  async list(caller: Caller, input: ListInput): Promise<ListPage> {
    const v = new Violations();
    const filter = parseFilter(input.filter, v);
    const pageSize = this.pageSize(input, v);
    for (const [field, value] of [
      ["page", input.page],
      ["zero_based_page", input.zeroBasedPage],
      ["offset", input.offset],
    ] as const) {
      v.check(value >= 0, field, "must be >= 0");
    }
    // The page numbers answered (this one and the next) must fit the contract's int32.
    v.check(input.page <= MAX_PAGE, "page", `must be at most ${MAX_PAGE}`);
    v.check(input.zeroBasedPage < MAX_PAGE - 1, "zero_based_page", `must be less than ${MAX_PAGE - 1}`);
    v.check(input.offset <= MAX_OFFSET, "offset", `must be at most ${MAX_OFFSET}`);
    if (input.pageToken !== "" && input.cursor !== "" && input.pageToken !== input.cursor) {
      v.add("cursor", "is an alias of page_token: give one of them");
    }
    const tokenText = input.pageToken || input.cursor;
    const forms: PagingForm[] = [];
    if (tokenText !== "") forms.push(input.pageToken !== "" ? "token" : "cursor");
    if (input.page > 0) forms.push("page");
    if (input.zeroBasedPage > 0) forms.push("zero_based_page");
    if (input.offset > 0) forms.push("offset");
    if (forms.length > 1) {
      v.add(forms[1] === "cursor" ? "cursor" : forms[1], `give only one of page_token, cursor, page, zero_based_page and offset (got ${forms.join(" and ")})`);
    }
    v.throwIfAny();

    const fingerprint = queryFingerprint(filter, input.sort);
    const form = forms[0] ?? "first";
    let now = this.clock.now();
    let after: Keyset | undefined;
    let offset = 0;
    let currentPage = 1;
    let rankedAsOf: Date | undefined;
    if (form === "cursor" && /^\d+$/.test(tokenText)) {
      // A plain image id: start at that image, wherever the sort puts it.
      const start = isInt64Digits(tokenText) ? await this.images.get(BigInt(tokenText), caller) : undefined;
      if (!start) throw invalidArgument({ field: "cursor", description: `no image with id ${tokenText} to start at` });
      const rank = rankColumn(input.sort);
      after = {
        rank: rank === "reaction_count" ? totalReactions(start) : rank === "comment_count" ? start.stats.comments : null,
        // The seek is strictly after `after`: step one id past the start image.
        id: input.sort === "oldest" ? start.id - 1n : start.id + 1n,
      };
    } else if (form === "token" || form === "cursor") {
      const token = decodePageToken(tokenText, form === "token" ? "page_token" : "cursor", fingerprint);
      now = token.startedAt;
      after = token.after;
      currentPage = token.page;
      if (rankColumn(input.sort) !== null) rankedAsOf = token.startedAt;
    } else if (form === "page") {
      offset = (input.page - 1) * pageSize;
      currentPage = input.page;
    } else if (form === "zero_based_page") {
      offset = input.zeroBasedPage * pageSize;
      currentPage = input.zeroBasedPage + 1;
    } else if (form === "offset") {
      offset = input.offset;
      currentPage = Math.floor(offset / pageSize) + 1;
    }

    const rows = await this.images.list({
      filter,
      caller,
      sort: input.sort,
      now,
      limit: pageSize + 1,
      after,
      offset,
      rankedAsOf,
    });
    const more = rows.length > pageSize;
    const images = more ? rows.slice(0, pageSize) : rows;
    let nextPageToken = "";
    if (more) {
      const last = images[images.length - 1];
      const rank = rankColumn(input.sort);
      nextPageToken = encodePageToken({
        query: fingerprint,
        after: {
          rank: rank === "reaction_count" ? totalReactions(last) : rank === "comment_count" ? last.stats.comments : null,
          id: last.id,
        },
        startedAt: now,
        page: currentPage + 1,
      });
    }
    const total = input.includeTotal ? await this.images.count(filter, caller, now) : undefined;
    const nextImageId = more ? rows[pageSize].id : undefined;
    return { images, nextPageToken, currentPage, pageSize, nextOffset: offset + images.length, form, total, nextImageId };
  }

  private pageSize(input: ListInput, v: Violations): number {
    for (const [field, value] of [
      ["page_size", input.pageSize],
      ["limit", input.limit],
    ] as const) {
      v.check(value >= 0 && value <= MAX_PAGE_SIZE, field, `must be between 0 and ${MAX_PAGE_SIZE}, got ${value}`);
    }
    if (input.pageSize > 0 && input.limit > 0 && input.pageSize !== input.limit) {
      v.add("limit", "is an alias of page_size: give one of them, or the same value");
    }
    const size = input.pageSize || input.limit;
    return size > 0 && size <= MAX_PAGE_SIZE ? size : DEFAULT_PAGE_SIZE;
  }
}

/** The MOST_REACTIONS rank of an image: all five reaction kinds together. */
export function totalReactions(image: ImageRecord): number {
  const s = image.stats;
  return s.like + s.heart + s.laugh + s.cry + s.dislike;
}
