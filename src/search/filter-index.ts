import roaring from "roaring";
import type { Caller, ImageFilter } from "../catalogue/types.js";
import { NSFW_LEVELS } from "../catalogue/types.js";
import { periodStart } from "../store/images-repository.js";
import type { ImageAttributes } from "../store/embeddings-repository.js";

const { RoaringBitmap32 } = roaring;
type Bitmap = roaring.RoaringBitmap32;

/**
 * The filter conditions this index cannot answer; a filter using any of them goes through
 * PostgreSQL (`EmbeddingsRepository.candidateIds`). Meta is free-form JSON, so neither its
 * equality tests nor its key tests are held in memory.
 */
export const DATABASE_ONLY_FILTERS = ["metaEquals", "metaKeys"] as const;

/** True when PostgreSQL must say which images pass `filter` (see DATABASE_ONLY_FILTERS). */
export function needsDatabase(filter: ImageFilter): boolean {
  return Object.keys(filter.metaEquals).length > 0 || filter.metaKeys.length > 0;
}

/** The longest `deserialize` runs before letting other work on the event loop. */
const LOAD_SLICE_MS = 10;

/** Most accounts whose readable set is kept between changes. */
const READABLE_CACHED = 1024;

/** True when the filter keeps every image the caller may read (index status and meta aside). */
export function isUnrestricted(f: ImageFilter): boolean {
  return (
    f.includeTags.length === 0 &&
    f.excludeTags.length === 0 &&
    f.username === null &&
    f.postId === null &&
    f.modelId === null &&
    f.modelVersionId === null &&
    f.nsfw === null &&
    f.maxNsfwLevel === null &&
    f.period === "all" &&
    f.visibility === null &&
    f.className === null
  );
}

const FLAG_PRESENT = 1;
const FLAG_PUBLIC = 2;
const FLAG_INDEXED = 4;
const NONE = -1;

/** The prefixes that keep the kinds of value apart in the one dictionary. */
const OWNER = "o:";
const TAG = "t:";
const USER = "u:";
const POST = "p:";
const MODEL = "m:";
const VERSION = "v:";
const CLASS = "c:";
/** Tags as shown in results (dictionary only: filters use the tag terms). */
const SHOWN_TAG = "g:";

/** The snapshot form: the dictionary and the columns, from which the bitmaps are rebuilt. */
interface SavedHeader {
  format: 1;
  slots: number;
  words: string[];
  /** File names per slot. */
  names: string[];
  arrays: { name: string; bytes: number }[];
}

/**
 * The search filter index (the role of Qdrant's payload index): per slot of the vector
 * index, the attributes searches filter on, as compact columns (owner, username, post, model
 * and version as dictionary codes; NSFW level; created time; flags) and, per value, a roaring
 * bitmap of the slots holding it (owners, tag terms, usernames, ids, class names, NSFW
 * levels, public, indexed). Readability is `public ∪ owner[caller]`, everything for admins.
 *
 * Derived state like the graph: fed by `index_log` through the IndexKeeper, saved in the
 * same snapshot, rebuilt from the tables when there is none. Single-threaded.
 */
export class FilterIndex {
  private readonly codes = new Map<string, number>();
  private words: string[] = [];
  private readonly postings = new Map<number, Bitmap>();
  private readonly present = new RoaringBitmap32();
  private readonly publicSlots = new RoaringBitmap32();
  private readonly indexedSlots = new RoaringBitmap32();
  private readonly nsfwSlots: Bitmap[] = NSFW_LEVELS.map(() => new RoaringBitmap32());

  private flags = new Uint8Array(0);
  private nsfw = new Uint8Array(0);
  private created = new Float64Array(0);
  private owner = new Int32Array(0);
  private username = new Int32Array(0);
  private post = new Int32Array(0);
  private model = new Int32Array(0);
  private version = new Int32Array(0);
  /** Per slot: codes of tag terms and class names (several each). */
  // Plain arrays of small integers: a third of a typed array's per-object cost in V8.
  private multi: (number[] | undefined)[] = [];
  /** Per slot, for results only: the file name, and the tags in order as codes (no postings). */
  private names: string[] = [];
  private tagCodes: (number[] | undefined)[] = [];
  /**
   * Per account, the indexed images it may read (public ones and its own): what an unfiltered
   * search of an ordinary key asks for. Emptied by any change, at most READABLE_CACHED entries.
   */
  private readonly readableCache = new Map<string, Bitmap>();

