import type { BlobStore } from "../blobs/blob-store.js";
import type { Clock } from "../clock.js";
import { DomainError, notFound, Violations } from "../errors.js";
import type { Logger } from "../logging/logger.js";
import {
  lockContent,
  type ImagesRepository,
  type Tx,
} from "../store/images-repository.js";
import { contentSha256, type Analyse, type AnalyseLimits } from "./analyse.js";
import { releaseBlob } from "./orphan-sweep.js";
import type { SnowflakeGenerator } from "./snowflake.js";
import { tagTerms } from "./tags.js";
import type {
  Annotations,
  Caller,
  Comment,
  ImageRecord,
  ImageStats,
  ReactionKind,
  UpdatableField,
} from "./types.js";
import { checkBoxesInside, cleanImageFields, requestIdOf, type ImageFieldsInput } from "./validate.js";

/** An upload as the transport hands it over. */
export interface UploadInput extends ImageFieldsInput {
  content: Uint8Array;
  /**
   * The bytes come from glimpse itself (a generation that holds its credits), not a caller:
   * their decode waits for a slot rather than being refused when the decode queue is full.
   */
  internal?: boolean;
  /** Embed for search; default true. */
  index?: boolean;
  waitForIndex?: boolean;
  requestId?: string;
  /** Ends a wait for a decode slot or for indexing (the call was cancelled or its deadline passed). */
  signal?: AbortSignal;
}

/** The search side's hooks into uploads. */
export interface IndexingHooks {
  /** Throws FAILED_PRECONDITION (saying why) when images cannot be indexed now. */
  ensureAvailable(): void;
  /** New pending images exist. */
  notify(): void;
  /** Resolves once the image is indexed or failed; rejects when the signal aborts. */
  waitFor(imageId: bigint, signal?: AbortSignal): Promise<void>;
  /**
   * An image's searchable attributes changed, or it went (the change is committed and in
   * `index_log`): resolves once this replica's search index has applied it, so the caller's
   * next search sees the change.
   */
  changed?(): Promise<void>;
}

/** A stored image and whether the upload matched bytes the account already had. */
export interface UploadResult {
  image: ImageRecord;
  deduplicated: boolean;
}

/** What the catalogue service is built from. */
export interface CatalogueDeps {
  images: ImagesRepository;
  transaction: <T>(fn: (tx: Tx) => Promise<T>) => Promise<T>;
  blobs: BlobStore;
  clock: Clock;
  ids: SnowflakeGenerator;
  limits: AnalyseLimits;
  analyse: Analyse;
  /** Absent when the server runs without search: wait_for_index is then refused. */
  indexing?: IndexingHooks;
  /** Where failures to remove a blob after its last image went are reported (a sweep retries them). */
  logger?: Logger;
}

/** What an upload of bytes already stored still decides: who, the boxes, indexing, idempotency. */
interface RepeatUpload {
  caller: Caller;
  content: Uint8Array;
  annotations: Annotations;
  /**
   * `index` was explicitly true: an image stored without indexing (or whose indexing failed)
   * is queued now. Left unset, a repeat returns the image as stored, so bytes kept out of
   * search stay out unless a caller asks otherwise.
   */
  reindex: boolean;
  requestId: string | null;
}

const COMMENT_MAX = 2000;
const COMMENT_PAGE_DEFAULT = 50;

/** What each updatable field becomes when the mask names it but the request leaves it unset. */
const CLEARED: Record<UpdatableField, unknown> = {
  fileName: "",
  tags: [],
  username: "",
  postId: null,
  modelId: null,
  modelVersionId: null,
  nsfwLevel: "none",
  meta: null,
  annotations: { classes: {}, boxes: [] },
  visibility: "private",
};

/** Upload, read, change and delete catalogue images, their reactions and comments. */
export class CatalogueService {
  constructor(private readonly deps: CatalogueDeps) {}

