/**
 * Image ids (positive int64 snowflakes) as pairs of uint32 words, so that lists of tens of
 * thousands of ids can be read from the database and looked up without creating a BigInt
 * per id. `IdSlotMap` is the matching id -> slot hash table.
 */

const hiOf = (id: bigint) => Number(id >> 32n) >>> 0;
const loOf = (id: bigint) => Number(id & 0xffffffffn) >>> 0;

/** A read-only list of ids: word 2i is the high half of id i, word 2i+1 the low half. */
export class IdList {
  private constructor(readonly words: Uint32Array) {}

  static fromBigInts(ids: ArrayLike<bigint>): IdList {
    const words = new Uint32Array(ids.length * 2);
    for (let i = 0; i < ids.length; i++) {
      words[2 * i] = hiOf(ids[i]);
      words[2 * i + 1] = loOf(ids[i]);
    }
    return new IdList(words);
  }

  /** From packed big-endian int8 values (PostgreSQL's `int8send`). */
  static fromBigEndian(bytes: Uint8Array | null): IdList {
    if (bytes === null) return new IdList(new Uint32Array(0));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const words = new Uint32Array(bytes.byteLength / 4);
    for (let i = 0; i < words.length; i++) words[i] = view.getUint32(i * 4, false);
    return new IdList(words);
  }

  /** Accepts an IdList as is and converts anything else. */
  static of(ids: IdList | ArrayLike<bigint>): IdList {
    return ids instanceof IdList ? ids : IdList.fromBigInts(ids);
  }

  get length(): number {
    return this.words.length / 2;
  }

  at(i: number): bigint {
    return (BigInt(this.words[2 * i]) << 32n) | BigInt(this.words[2 * i + 1]);
  }

  includes(id: bigint): boolean {
    const hi = hiOf(id);
    const lo = loOf(id);
    for (let i = 0; i < this.words.length; i += 2) {
      if (this.words[i + 1] === lo && this.words[i] === hi) return true;
    }
    return false;
  }
}

const EMPTY = -1;
const DELETED = -2;

/** Open-addressing hash table from id to slot (a non-negative int32), keyed by the id's halves. */
export class IdSlotMap {
  private hi: Uint32Array;
  private lo: Uint32Array;
  private slots: Int32Array;
  private mask: number;
  private live = 0;
  private occupied = 0; // live + deleted markers

  constructor(capacity = 1024) {
    const size = 1 << Math.ceil(Math.log2(Math.max(16, capacity * 2)));
    this.hi = new Uint32Array(size);
    this.lo = new Uint32Array(size);
    this.slots = new Int32Array(size).fill(EMPTY);
    this.mask = size - 1;
  }

  get size(): number {
    return this.live;
  }

  /** The slot of an id given as halves, or -1. */
  lookup(hi: number, lo: number): number {
    let i = hash(hi, lo) & this.mask;
    for (;;) {
      const slot = this.slots[i];
      if (slot === EMPTY) return -1;
      if (slot !== DELETED && this.lo[i] === lo && this.hi[i] === hi) return slot;
      i = (i + 1) & this.mask;
    }
  }

  get(id: bigint): number | undefined {
    const slot = this.lookup(hiOf(id), loOf(id));
    return slot < 0 ? undefined : slot;
  }

  has(id: bigint): boolean {
    return this.lookup(hiOf(id), loOf(id)) >= 0;
  }

  set(id: bigint, slot: number): void {
    if ((this.occupied + 1) * 2 > this.slots.length) this.rehash(this.live * 2 + 2 > this.slots.length / 2);
    const hi = hiOf(id);
    const lo = loOf(id);
    let i = hash(hi, lo) & this.mask;
    let reuse = -1;
    for (;;) {
      const s = this.slots[i];
      if (s === EMPTY) break;
      if (s === DELETED) {
        if (reuse < 0) reuse = i;
      } else if (this.lo[i] === lo && this.hi[i] === hi) {
        this.slots[i] = slot;
        return;
      }
      i = (i + 1) & this.mask;
    }
    if (reuse >= 0) i = reuse;
    else this.occupied++;
    this.hi[i] = hi;
    this.lo[i] = lo;
    this.slots[i] = slot;
    this.live++;
  }

  delete(id: bigint): boolean {
    const hi = hiOf(id);
    const lo = loOf(id);
    let i = hash(hi, lo) & this.mask;
    for (;;) {
      const s = this.slots[i];
      if (s === EMPTY) return false;
      if (s !== DELETED && this.lo[i] === lo && this.hi[i] === hi) {
        this.slots[i] = DELETED;
        this.live--;
        return true;
      }
      i = (i + 1) & this.mask;
    }
  }

  /** Every id in the table. */
  *ids(): IterableIterator<bigint> {
    for (let i = 0; i < this.slots.length; i++) {
      if (this.slots[i] >= 0) yield (BigInt(this.hi[i]) << 32n) | BigInt(this.lo[i]);
    }
  }

  private rehash(grow: boolean): void {
    const { hi, lo, slots } = this;
    const size = grow ? slots.length * 2 : slots.length;
    this.hi = new Uint32Array(size);
    this.lo = new Uint32Array(size);
    this.slots = new Int32Array(size).fill(EMPTY);
    this.mask = size - 1;
    this.live = 0;
    this.occupied = 0;
    for (let i = 0; i < slots.length; i++) {
      if (slots[i] >= 0) this.set((BigInt(hi[i]) << 32n) | BigInt(lo[i]), slots[i]);
    }
  }
}

/** A 32-bit mix of both halves (murmur3's finaliser over a combination). */
function hash(hi: number, lo: number): number {
  let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