  /** Images held. */
  get size(): number {
    return this.present.size;
  }

  /** Sets (or replaces) the attributes of the image in `slot`. */
  set(slot: number, a: ImageAttributes): void {
    if (this.flags[slot] & FLAG_PRESENT) this.clear(slot);
    this.readableCache.clear();
    this.reserve(slot + 1);
    this.flags[slot] = FLAG_PRESENT | (a.isPublic ? FLAG_PUBLIC : 0) | (a.indexed ? FLAG_INDEXED : 0);
    this.present.add(slot);
    if (a.isPublic) this.publicSlots.add(slot);
    if (a.indexed) this.indexedSlots.add(slot);
    const level = Math.min(Math.max(a.nsfwLevel, 0), NSFW_LEVELS.length - 1);
    this.nsfw[slot] = level;
    this.nsfwSlots[level].add(slot);
    this.created[slot] = a.createdMs;
    this.owner[slot] = this.post1(slot, OWNER + a.ownerId);
    // lower(username) = lower(x) and username <> '': an empty username matches nothing.
    this.username[slot] = a.username === "" ? NONE : this.post1(slot, USER + a.username.toLowerCase());
    this.post[slot] = a.postId === null ? NONE : this.post1(slot, POST + a.postId);
    this.model[slot] = a.modelId === null ? NONE : this.post1(slot, MODEL + a.modelId);
    this.version[slot] = a.modelVersionId === null ? NONE : this.post1(slot, VERSION + a.modelVersionId);
    const many = [...new Set([...a.tagTerms.map((t) => TAG + t), ...a.classNames.map((c) => CLASS + c)])];
    this.multi[slot] = many.length === 0 ? undefined : many.map((key) => this.post1(slot, key));
    this.names[slot] = a.fileName;
    this.tagCodes[slot] = a.tags.length === 0 ? undefined : a.tags.map((tag) => this.code(SHOWN_TAG + tag));
  }

  /** Forgets the image in `slot`. */
  clear(slot: number): void {
    if (!(this.flags[slot] & FLAG_PRESENT)) return;
    this.readableCache.clear();
    this.present.remove(slot);
    this.publicSlots.remove(slot);
    this.indexedSlots.remove(slot);
    this.nsfwSlots[this.nsfw[slot]].remove(slot);
    for (const code of [this.owner[slot], this.username[slot], this.post[slot], this.model[slot], this.version[slot]]) {
      if (code !== NONE) this.unpost(slot, code);
    }
    for (const code of this.multi[slot] ?? []) this.unpost(slot, code);
    this.multi[slot] = undefined;
    this.names[slot] = "";
    this.tagCodes[slot] = undefined;
    this.flags[slot] = 0;
  }

  /** When the image in `slot` was created (ms since the epoch); NaN when none is held. */
  createdAt(slot: number): number {
    return this.flags[slot] & FLAG_PRESENT ? this.created[slot] : NaN;
  }

  /** The owner of the image in `slot`; undefined when none is held. */
  ownerOf(slot: number): string | undefined {
    return this.flags[slot] & FLAG_PRESENT ? this.words[this.owner[slot]].slice(OWNER.length) : undefined;
  }

  /** The file name of the image in `slot`. */
  nameOf(slot: number): string {
    return this.names[slot] ?? "";
  }

  /** The tags of the image in `slot`, in their stored order. */
  tagsOf(slot: number): string[] {
    return (this.tagCodes[slot] ?? []).map((code) => this.words[code].slice(SHOWN_TAG.length));
  }

  /** Whether the caller may read the image in `slot`. */
  readable(slot: number, caller: Caller): boolean {
    const f = this.flags[slot];
    if (!(f & FLAG_PRESENT)) return false;
    return caller.isAdmin || (f & FLAG_PUBLIC) !== 0 || this.words[this.owner[slot]] === OWNER + caller.accountId;
  }

