/*
 * Perceptual hashes are unsigned 64-bit values; PostgreSQL's bigint is signed. These keep the
 * bits and change only the reading.
 */

/** Reinterprets an unsigned 64-bit value as two's-complement, to fit a Postgres bigint. */
export function toSignedInt64(u: bigint): bigint {
  if (u < 0n || u >= 1n << 64n) throw new RangeError(`${u} is not an unsigned 64-bit value`);
  return BigInt.asIntN(64, u);
}

/** Inverse of `toSignedInt64`: the unsigned 64-bit value a Postgres bigint stores. */
export function fromSignedInt64(s: bigint): bigint {
  if (s < -(1n << 63n) || s >= 1n << 63n) throw new RangeError(`${s} is not a signed 64-bit value`);
  return BigInt.asUintN(64, s);
}
