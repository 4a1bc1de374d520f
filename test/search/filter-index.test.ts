import { describe, expect, it } from "vitest";
import type { Caller, ImageFilter, Period } from "../../src/catalogue/types.js";
import { NSFW_LEVELS } from "../../src/catalogue/types.js";
import { FilterIndex } from "../../src/search/filter-index.js";
import type { ImageAttributes } from "../../src/store/embeddings-repository.js";
import { periodStart } from "../../src/store/images-repository.js";

/** A deterministic pseudo-random source. */
function rng(seed: number) {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

const OWNERS = ["a", "b", "c", "d"];
const TAGS = ["cat", "dog", "bird:lovebird", "bird:crow", "sky", "sea"];
const NOW = new Date("2026-06-01T00:00:00Z");
const DAY = 86_400_000;

function randomAttributes(r: () => number): ImageAttributes {
  const pick = <T>(list: readonly T[]) => list[Math.floor(r() * list.length)];
  const tags = TAGS.filter(() => r() < 0.3);
  const terms = new Set<string>();
  for (const t of tags) {
    terms.add(t);
    if (t.includes(":")) terms.add(t.slice(0, t.indexOf(":")));
  }
  return {
    ownerId: pick(OWNERS),
    isPublic: r() < 0.6,
    indexed: r() < 0.95,
    tagTerms: [...terms],
    nsfwLevel: Math.floor(r() * 4),
    postId: r() < 0.5 ? String(1 + Math.floor(r() * 3)) : null,
    modelId: r() < 0.5 ? String(10 + Math.floor(r() * 3)) : null,
    modelVersionId: r() < 0.5 ? String(20 + Math.floor(r() * 3)) : null,
    username: pick(["", "Ann", "bob", "ANN"]),
    classNames: ["tree", "car"].filter(() => r() < 0.3),
    createdMs: NOW.getTime() - Math.floor(r() * 60) * DAY,
    fileName: `f${Math.floor(r() * 1e6)}.png`,
    tags,
  };
}

const emptyFilter = (): ImageFilter => ({
  includeTags: [],
  excludeTags: [],
  username: null,
  postId: null,
  modelId: null,
  modelVersionId: null,
  nsfw: null,
  maxNsfwLevel: null,
  period: "all",
  visibility: null,
  indexStatus: null,
  className: null,
  metaEquals: {},
  metaKeys: [],
});

/** What PostgreSQL's filterConditions (and index_status = indexed) selects, in plain JS. */
function passes(a: ImageAttributes, f: ImageFilter, caller: Caller): boolean {
  if (!a.indexed) return false;
  if (f.indexStatus !== null && f.indexStatus !== "indexed") return false;
  if (!caller.isAdmin && !(a.isPublic || a.ownerId === caller.accountId)) return false;
  if (f.visibility !== null && a.isPublic !== (f.visibility === "public")) return false;
  if (!f.includeTags.every((t) => a.tagTerms.includes(t))) return false;
  if (f.excludeTags.some((t) => a.tagTerms.includes(t))) return false;
  if (f.username !== null && (a.username === "" || a.username.toLowerCase() !== f.username.toLowerCase())) return false;
  if (f.postId !== null && a.postId !== String(f.postId)) return false;
  if (f.modelId !== null && a.modelId !== String(f.modelId)) return false;
  if (f.modelVersionId !== null && a.modelVersionId !== String(f.modelVersionId)) return false;
  if (f.nsfw === true && a.nsfwLevel === 0) return false;
  if (f.nsfw === false && a.nsfwLevel !== 0) return false;
  if (f.maxNsfwLevel !== null && a.nsfwLevel > NSFW_LEVELS.indexOf(f.maxNsfwLevel)) return false;
  const since = periodStart(f.period, NOW);
  if (since !== null && a.createdMs < since.getTime()) return false;
  if (f.className !== null && !a.classNames.includes(f.className)) return false;
  return true;
}

function randomFilter(r: () => number): ImageFilter {
  const f = emptyFilter();
  const pick = <T>(list: readonly T[]) => list[Math.floor(r() * list.length)];
  if (r() < 0.5) f.includeTags = [pick([...TAGS, "bird", "none"])];
  if (r() < 0.2) f.excludeTags = [pick([...TAGS, "bird"])];
  if (r() < 0.2) f.username = pick(["ann", "BOB", "nobody"]);
  if (r() < 0.2) f.postId = BigInt(1 + Math.floor(r() * 4));
  if (r() < 0.2) f.modelId = BigInt(10 + Math.floor(r() * 3));
  if (r() < 0.2) f.modelVersionId = BigInt(20 + Math.floor(r() * 3));
  if (r() < 0.2) f.nsfw = r() < 0.5;
  if (r() < 0.2) f.maxNsfwLevel = pick(NSFW_LEVELS);
  if (r() < 0.3) f.period = pick<Period>(["all", "year", "month", "week", "day"]);
  if (r() < 0.2) f.visibility = pick(["public", "private"] as const);
  if (r() < 0.1) f.indexStatus = pick(["indexed", "pending"] as const);
  if (r() < 0.2) f.className = pick(["tree", "car", "boat"]);
  return f;
}

/** The slots of `held` that pass, ascending: what candidates() must answer. */
function passing(held: Map<number, ImageAttributes>, filter: ImageFilter, caller: Caller): number[] {
  return [...held].filter(([, a]) => passes(a, filter, caller)).map(([slot]) => slot).sort((x, y) => x - y);
}

/** One random change to a slot below `slots`: cleared one time in five, else set anew; `held` follows. */
function churn(index: FilterIndex, held: Map<number, ImageAttributes>, r: () => number, slots: number): void {
  const slot = Math.floor(r() * slots);
  if (r() < 0.2) {
    index.clear(slot);
    held.delete(slot);
  } else {
    const a = randomAttributes(r);
    index.set(slot, a);
    held.set(slot, a);
  }
}

describe("the search filter index", () => {
  it("selects exactly what the SQL filter selects, through churn and a snapshot round trip", async () => {
    const r = rng(7);
    let index = new FilterIndex();
    const held = new Map<number, ImageAttributes>();
    const SLOTS = 3000;
    for (let step = 0; step < 12_000; step++) {
      churn(index, held, r, SLOTS);
      if (step === 8000) index = await FilterIndex.deserialize(index.serialize(SLOTS), SLOTS);
    }
    expect(index.size).toBe(held.size);
    const callers: Caller[] = [
      { accountId: "a", isAdmin: false },
      { accountId: "z", isAdmin: false },
      { accountId: "b", isAdmin: true },
    ];
    for (let q = 0; q < 300; q++) {
      const filter = randomFilter(r);
      const caller = callers[q % callers.length];
      const expected = passing(held, filter, caller);
      expect([...index.candidates(filter, caller, NOW)], JSON.stringify({ filter, caller }, (_, v) => (typeof v === "bigint" ? String(v) : v))).toEqual(expected);
    }
    for (const [slot, a] of held) {
      expect(index.createdAt(slot)).toBe(a.createdMs);
      expect(index.ownerOf(slot)).toBe(a.ownerId);
      expect(index.nameOf(slot)).toBe(a.fileName);
      expect(index.tagsOf(slot)).toEqual(a.tags);
      expect(index.readable(slot, { accountId: "c", isAdmin: false })).toBe(a.isPublic || a.ownerId === "c");
    }
  });

  it("answers an unfiltered search of an ordinary key as of the latest change, however often it is asked", () => {
    const r = rng(11);
    const index = new FilterIndex();
    const held = new Map<number, ImageAttributes>();
    const callers: Caller[] = OWNERS.map((accountId) => ({ accountId, isAdmin: false }));
    for (let step = 0; step < 3000; step++) {
      churn(index, held, r, 500);
      // Asked twice between changes: the second answer comes from what the first left.
      for (const caller of [callers[step % 4], callers[step % 4], callers[(step + 1) % 4]]) {
        expect([...index.candidates(emptyFilter(), caller, NOW)]).toEqual(passing(held, emptyFilter(), caller));
      }
    }
  });

  it("holds 100k images in under 300 bytes each, file names and tags included", () => {
    const r = rng(11);
    const index = new FilterIndex();
    for (let slot = 0; slot < 100_000; slot++) index.set(slot, randomAttributes(r));
    const perImage = index.memoryBytes() / 100_000;
    expect(perImage).toBeLessThan(300);
  });
});