  /**
   * The slots of the indexed images the caller may read that pass `filter`, as PostgreSQL's
   * `filterConditions(...) and index_status = indexed` would select them. The filter must not
   * need the database (`needsDatabase`). The bitmap may be one the index keeps (an unfiltered
   * search's): read it, never change it.
   */
  candidates(filter: ImageFilter, caller: Caller, now: Date): Bitmap {
    if (filter.indexStatus !== null && filter.indexStatus !== "indexed") return new RoaringBitmap32();
    const base = caller.isAdmin ? this.indexedSlots : this.readableBy(caller.accountId);
    if (isUnrestricted(filter)) return base;
    const out = base.clone();
    if (filter.visibility === "public") out.andInPlace(this.publicSlots);
    if (filter.visibility === "private") out.andNotInPlace(this.publicSlots);
    const must = (key: string) => out.andInPlace(this.postings.get(this.codes.get(key) ?? NONE) ?? new RoaringBitmap32());
    for (const tag of filter.includeTags) must(TAG + tag);
    for (const tag of filter.excludeTags) {
      const slots = this.postings.get(this.codes.get(TAG + tag) ?? NONE);
      if (slots) out.andNotInPlace(slots);
    }
    if (filter.username !== null) must(USER + filter.username.toLowerCase());
    if (filter.postId !== null) must(POST + filter.postId);
    if (filter.modelId !== null) must(MODEL + filter.modelId);
    if (filter.modelVersionId !== null) must(VERSION + filter.modelVersionId);
    if (filter.className !== null) must(CLASS + filter.className);
    if (filter.nsfw === true) out.andNotInPlace(this.nsfwSlots[0]);
    if (filter.nsfw === false) out.andInPlace(this.nsfwSlots[0]);
    if (filter.maxNsfwLevel !== null) {
      const max = NSFW_LEVELS.indexOf(filter.maxNsfwLevel);
      out.andInPlace(RoaringBitmap32.orMany(this.nsfwSlots.slice(0, max + 1)));
    }
    const since = periodStart(filter.period, now);
    if (since !== null && !out.isEmpty) {
      const from = since.getTime();
      const slots = out.toUint32Array();
      const keep = new Uint32Array(slots.length);
      let n = 0;
      for (const slot of slots) if (this.created[slot] >= from) keep[n++] = slot;
      return new RoaringBitmap32(keep.subarray(0, n));
    }
    return out;
  }

  /** The indexed images an ordinary account may read: public ones and its own (kept until a change). */
  private readableBy(accountId: string): Bitmap {
    let readable = this.readableCache.get(accountId);
    if (readable === undefined) {
      const own = this.postings.get(this.codes.get(OWNER + accountId) ?? NONE);
      readable = RoaringBitmap32.and(this.indexedSlots, own ? RoaringBitmap32.or(this.publicSlots, own) : this.publicSlots);
      if (this.readableCache.size >= READABLE_CACHED) this.readableCache.clear();
      this.readableCache.set(accountId, readable);
    }
    return readable;
  }

  /** Bytes held: columns, dictionary text and bitmaps (for reports). */
  memoryBytes(): number {
    let bytes =
      this.flags.byteLength +
      this.nsfw.byteLength +
      this.created.byteLength +
      4 * 5 * this.owner.length +
      8 * this.multi.length;
    for (const m of this.multi) if (m) bytes += 4 * m.length + 32;
    for (const m of this.tagCodes) if (m) bytes += 4 * m.length + 32;
    for (const n of this.names) bytes += 2 * (n?.length ?? 0) + 16;
    for (const w of this.words) bytes += 2 * w.length + 16;
    const bitmaps = [this.present, this.publicSlots, this.indexedSlots, ...this.nsfwSlots, ...this.postings.values()];
    for (const b of bitmaps) bytes += b.getSerializationSizeInBytes("croaring") + 48;
    return bytes;
  }