  /**
   * Stores an image: validates every field, hashes the bytes, answers bytes the account
   * already uploaded with the existing image (no decode), otherwise analyses them (format,
   * size, bomb check, hashes; the decode waits for a slot in the decode pool) and in one
   * transaction stores the blob and the row. Anything invalid stores nothing.
   */
  async upload(caller: Caller, input: UploadInput): Promise<UploadResult> {
    const result = await this.store(caller, input);
    const indexing = this.deps.indexing;
    if (!indexing || result.image.indexStatus !== "pending") return result;
    indexing.notify();
    if (!input.waitForIndex) return result;
    await indexing.waitFor(result.image.id, input.signal).catch((err) => {
      if (input.signal?.aborted) {
        throw new DomainError("DEADLINE_EXCEEDED", `image ${result.image.id} is stored but was not indexed in time`, {
          cause: err,
        });
      }
      throw err;
    });
    return { ...result, image: await this.get(caller, result.image.id) };
  }

  private async store(caller: Caller, input: UploadInput): Promise<UploadResult> {
    const { images, transaction, blobs, clock, ids } = this.deps;
    const v = new Violations();
    const fields = cleanImageFields(input, "", v);
    const requestId = requestIdOf(input.requestId ?? "", "request_id", v);
    v.check(input.content.length > 0, "content", "is required: the image file's bytes");
    v.throwIfAny();
    const index = input.index ?? true;
    if (index && input.waitForIndex) {
      if (!this.deps.indexing) {
        throw new DomainError("FAILED_PRECONDITION", "wait_for_index needs semantic indexing, which this server does not run");
      }
      // Refused before anything is stored.
      this.deps.indexing.ensureAvailable();
    }

    if (requestId) {
      const earlier = await images.findUploadRequest(caller.accountId, requestId);
      if (earlier) return this.replay(caller, earlier);
    }

    const sha256 = contentSha256(input.content);
    const annotations = fields.annotations ?? { classes: {}, boxes: [] };
    const again: RepeatUpload = { caller, content: input.content, annotations, reindex: input.index === true, requestId };
    // Bytes this account already stored cost one indexed lookup instead of a decode (seconds
    // of CPU for a large PNG). Over-size bytes go on to analysis, which refuses them.
    if (input.content.length <= this.deps.limits.maxBytes && (await images.findByContent(caller.accountId, sha256))) {
      const found = await transaction(async (tx) => {
        if (requestId) {
          await images.lockRequest(caller.accountId, requestId, tx);
          const earlier = await images.findUploadRequest(caller.accountId, requestId, tx);
          if (earlier) return this.replay(caller, earlier, tx);
        }
        await lockContent(sha256, tx);
        const existing = await images.findByContent(caller.accountId, sha256, tx);
        // Deleted meanwhile: store the bytes anew below.
        return existing && this.uploadedAgain(existing, again, tx);
      });
      if (found) return found;
    }

    const facts = await this.deps.analyse(input.content, this.deps.limits, "content", {
      signal: input.signal,
      sha256,
      queueAlways: input.internal,
    });
    checkBoxesInside(annotations, facts.width, facts.height, "annotations", v);
    v.throwIfAny();

    let wroteBlob = false;
    try {
      return await transaction(async (tx) => {
        if (requestId) {
          await images.lockRequest(caller.accountId, requestId, tx);
          const earlier = await images.findUploadRequest(caller.accountId, requestId, tx);
          if (earlier) return this.replay(caller, earlier, tx);
        }
        // Held until commit: a blob stored here cannot be released before its row is visible.
        await lockContent(facts.sha256, tx);
        const existing = await images.findByContent(caller.accountId, facts.sha256, tx);
        if (existing) return this.uploadedAgain(existing, again, tx);
        if (!(await blobs.has(facts.sha256))) {
          await blobs.put(input.content, facts.sha256);
          wroteBlob = true;
        }
        const now = clock.now();
        const tags = fields.tags ?? [];
        const image = await images.insert(
          {
            id: ids.next(),
            ownerId: caller.accountId,
            sha256: facts.sha256,
            fileName: fields.fileName ?? "",
            mediaType: facts.mediaType,
            width: facts.width,
            height: facts.height,
            byteSize: facts.byteSize,
            blurhash: facts.blurhash,
            phash: facts.phash,
            tags,
            nsfwLevel: fields.nsfwLevel ?? "none",
            postId: fields.postId ?? null,
            modelId: fields.modelId ?? null,
            modelVersionId: fields.modelVersionId ?? null,
            username: fields.username ?? "",
            meta: fields.meta ?? null,
            annotations,
            visibility: fields.visibility ?? "private",
            indexStatus: index ? "pending" : "not_indexed",
            createdAt: now,
          },
          tagTerms(tags),
          tx,
        );
        if (requestId) await images.recordUploadRequest(caller.accountId, requestId, image.id, false, tx);
        return { image, deduplicated: false };
      });
    } catch (err) {
      // The row never committed: a blob this call created must not outlive it, unless an
      // upload of the same bytes has referenced it since (releaseBlob checks under the lock).
      if (wroteBlob) await this.release(facts.sha256);
      throw err;
    }
  }

