import { DomainError } from "../errors.js";
import { HTTP_BODY_MEMORY_FACTOR, type ByteBudget } from "../server/byte-budget.js";
import { BodyTooLarge } from "./http.js";

/**
 * Splits a streamed request body into its top-level JSON objects, as they arrive: objects one
 * after another, separated by any whitespace (newline-delimited JSON is the usual form). This
 * is how a client-streaming RPC takes its messages over HTTP, like grpc-gateway's JSON
 * decoder. Each object may be up to `limit` bytes; the body as a whole has no limit.
 */
export async function* jsonObjects(
  body: AsyncIterable<Buffer | string>,
  limit: number,
  budget?: ByteBudget,
): AsyncGenerator<string> {
  let parts: Buffer[] = [];
  let size = 0;
  // Bytes of the message being assembled, held in the process's budget of body bytes.
  let held = 0;
  const hold = (bytes: number) => {
    budget?.take(bytes * HTTP_BODY_MEMORY_FACTOR);
    held += bytes * HTTP_BODY_MEMORY_FACTOR;
  };
  try {
    let depth = 0;
    let inString = false;
    let escaped = false;
    for await (const piece of body) {
      const chunk = typeof piece === "string" ? Buffer.from(piece) : piece;
      let start = 0;
      for (let i = 0; i < chunk.length; i++) {
        const byte = chunk[i];
        if (depth === 0) {
          if (byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09) {
            start = i + 1;
            continue;
          }
          if (byte !== 0x7b) {
            throw new DomainError("INVALID_ARGUMENT", "request stream: each message must be a JSON object");
          }
          depth = 1;
          start = i;
          continue;
        }
        // Multi-byte UTF-8 sequences never contain ASCII bytes, so scanning bytes is safe.
        if (inString) {
          if (escaped) escaped = false;
          else if (byte === 0x5c) escaped = true;
          else if (byte === 0x22) inString = false;
          continue;
        }
        if (byte === 0x22) inString = true;
        else if (byte === 0x7b || byte === 0x5b) depth++;
        else if (byte === 0x7d || byte === 0x5d) {
          depth--;
          if (depth === 0) {
            parts.push(chunk.subarray(start, i + 1));
            if (size + i + 1 - start > limit) throw new BodyTooLarge(limit);
            const text = Buffer.concat(parts).toString("utf8");
            parts = [];
            size = 0;
            budget?.give(held);
            held = 0;
            yield text;
            start = i + 1;
          }
        }
      }
      if (depth > 0) {
        parts.push(chunk.subarray(start));
        size += chunk.length - start;
        if (size > limit) throw new BodyTooLarge(limit);
        hold(chunk.length - start);
      }
    }
    if (depth > 0) throw new DomainError("INVALID_ARGUMENT", "request stream ends inside a JSON object");
  } finally {
    budget?.give(held);
  }
}