  /** The snapshot form: a JSON header (dictionary, array sizes) and the columns. */
  serialize(slots: number): Buffer {
    const offsets = new Uint32Array(slots + 1);
    const flat: number[] = [];
    const tagOffsets = new Uint32Array(slots + 1);
    const tagFlat: number[] = [];
    for (let slot = 0; slot < slots; slot++) {
      for (const code of this.multi[slot] ?? []) flat.push(code);
      offsets[slot + 1] = flat.length;
      for (const code of this.tagCodes[slot] ?? []) tagFlat.push(code);
      tagOffsets[slot + 1] = tagFlat.length;
    }
    this.reserve(slots);
    const arrays: [string, ArrayBufferView][] = [
      ["flags", this.flags.subarray(0, slots)],
      ["nsfw", this.nsfw.subarray(0, slots)],
      ["created", this.created.subarray(0, slots)],
      ["owner", this.owner.subarray(0, slots)],
      ["username", this.username.subarray(0, slots)],
      ["post", this.post.subarray(0, slots)],
      ["model", this.model.subarray(0, slots)],
      ["version", this.version.subarray(0, slots)],
      ["offsets", offsets],
      ["multi", Uint32Array.from(flat)],
      ["tagOffsets", tagOffsets],
      ["tags", Uint32Array.from(tagFlat)],
    ];
    const header: SavedHeader = {
      format: 1,
      slots,
      words: this.words,
      names: Array.from({ length: slots }, (_, slot) => this.names[slot] ?? ""),
      arrays: arrays.map(([name, a]) => ({ name, bytes: a.byteLength })),
    };
    const json = Buffer.from(JSON.stringify(header));
    const length = Buffer.alloc(4);
    length.writeUInt32LE(json.length);
    // Each array starts on an 8-byte boundary so it can be viewed in place when loaded.
    const parts: Buffer[] = [length, json];
    let at = 4 + json.length;
    for (const [, a] of arrays) {
      const pad = (8 - (at % 8)) % 8;
      parts.push(Buffer.alloc(pad), Buffer.from(a.buffer, a.byteOffset, a.byteLength));
      at += pad + a.byteLength;
    }
    return Buffer.concat(parts);
  }

