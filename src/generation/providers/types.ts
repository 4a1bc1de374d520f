import type { AspectRatio, ProviderId } from "../models.js";

/** What a provider is asked to draw. */
export interface ProviderRequest {
  /** The model's name at the provider. */
  model: string;
  prompt: string;
  aspectRatio: AspectRatio;
  /** Empty when none. */
  style: string;
  /** The provider's own thinking level value, or undefined to leave its default. */
  thinkingLevel: string | undefined;
  /** Aborts the request: the call was cancelled, its deadline passed, or the server is stopping. */
  signal: AbortSignal;
  /** When the caller stops waiting, if it set a deadline: no retry is started that cannot finish before. */
  deadline: Date | undefined;
}

/** An image a provider drew. */
export interface ProviderImage {
  bytes: Buffer;
  /** Media type as the provider declared or the bytes show, e.g. "image/png". */
  mediaType: string;
}

/** A backend that turns prompts into images. */
export interface ImageProvider {
  readonly id: ProviderId;
  /** Why the provider cannot be used now (naming what to configure), or undefined when it can. */
  unavailableReason(): string | undefined;
  /**
   * Draws one image. Throws DomainError: INVALID_ARGUMENT or FAILED_PRECONDITION when the
   * provider refuses the request, UNAVAILABLE when it times out or keeps failing; an abort
   * of `signal` propagates as the abort.
   */
  generate(request: ProviderRequest): Promise<ProviderImage>;
}

/** The prompt with the style instruction appended, for providers without a style parameter. */
export function promptWithStyle(prompt: string, style: string): string {
  return style === "" ? prompt : `${prompt}\n\nStyle: ${style}`;
}

/** The media type the first bytes show, for the formats providers return. */
export function sniffMediaType(bytes: Uint8Array): string {
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) {
    return "image/png";
  }
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "image/jpeg";
  if (bytes.length >= 12 && Buffer.from(bytes.subarray(0, 4)).toString("latin1") === "RIFF" &&
      Buffer.from(bytes.subarray(8, 12)).toString("latin1") === "WEBP") {
    return "image/webp";
  }
  return "application/octet-stream";
}