  /**
   * The answer to bytes the account already stored: the existing image as stored, or queued
   * for indexing when it was stored without (or failed) and `index` is explicitly true now. Runs under the
   * content lock. Annotations are still checked, so a bad box fails as it would on a first
   * upload; bytes lost by an earlier fault are written back.
   */
  private async uploadedAgain(existing: ImageRecord, again: RepeatUpload, tx: Tx): Promise<UploadResult> {
    const { images, blobs } = this.deps;
    const v = new Violations();
    checkBoxesInside(again.annotations, existing.width, existing.height, "annotations", v);
    v.throwIfAny();
    if (!(await blobs.has(existing.sha256))) await blobs.put(again.content, existing.sha256);
    if (again.requestId) await images.recordUploadRequest(again.caller.accountId, again.requestId, existing.id, true, tx);
    if (again.reindex && (existing.indexStatus === "not_indexed" || existing.indexStatus === "failed")) {
      return { image: await images.markPending(existing.id, tx), deduplicated: true };
    }
    return { image: existing, deduplicated: true };
  }

  /** Removes a blob no image references any more; a failure is left to the orphan sweep. */
  private async release(sha256: string): Promise<void> {
    await releaseBlob(this.deps, sha256).catch((error) =>
      this.deps.logger?.warn("removing an unreferenced blob failed; the orphan sweep will retry", { error }),
    );
  }

  private async replay(caller: Caller, earlier: { imageId: bigint; deduplicated: boolean }, tx?: Tx) {
    const image = await this.deps.images.get(earlier.imageId, caller, tx);
    if (!image) throw notFound("image", earlier.imageId);
    return { image, deduplicated: earlier.deduplicated };
  }

  /** The image, if the caller may read it; NOT_FOUND otherwise (existence is not revealed). */
  async get(caller: Caller, id: bigint): Promise<ImageRecord> {
    const image = await this.deps.images.get(id, caller);
    if (!image) throw notFound("image", id);
    return image;
  }

  /** The image with its bytes. */
  async getWithContent(caller: Caller, id: bigint): Promise<{ image: ImageRecord; content: Buffer }> {
    const image = await this.get(caller, id);
    return { image, content: await this.deps.blobs.get(image.sha256) };
  }

  /** Loads an image the caller may change: NOT_FOUND if unreadable, PERMISSION_DENIED if only readable. */
  private async writable(caller: Caller, id: bigint, tx: Tx): Promise<ImageRecord> {
    const image = await this.deps.images.get(id, caller, tx);
    if (!image) throw notFound("image", id);
    if (!caller.isAdmin && image.ownerId !== caller.accountId) {
      throw new DomainError("PERMISSION_DENIED", `image ${id} belongs to another account`);
    }
    return image;
  }

  /** Changes the fields named in `mask` (already mapped to domain names) to the values in `input`. */
  async update(caller: Caller, id: bigint, mask: UpdatableField[], input: ImageFieldsInput): Promise<ImageRecord> {
    const v = new Violations();
    const cleaned = cleanImageFields(input, "image.", v);
    v.throwIfAny();
    // A field named in the mask but absent from the input is cleared to its empty value.
    const changes: Partial<Pick<ImageRecord, UpdatableField>> = Object.fromEntries(
      mask.map((field) => [field, cleaned[field] ?? CLEARED[field]]),
    );
    return this.deps.transaction(async (tx) => {
      const image = await this.writable(caller, id, tx);
      if (changes.annotations) {
        checkBoxesInside(changes.annotations, image.width, image.height, "image.annotations", v);
        v.throwIfAny();
      }
      const terms = changes.tags ? tagTerms(changes.tags) : undefined;
      const updated = await this.deps.images.update(id, changes, terms, this.deps.clock.now(), tx);
      if (!updated) throw notFound("image", id);
      return updated;
    }).then(async (updated) => {
      await this.indexChanged();
      return updated;
    });
  }

