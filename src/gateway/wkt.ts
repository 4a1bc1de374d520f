/**
 * Text forms shared by the JSON reader, the JSON writer and the query-parameter parser: the
 * proto3 JSON forms of Timestamp, Duration and FieldMask, base64 in both alphabets, exact
 * integer parsing, and the shortest float32 rendering protojson uses.
 */

/** A text form that does not parse; the caller names the field. */
export class TextFormError extends Error {}

const MIN_TIMESTAMP = -62_135_596_800; // 0001-01-01T00:00:00Z
const MAX_TIMESTAMP = 253_402_300_799; // 9999-12-31T23:59:59Z
const MAX_DURATION = 315_576_000_000;

/** Seconds and nanos of a google.protobuf.Timestamp or Duration. */
export interface SecondsNanos {
  seconds: bigint;
  nanos: number;
}

/** Parses an RFC 3339 timestamp (`Z` or a numeric offset, 0 to 9 fractional digits). */
export function parseTimestamp(text: string): SecondsNanos {
  const m = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/.exec(text);
  if (!m) throw new TextFormError(`expected an RFC 3339 timestamp such as "2024-05-01T12:00:00Z", got ${JSON.stringify(text)}`);
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second);
  if (
    month < 1 ||
    month > 12 ||
    date.getUTCDate() !== day ||
    hour > 23 ||
    minute > 59 ||
    second > 59 ||
    date.getUTCMonth() !== month - 1
  ) {
    throw new TextFormError(`${JSON.stringify(text)} is not a valid date and time`);
  }
  let seconds = Math.floor(date.getTime() / 1000);
  if (!m[8]) {
    const offset = (Number(m[10]) * 60 + Number(m[11])) * 60;
    seconds += m[9] === "+" ? -offset : offset;
  }
  if (seconds < MIN_TIMESTAMP || seconds > MAX_TIMESTAMP) {
    throw new TextFormError(`${JSON.stringify(text)} is outside 0001-01-01 .. 9999-12-31`);
  }
  return { seconds: BigInt(seconds), nanos: Number((m[7] ?? "").padEnd(9, "0")) };
}

/** RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as protojson writes it. */
export function formatTimestamp(seconds: bigint | number, nanos: number): string {
  return `${new Date(Number(seconds) * 1000).toISOString().slice(0, 19)}${fraction(nanos)}Z`;
}

/** Parses a proto3 JSON Duration such as `"1.5s"` or `"-0.250s"`. */
export function parseDuration(text: string): SecondsNanos {
  const m = /^(-)?(\d+)(?:\.(\d{1,9}))?s$/.exec(text);
  if (!m) throw new TextFormError(`expected a duration such as "1.5s", got ${JSON.stringify(text)}`);
  const seconds = BigInt(m[2]);
  if (seconds > BigInt(MAX_DURATION)) throw new TextFormError(`${JSON.stringify(text)} is out of range`);
  const nanos = Number((m[3] ?? "").padEnd(9, "0"));
  return m[1] ? { seconds: -seconds, nanos: -nanos } : { seconds, nanos };
}

/** A Duration as protojson writes it: seconds with 0, 3, 6 or 9 fractional digits and `s`. */
export function formatDuration(seconds: bigint, nanos: number): string {
  const negative = seconds < 0n || nanos < 0;
  const abs = seconds < 0n ? -seconds : seconds;
  return `${negative ? "-" : ""}${abs}${fraction(Math.abs(nanos))}s`;
}

function fraction(nanos: number): string {
  if (nanos === 0) return "";
  const digits = String(nanos).padStart(9, "0");
  if (nanos % 1_000_000 === 0) return `.${digits.slice(0, 3)}`;
  if (nanos % 1_000 === 0) return `.${digits.slice(0, 6)}`;
  return `.${digits}`;
}

/** `fileName` -> `file_name`; a name already in snake_case is kept. */
export function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** `file_name` -> `fileName`. */
export function lowerCamelCase(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** FieldMask paths from their JSON form: comma-separated, lowerCamelCase (snake_case accepted). */
export function parseFieldMask(text: string): string[] {
  if (text === "") return [];
  return text.split(",").map((path) => {
    const trimmed = path.trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(trimmed) && trimmed !== "*") {
      throw new TextFormError(`${JSON.stringify(path)} is not a field path`);
    }
    return trimmed.split(".").map(snakeCase).join(".");
  });
}

/** FieldMask paths in their JSON form. */
export function formatFieldMask(paths: string[]): string {
  return paths.map((p) => p.split(".").map(lowerCamelCase).join(".")).join(",");
}

/** Decodes base64 in the standard or the URL-safe alphabet, with or without padding. */
export function parseBase64(text: string): Buffer {
  const bare = text.replace(/=+$/, "");
  if (!/^[A-Za-z0-9+/\-_]*$/.test(bare) || bare.length % 4 === 1 || text.length - bare.length > 2) {
    throw new TextFormError("expected base64 (standard or URL-safe alphabet)");
  }
  return Buffer.from(bare.replace(/-/g, "+").replace(/_/g, "/"), "base64");
}

/** Bounds of the integer types, inclusive. */
export const INTEGER_RANGES: Record<string, [bigint, bigint]> = {
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  sint32: [-(2n ** 31n), 2n ** 31n - 1n],
  sfixed32: [-(2n ** 31n), 2n ** 31n - 1n],
  uint32: [0n, 2n ** 32n - 1n],
  fixed32: [0n, 2n ** 32n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  sint64: [-(2n ** 63n), 2n ** 63n - 1n],
  sfixed64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
  fixed64: [0n, 2n ** 64n - 1n],
};

/**
 * An exact integer from JSON text: a decimal integer, or a number with a fraction or an
 * exponent whose value is whole (`"1e3"`, `"2.0"`), as protojson accepts them.
 */
export function parseIntegerText(text: string): bigint {
  const m = /^(-)?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m) throw new TextFormError(`expected an integer, got ${JSON.stringify(text)}`);
  const digits = m[2] + (m[3] ?? "");
  const exponent = Number(m[4] ?? 0) - (m[3] ?? "").length;
  let value: bigint;
  if (exponent >= 0) {
    if (exponent > 40) throw new TextFormError(`${text} is out of range`);
    value = BigInt(digits) * 10n ** BigInt(exponent);
  } else {
    const kept = digits.slice(0, exponent);
    if (!/^0*$/.test(digits.slice(exponent))) throw new TextFormError(`expected an integer, got ${text}`);
    value = BigInt(kept || "0");
  }
  return m[1] ? -value : value;
}

/** Checks an integer against the bounds of `type`. */
export function checkRange(value: bigint, type: string): bigint {
  const [min, max] = INTEGER_RANGES[type];
  if (value < min || value > max) throw new TextFormError(`${value} is out of range for ${type}`);
  return value;
}

const FLOAT32_MAX = 3.4028234663852886e38;

/** Checks that a finite number fits a float32. */
export function checkFloat32(value: number): number {
  if (Number.isFinite(value) && Math.abs(value) > FLOAT32_MAX) throw new TextFormError(`${value} is out of range for float`);
  return value;
}

/** The shortest decimal that reads back as the same float32, the way protojson writes floats. */
export function shortestFloat32(value: number): number {
  const f = Math.fround(value);
  if (!Number.isFinite(f) || f === 0) return f;
  for (let precision = 1; precision <= 9; precision++) {
    const candidate = Number(f.toPrecision(precision));
    if (Math.fround(candidate) === f) return candidate;
  }
  return f;
}
