import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/clock.js";
import { decodePageToken, encodePageToken } from "../../src/catalogue/page-token.js";
import { SnowflakeGenerator, snowflakeTime } from "../../src/catalogue/snowflake.js";
import { normaliseTags, parseTagExpression, tagTerms } from "../../src/catalogue/tags.js";
import { DomainError, Violations } from "../../src/errors.js";

describe("tags", () => {
  it("normalises, dedupes and keeps namespaced tags whole", () => {
    const v = new Violations();
    expect(normaliseTags([" Animal ", "BIRD:Lovebird", "animal", "green   hair"], "tags", v)).toEqual([
      "animal",
      "bird:lovebird",
      "green hair",
    ]);
    expect(v.empty).toBe(true);
    expect(tagTerms(["animal", "bird:lovebird"])).toEqual(["animal", "bird:lovebird", "bird"]);
  });

  it("parses seed 1's expression, with '+' or URL-decoded spaces", () => {
    const v = new Violations();
    expect(parseTagExpression("animal+dog+-cat", "q", v)).toEqual({ include: ["animal", "dog"], exclude: ["cat"] });
    expect(parseTagExpression("animal dog -cat", "q", v)).toEqual({ include: ["animal", "dog"], exclude: ["cat"] });
    expect(v.empty).toBe(true);
    parseTagExpression("dog++cat", "q", v);
    parseTagExpression("-", "q", v);
    expect(() => v.throwIfAny()).toThrow(/q: term 2 is empty/);
  });
});

describe("snowflake ids", () => {
  it("are time-ordered, unique and exceed 2^53", () => {
    const clock = new ManualClock(new Date("2026-01-01T00:00:00Z"));
    const ids = new SnowflakeGenerator(513, clock);
    const seen: bigint[] = [];
    for (let i = 0; i < 10_000; i++) seen.push(ids.next()); // > 4096 in one millisecond
    expect(new Set(seen).size).toBe(seen.length);
    expect([...seen].sort((a, b) => (a < b ? -1 : 1))).toEqual(seen);
    expect(seen[0]).toBeGreaterThan(2n ** 53n);
    expect(snowflakeTime(seen[0])).toEqual(new Date("2026-01-01T00:00:00Z"));
    clock.advance(-60_000); // the clock steps back: ids still increase
    expect(ids.next()).toBeGreaterThan(seen[seen.length - 1]);
  });
});

describe("page tokens", () => {
  it("round-trip and refuse tokens of another query or garbage", () => {
    const token = encodePageToken({ query: "q1", after: { rank: 3, id: 2n ** 60n }, startedAt: new Date(5), page: 2 });
    expect(decodePageToken(token, "page_token", "q1")).toEqual({
      query: "q1",
      after: { rank: 3, id: 2n ** 60n },
      startedAt: new Date(5),
      page: 2,
    });
    expect(() => decodePageToken(token, "page_token", "q2")).toThrow(DomainError);
    expect(() => decodePageToken("!!", "cursor", "q1")).toThrow(/cursor: is not a page token/);
  });
});