  /** Waits for the search index to apply a committed change; its failure fails no write. */
  private async indexChanged(): Promise<void> {
    await this.deps.indexing?.changed?.().catch((error) => this.deps.logger?.error("search index catch-up failed", { error }));
  }

  /**
   * Deletes an image with its reactions and comments; its blob goes with the last reference.
   * The row goes first and commits; only then is the blob removed, if no image references it
   * any more. A crash in between leaves an orphan file for the sweep, never an image whose
   * bytes are gone.
   */
  async delete(caller: Caller, id: bigint): Promise<void> {
    const { images } = this.deps;
    const sha256 = await this.deps.transaction(async (tx) => {
      const image = await this.writable(caller, id, tx);
      // Orders the delete with an upload of the same bytes that may be answering with this row.
      await lockContent(image.sha256, tx);
      await images.delete(id, tx);
      return image.sha256;
    });
    await this.indexChanged();
    await this.release(sha256);
  }

  /** Adds or removes the caller's reaction of one kind; counts stay exact under concurrency. */
  async react(
    caller: Caller,
    imageId: bigint,
    kind: ReactionKind,
    add: boolean,
  ): Promise<{ stats: ImageStats; changed: boolean }> {
    const { images, clock } = this.deps;
    return this.deps.transaction(async (tx) => {
      if (!(await images.get(imageId, caller, tx))) throw notFound("image", imageId);
      const changed = await images.react(imageId, caller.accountId, kind, add, clock.now(), tx);
      const after = await images.get(imageId, caller, tx);
      return { stats: after!.stats, changed };
    });
  }

  /** Adds a comment (idempotent per request id) and keeps the image's comment count in step. */
  async addComment(caller: Caller, imageId: bigint, text: string, requestIdText = ""): Promise<Comment> {
    const { images, clock, ids } = this.deps;
    const v = new Violations();
    const body = text.trim();
    v.check(body.length >= 1, "text", "is required: 1..2000 characters");
    v.check(body.length <= COMMENT_MAX, "text", `must be at most ${COMMENT_MAX} characters, got ${body.length}`);
    const requestId = requestIdOf(requestIdText, "request_id", v);
    v.throwIfAny();
    return this.deps.transaction(async (tx) => {
      if (!(await images.get(imageId, caller, tx))) throw notFound("image", imageId);
      if (requestId) {
        await images.lockRequest(caller.accountId, requestId, tx);
        const earlier = await images.findCommentRequest(caller.accountId, requestId, tx);
        if (earlier) return earlier;
      }
      const username = await images.accountUsername(caller.accountId, tx);
      const comment: Comment = {
        id: ids.next(),
        imageId,
        accountId: caller.accountId,
        username,
        text: body,
        createdAt: clock.now(),
      };
      await images.addComment(comment, requestId, tx);
      return comment;
    });
  }

  /**
   * A page of an image's comments, oldest first, after comment id `after`; `next` is the id to
   * continue after, undefined on the last page.
   */
  async listComments(
    caller: Caller,
    imageId: bigint,
    after: bigint,
    pageSize: number,
  ): Promise<{ comments: Comment[]; next: bigint | undefined }> {
    const v = new Violations();
    v.check(pageSize >= 0 && pageSize <= 200, "page_size", "must be between 0 and 200");
    v.throwIfAny();
    if (!(await this.deps.images.get(imageId, caller))) throw notFound("image", imageId);
    const size = pageSize === 0 ? COMMENT_PAGE_DEFAULT : pageSize;
    const rows = await this.deps.images.listComments(imageId, after, size + 1);
    const comments = rows.slice(0, size);
    return { comments, next: rows.length > size ? comments[comments.length - 1].id : undefined };
  }
}