  /**
   * Reads `serialize`'s form; throws on anything malformed (the caller rebuilds). Hands the
   * event loop back every LOAD_SLICE_MS while it rebuilds the postings (a few hundred ms at
   * 100k images), so a restart does not stall health checks.
   */
  static async deserialize(bytes: Buffer, slots: number): Promise<FilterIndex> {
    const copy = new Uint8Array(bytes.length);
    copy.set(bytes);
    const jsonLength = new DataView(copy.buffer).getUint32(0, true);
    const header = JSON.parse(Buffer.from(copy.buffer, 4, jsonLength).toString("utf8")) as SavedHeader;
    if (header.format !== 1 || header.slots !== slots) throw new Error("filter index does not match the snapshot");
    const views = new Map<string, ArrayBuffer>();
    let at = 4 + jsonLength;
    for (const { name, bytes: length } of header.arrays) {
      at += (8 - (at % 8)) % 8;
      if (at + length > copy.length) throw new Error("filter index is truncated");
      views.set(name, copy.buffer.slice(at, at + length));
      at += length;
    }
    const get = (name: string) => {
      const buffer = views.get(name);
      if (!buffer) throw new Error(`filter index lacks ${name}`);
      return buffer;
    };
    const index = new FilterIndex();
    index.words = header.words;
    header.words.forEach((w, code) => index.codes.set(w, code));
    index.flags = new Uint8Array(get("flags"));
    index.nsfw = new Uint8Array(get("nsfw"));
    index.created = new Float64Array(get("created"));
    index.owner = new Int32Array(get("owner"));
    index.username = new Int32Array(get("username"));
    index.post = new Int32Array(get("post"));
    index.model = new Int32Array(get("model"));
    index.version = new Int32Array(get("version"));
    const offsets = new Uint32Array(get("offsets"));
    const flat = new Uint32Array(get("multi"));
    const tagOffsets = new Uint32Array(get("tagOffsets"));
    const tagFlat = new Uint32Array(get("tags"));
    if (header.names.length !== slots || tagOffsets.length !== slots + 1) throw new Error("filter index names disagree");
    index.names = header.names;
    index.tagCodes = new Array(slots);
    if (index.flags.length !== slots || offsets.length !== slots + 1) throw new Error("filter index columns disagree");
    index.multi = new Array(slots);
    // Postings are rebuilt from the columns a value at a time (one native call per value).
    const byCode = new Map<number, number[]>();
    const note = (code: number, slot: number) => {
      if (code < 0) return;
      if (code >= header.words.length) throw new Error("filter index refers past its dictionary");
      let list = byCode.get(code);
      if (!list) byCode.set(code, (list = []));
      list.push(slot);
    };
    const present: number[] = [];
    const pub: number[] = [];
    const indexed: number[] = [];
    const levels: number[][] = NSFW_LEVELS.map(() => []);
    let sliceStart = performance.now();
    const maybeYield = async (i: number) => {
      if ((i & 1023) !== 0 || performance.now() - sliceStart < LOAD_SLICE_MS) return;
      await new Promise<void>((resolve) => setImmediate(resolve));
      sliceStart = performance.now();
    };
    for (let slot = 0; slot < slots; slot++) {
      await maybeYield(slot);
      const f = index.flags[slot];
      if (!(f & FLAG_PRESENT)) continue;
      present.push(slot);
      if (f & FLAG_PUBLIC) pub.push(slot);
      if (f & FLAG_INDEXED) indexed.push(slot);
      levels[index.nsfw[slot]].push(slot);
      note(index.owner[slot], slot);
      note(index.username[slot], slot);
      note(index.post[slot], slot);
      note(index.model[slot], slot);
      note(index.version[slot], slot);
      if (tagOffsets[slot + 1] > tagOffsets[slot]) {
        const tags = Array.from(tagFlat.subarray(tagOffsets[slot], tagOffsets[slot + 1]));
        for (const code of tags) if (code >= header.words.length) throw new Error("filter index refers past its dictionary");
        index.tagCodes[slot] = tags;
      }
      if (offsets[slot + 1] > offsets[slot]) {
        const many = Array.from(flat.subarray(offsets[slot], offsets[slot + 1]));
        index.multi[slot] = many;
        for (const code of many) note(code, slot);
      }
    }
    index.present.addMany(present);
    index.publicSlots.addMany(pub);
    index.indexedSlots.addMany(indexed);
    levels.forEach((l, i) => index.nsfwSlots[i].addMany(l));
    let n = 0;
    for (const [code, list] of byCode) {
      await maybeYield(++n);
      index.postings.set(code, new RoaringBitmap32(list));
    }
    return index;
  }

  /** The dictionary code of `key`, added when new. */
  private code(key: string): number {
    let code = this.codes.get(key);
    if (code === undefined) {
      code = this.words.length;
      this.words.push(key);
      this.codes.set(key, code);
    }
    return code;
  }

  /** Adds `slot` to the postings of `key`; returns the key's code. */
  private post1(slot: number, key: string): number {
    const code = this.code(key);
    let slots = this.postings.get(code);
    if (!slots) this.postings.set(code, (slots = new RoaringBitmap32()));
    slots.add(slot);
    return code;
  }

  private unpost(slot: number, code: number): void {
    const slots = this.postings.get(code);
    if (!slots) return;
    slots.remove(slot);
    // Dictionary codes stay (columns refer to them); an empty bitmap is dropped.
    if (slots.isEmpty) this.postings.delete(code);
  }

  private reserve(slots: number): void {
    if (this.flags.length >= slots) return;
    const size = Math.max(slots, this.flags.length * 2, 1024);
    const grow = <T extends Uint8Array | Int32Array | Float64Array>(a: T, make: (n: number) => T): T => {
      const b = make(size);
      b.set(a as never);
      return b;
    };
    this.flags = grow(this.flags, (n) => new Uint8Array(n));
    this.nsfw = grow(this.nsfw, (n) => new Uint8Array(n));
    this.created = grow(this.created, (n) => new Float64Array(n));
    this.owner = grow(this.owner, (n) => new Int32Array(n).fill(NONE));
    this.username = grow(this.username, (n) => new Int32Array(n).fill(NONE));
    this.post = grow(this.post, (n) => new Int32Array(n).fill(NONE));
    this.model = grow(this.model, (n) => new Int32Array(n).fill(NONE));
    this.version = grow(this.version, (n) => new Int32Array(n).fill(NONE));
  }
}
