import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** What every generated secret starts with, so a leaked one is recognisable in logs and scanners. */
export const KEY_MARK = "glk_";

/** Characters of a secret kept in clear as its lookup prefix (the mark plus 8 random characters). */
export const PREFIX_LENGTH = 12;

/** Bounds on a secret a client may present; anything else is refused before any lookup. */
const MIN_SECRET = 20;
const MAX_SECRET = 200;
const SECRET_TEXT = /^[\x21-\x7e]+$/;

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** Base62 text of the bytes read as one big-endian number (no padding, no ambiguous symbols). */
function base62(bytes: Uint8Array): string {
  let n = BigInt(`0x${Buffer.from(bytes).toString("hex")}`);
  let out = "";
  while (n > 0n) {
    out = BASE62[Number(n % 62n)] + out;
    n /= 62n;
  }
  return out;
}

/**
 * A new API key secret: the mark and base62 of 32 random bytes (256 bits), about 47
 * characters. It is shown to its owner once and never stored.
 */
export function generateSecret(): string {
  // Re-draw the rare short encodings (leading zero bytes) so every secret has a full prefix.
  for (;;) {
    const body = base62(randomBytes(32));
    if (body.length >= 40) return KEY_MARK + body;
  }
}

/** The stored form of a secret: its SHA-256. Secrets are random, so no salt or slow hash is needed. */
export function hashSecret(secret: string): Buffer {
  return createHash("sha256").update(secret, "utf8").digest();
}

/** The clear prefix stored beside the hash, used to find a key and shown in listings. */
export function prefixOf(secret: string): string {
  return secret.slice(0, PREFIX_LENGTH);
}

/** Whether text could be a secret at all (length and printable ASCII), before touching the store. */
export function plausibleSecret(secret: string): boolean {
  return secret.length >= MIN_SECRET && secret.length <= MAX_SECRET && SECRET_TEXT.test(secret);
}

/** Whether a presented secret hashes to the stored hash, compared in constant time. */
export function secretMatches(secret: string, storedHash: Uint8Array): boolean {
  const presented = hashSecret(secret);
  return storedHash.length === presented.length && timingSafeEqual(presented, storedHash);
}
