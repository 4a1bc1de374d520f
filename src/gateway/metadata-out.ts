import type { IncomingMessage } from "node:http";
import type { Metadata } from "nice-grpc-common";
import { INTERNAL_METADATA_PREFIX } from "../server/middleware/auth.js";

/**
 * gRPC response metadata as HTTP headers, the way grpc-gateway v2's default matchers forward
 * it: each response header of the call as `Grpc-Metadata-<Key>`, and, when the request says it
 * takes trailers (`TE: trailers`), each trailer as an HTTP trailer `Grpc-Trailer-<Key>`.
 * gRPC's own names (`grpc-status`, `grpc-status-details-bin`, `content-type`...) and glimpse's
 * internal ones (`x-glimpse-internal-*`) never leave the process.
 */

/** Response metadata of a call: keys lower-case, `-bin` values base64 as on the gRPC wire. */
export type MetadataPairs = [key: string, value: string][];

/** Names that belong to the transport or to gRPC itself, not to the application. */
const TRANSPORT = new Set(["content-type", "date", "te", "user-agent", "connection", "keep-alive", "transfer-encoding", "trailer", "upgrade"]);

/** The application metadata of a call's response headers or trailers, as key/value pairs. */
export function pairsOf(metadata: Metadata | undefined): MetadataPairs {
  if (!metadata) return [];
  const out: MetadataPairs = [];
  for (const [key, values] of metadata) {
    if (!forwardable(key)) continue;
    for (const value of values) out.push([key, typeof value === "string" ? value : Buffer.from(value).toString("base64")]);
  }
  return out;
}

function forwardable(key: string): boolean {
  return !key.startsWith(":") && !key.startsWith("grpc-") && !key.startsWith(INTERNAL_METADATA_PREFIX) && !TRANSPORT.has(key);
}

/** `x-request-id` -> `X-Request-Id` (Go's canonical header form, as grpc-gateway writes it). */
function canonical(key: string): string {
  let name = canonicalNames.get(key);
  if (name === undefined) {
    name = key.replace(/(^|-)([a-z])/g, (_, dash: string, letter: string) => dash + letter.toUpperCase());
    // Keys are the server's own metadata names, a handful; the bound keeps any others from growing it.
    if (canonicalNames.size < 256) canonicalNames.set(key, name);
  }
  return name;
}
const canonicalNames = new Map<string, string>();

/** Values that may travel in an HTTP header: printable ASCII without line breaks. */
const HEADER_TEXT = /^[\x20-\x7e\t]*$/;

function headersOf(prefix: string, pairs: MetadataPairs): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [key, value] of pairs) {
    if (!HEADER_TEXT.test(value)) continue;
    (out[prefix + canonical(key)] ??= []).push(value);
  }
  return out;
}

/** `Grpc-Metadata-<Key>` headers for a call's response headers. */
export function metadataHeaders(header: MetadataPairs): Record<string, string[]> {
  return headersOf("Grpc-Metadata-", header);
}

/** `Grpc-Trailer-<Key>` trailers for a call's trailers. */
export function metadataTrailers(trailer: MetadataPairs): Record<string, string[]> {
  return headersOf("Grpc-Trailer-", trailer);
}

/** Whether the request accepts trailers (`TE: trailers`, RFC 9110 section 6.5.1), as grpc-gateway tests it. */
export function acceptsTrailers(req: IncomingMessage): boolean {
  const te = req.headers.te;
  return typeof te === "string" && te.toLowerCase().includes("trailers");
}
