import type { Clock } from "../clock.js";

/** What authentication needs of a key that was found, not revoked, and matched its secret. */
export interface VerifiedKey {
  keyId: string;
  accountId: string;
  prefix: string;
  isAdmin: boolean;
  /** The key's own limit; null means the server default. */
  rateLimitPerMinute: number | null;
}

interface Entry {
  key: VerifiedKey;
  /** Clock milliseconds when the entry was read from the store. */
  fetchedAt: number;
  /** Clock milliseconds of the key's last recorded use, as far as this process knows. */
  lastUsedAt: number | null;
}

/** How the cache is bounded. */
export interface KeyCacheOptions {
  /** Milliseconds an entry is trusted without a notification; 0 turns caching off. */
  ttlMs: number;
  /** Entries held at most; the least recently used goes first. */
  maxEntries: number;
  clock: Clock;
}

/**
 * Verified API keys by the SHA-256 of their secret (never the secret itself), so a call with
 * a known key needs no query. Only keys that authenticated are held, so unknown keys cannot
 * fill it, and it holds at most `maxEntries` (least recently used evicted first).
 *
 * Staleness is bounded twice: changes made through glimpse arrive as notifications and
 * remove entries (`forgetKey`, `forgetAccount`, `clear`), and every entry expires after
 * `ttlMs` in case a notification was lost. A read that started before an invalidation is not
 * stored (see {@link epoch}), so it cannot bring back what the invalidation removed.
 */
export class KeyCache {
  private readonly entries = new Map<string, Entry>();
  private invalidations = 0;

  constructor(private readonly options: KeyCacheOptions) {}

  /** Entries held now. */
  get size(): number {
    return this.entries.size;
  }

  /** Whether entries are kept at all. */
  get enabled(): boolean {
    return this.options.ttlMs > 0 && this.options.maxEntries > 0;
  }

  /**
   * A token to take before reading a key from the store and to hand to {@link set}: the
   * result is stored only if nothing was invalidated in between.
   */
  epoch(): number {
    return this.invalidations;
  }

  /** The key whose secret hashes to `hash`, if held and fresh; marks it recently used. */
  get(hash: string): VerifiedKey | undefined {
    const entry = this.entries.get(hash);
    if (!entry) return undefined;
    const now = this.options.clock.now().getTime();
    // A clock that went backwards makes the entry's age unknown: read the store again.
    if (now - entry.fetchedAt >= this.options.ttlMs || now < entry.fetchedAt) {
      this.entries.delete(hash);
      return undefined;
    }
    this.entries.delete(hash);
    this.entries.set(hash, entry);
    return entry.key;
  }

  /** Holds a verified key read at `epoch`, unless something was invalidated since. */
  set(hash: string, key: VerifiedKey, lastUsedAt: Date | null, epoch: number): void {
    if (!this.enabled || epoch !== this.invalidations) return;
    this.entries.delete(hash);
    this.entries.set(hash, { key, fetchedAt: this.options.clock.now().getTime(), lastUsedAt: lastUsedAt?.getTime() ?? null });
    while (this.entries.size > this.options.maxEntries) {
      this.entries.delete(this.entries.keys().next().value!);
    }
  }

  /**
   * Whether the key's last use should be written now (none recorded within `granularityMs`);
   * when it should, the use is recorded here at once, so concurrent calls write it once.
   */
  useIsDue(hash: string, now: Date, granularityMs: number): boolean {
    const entry = this.entries.get(hash);
    if (!entry) return false;
    const at = now.getTime();
    if (entry.lastUsedAt !== null && at - entry.lastUsedAt < granularityMs && at >= entry.lastUsedAt) return false;
    entry.lastUsedAt = at;
    return true;
  }

  /** Drops the key with this id. */
  forgetKey(keyId: string): void {
    this.invalidations++;
    for (const [hash, entry] of this.entries) {
      if (entry.key.keyId === keyId) this.entries.delete(hash);
    }
  }

  /** Drops every key of this account (its admin flag changed). */
  forgetAccount(accountId: string): void {
    this.invalidations++;
    for (const [hash, entry] of this.entries) {
      if (entry.key.accountId === accountId) this.entries.delete(hash);
    }
  }

  /** Drops everything (notifications may have been missed). */
  clear(): void {
    this.invalidations++;
    this.entries.clear();
  }
}
