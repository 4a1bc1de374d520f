import { connect, type Socket } from "node:net";

/** What came back on a raw HTTP connection. */
export interface RawAnswer {
  /** Status of the first response; undefined when none arrived (closed, reset or timed out). */
  status?: number;
  /** Headers of the first response, lower-cased names (repeated ones joined with ", "). */
  headers: Record<string, string>;
  /** Everything after the first response's header block, as received. */
  body: Buffer;
  /** Every byte received. */
  raw: Buffer;
  /** How the exchange ended. */
  ended: "closed" | "timeout" | "error";
  /** The socket error, when one ended the exchange. */
  error?: string;
}

/**
 * How the request bytes are put on the wire: all of them, then either wait for the answer
 * ("send"), half-close first ("half-close": the server sees the end of the stream), destroy
 * the socket after `at` bytes ("abort"), or send a TCP reset after `at` bytes ("reset").
 */
export type Delivery =
  | { kind: "send" }
  | { kind: "half-close" }
  | { kind: "abort"; at: number }
  | { kind: "reset"; at: number };

/**
 * Sends `bytes` to 127.0.0.1:`port` on a fresh connection and reads until the server closes
 * it or `timeoutMs` passes. The answer is parsed only as far as the first response's status
 * line and headers, which is all the tests judge.
 */
export function rawExchange(port: number, bytes: Buffer, delivery: Delivery = { kind: "send" }, timeoutMs = 5000): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const socket: Socket = connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const finish = (ended: RawAnswer["ended"], error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(chunks);
      resolve({ ...parseHead(raw), raw, ended, error });
    };
    const timer = setTimeout(() => finish("timeout"), timeoutMs);
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("end", () => finish("closed"));
    socket.on("close", () => finish("closed"));
    socket.on("error", (err) => finish("error", err.message));
    socket.on("connect", () => {
      switch (delivery.kind) {
        case "send":
          socket.write(bytes);
          break;
        case "half-close":
          socket.end(bytes);
          break;
        case "abort":
          socket.write(bytes.subarray(0, delivery.at), () => {
            socket.destroy();
            finish("closed");
          });
          break;
        case "reset":
          socket.write(bytes.subarray(0, delivery.at), () => {
            socket.resetAndDestroy();
            finish("closed");
          });
          break;
      }
    });
  });
}

/** The status and headers of the first response in `raw`, if its header block is complete. */
function parseHead(raw: Buffer): Pick<RawAnswer, "status" | "headers" | "body"> {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) return { headers: {}, body: Buffer.alloc(0) };
  const lines = raw.subarray(0, end).toString("latin1").split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return { status: m ? Number(m[1]) : undefined, headers, body: raw.subarray(end + 4) };
}

/** One request as header lines and body bytes, before framing. */
export interface RawRequest {
  method: string;
  /** The request target exactly as written on the request line (not re-encoded). */
  target: string;
  /** Header lines as [name, value]; names and values are written as given (latin1). */
  headers: [string, string][];
  body: Buffer;
}

/**
 * How the body is framed: an exact Content-Length, chunked (whole, or cut inside a chunk),
 * a Content-Length that claims more or less than is sent, both Content-Length and chunked,
 * or no framing header at all.
 */
export type Framing =
  | { kind: "length" }
  | { kind: "chunked"; chunkSize: number }
  | { kind: "chunked-cut"; chunkSize: number; keep: number }
  | { kind: "length-more"; extra: number }
  | { kind: "length-less"; missing: number }
  | { kind: "length-and-chunked" }
  | { kind: "none" };

/** The bytes of `request` framed as `framing`, with `Connection: close` unless a header says otherwise. */
export function encodeRequest(request: RawRequest, framing: Framing = { kind: "length" }): Buffer {
  const head: string[] = [`${request.method} ${request.target} HTTP/1.1`];
  const names = new Set(request.headers.map(([n]) => n.toLowerCase()));
  if (!names.has("host")) head.push("Host: 127.0.0.1");
  if (!names.has("connection")) head.push("Connection: close");
  for (const [name, value] of request.headers) head.push(`${name}: ${value}`);
  const body = request.body;
  let payload: Buffer = body;
  switch (framing.kind) {
    case "length":
      head.push(`Content-Length: ${body.length}`);
      break;
    case "length-more":
      head.push(`Content-Length: ${body.length + framing.extra}`);
      break;
    case "length-less":
      head.push(`Content-Length: ${Math.max(0, body.length - framing.missing)}`);
      break;
    case "chunked":
    case "chunked-cut":
      head.push("Transfer-Encoding: chunked");
      payload = chunked(body, Math.max(1, framing.chunkSize));
      if (framing.kind === "chunked-cut") payload = payload.subarray(0, Math.min(payload.length - 1, framing.keep));
      break;
    case "length-and-chunked":
      head.push(`Content-Length: ${body.length}`, "Transfer-Encoding: chunked");
      payload = chunked(body, 64);
      break;
    case "none":
      break;
  }
  return Buffer.concat([Buffer.from(`${head.join("\r\n")}\r\n\r\n`, "latin1"), payload]);
}

/** `body` in chunked transfer coding, ending with the last chunk. */
export function chunked(body: Buffer, size: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const piece = body.subarray(i, i + size);
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from("\r\n"));
  }
  parts.push(Buffer.from("0\r\n\r\n"));
  return Buffer.concat(parts);
}

/** A request shown for a report: the bytes as a JSON string, cut at `max` characters. */
export function show(bytes: Buffer, max = 600): string {
  const text = JSON.stringify(bytes.toString("latin1"));
  return text.length > max ? `${text.slice(0, max)}…(${bytes.length} bytes)` : text;
}
