import { describe, expect, it } from "vitest";
import {
  generateSecret,
  hashSecret,
  KEY_MARK,
  plausibleSecret,
  prefixOf,
  PREFIX_LENGTH,
  secretMatches,
} from "../../src/accounts/keys.js";
import { RateLimiter } from "../../src/accounts/token-bucket.js";
import { ManualClock } from "../../src/clock.js";

describe("API key secrets", () => {
  it("are long, random, recognisable and URL-safe", () => {
    const secrets = Array.from({ length: 200 }, generateSecret);
    expect(new Set(secrets).size).toBe(200);
    expect(new Set(secrets.map(prefixOf)).size).toBe(200);
    for (const s of secrets) {
      expect(s.startsWith(KEY_MARK)).toBe(true);
      expect(s).toMatch(/^glk_[0-9A-Za-z]{40,}$/);
      expect(plausibleSecret(s)).toBe(true);
      expect(prefixOf(s)).toHaveLength(PREFIX_LENGTH);
    }
  });

  it("are stored as a SHA-256 that matches only the same secret", () => {
    const secret = generateSecret();
    const hash = hashSecret(secret);
    expect(hash).toHaveLength(32);
    expect(secretMatches(secret, hash)).toBe(true);
    expect(secretMatches(secret.slice(0, -1) + (secret.endsWith("a") ? "b" : "a"), hash)).toBe(false);
    expect(secretMatches(secret, hash.subarray(0, 16))).toBe(false);
  });

  it("refuses text that cannot be a secret before any lookup", () => {
    expect(plausibleSecret("short")).toBe(false);
    expect(plausibleSecret("glk_has a space in the middle of it")).toBe(false);
    expect(plausibleSecret("x".repeat(201))).toBe(false);
  });
});

describe("token bucket", () => {
  it("allows a burst of the limit, then one request per refill interval, telling how long to wait", () => {
    const clock = new ManualClock(new Date("2026-06-15T12:00:00Z"));
    const limiter = new RateLimiter(clock);
    for (let i = 0; i < 60; i++) expect(limiter.take("k", 60)).toEqual({ allowed: true });
    expect(limiter.take("k", 60)).toEqual({ allowed: false, retryAfterMs: 1000 });
    clock.advance(400);
    expect(limiter.take("k", 60)).toEqual({ allowed: false, retryAfterMs: 600 });
    clock.advance(600);
    expect(limiter.take("k", 60)).toEqual({ allowed: true });
    expect(limiter.take("k", 60).allowed).toBe(false);
  });

  it("refills continuously up to the limit and no further", () => {
    const clock = new ManualClock();
    const limiter = new RateLimiter(clock);
    for (let i = 0; i < 5; i++) limiter.take("k", 5);
    clock.advance(60 * 60_000);
    for (let i = 0; i < 5; i++) expect(limiter.take("k", 5).allowed).toBe(true);
    expect(limiter.take("k", 5)).toEqual({ allowed: false, retryAfterMs: 12_000 });
  });

  it("keeps keys apart", () => {
    const limiter = new RateLimiter(new ManualClock());
    expect(limiter.take("a", 1).allowed).toBe(true);
    expect(limiter.take("a", 1).allowed).toBe(false);
    expect(limiter.take("b", 1).allowed).toBe(true);
  });

  it("forgets idle buckets once they are full again", () => {
    const clock = new ManualClock();
    const limiter = new RateLimiter(clock);
    for (let i = 0; i < 999; i++) limiter.take(`key-${i}`, 60);
    expect(limiter.size).toBe(999);
    clock.advance(60_000);
    limiter.take("fresh", 60);
    expect(limiter.size).toBe(1);
  });
});
