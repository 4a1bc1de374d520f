import { DomainError } from "../errors.js";

/**
 * INVALID_ARGUMENT for an image over the upload limit, in the one wording every path uses
 * (gRPC, JSON and multipart bodies over the HTTP bridge), naming the field and the limit.
 */
export function uploadTooLarge(field: string, maxBytes: number): DomainError {
  const description = `image is larger than the limit of ${formatBytes(maxBytes)}`;
  return new DomainError("INVALID_ARGUMENT", `${field}: ${description}`, { violations: [{ field, description }] });
}

/** "25 MiB", "4.9 KiB", "1000 bytes". */
export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${trimmed(n / (1024 * 1024))} MiB`;
  if (n >= 1024) return `${trimmed(n / 1024)} KiB`;
  return `${n} bytes`;
}

/** One decimal, dropped when it is zero: "25 MiB", "30.5 MiB". */
function trimmed(x: number): string {
  const s = x.toFixed(1);
  return s.endsWith(".0") ? s.slice(0, -2) : s;
}
