import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** A request the fake provider received. */
export interface Received {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: any;
}

/** One scripted answer: a status with a JSON body, or silence until the client gives up. */
export type Reply =
  | { status: number; json?: unknown; headers?: Record<string, string> }
  | { hang: true };

/** A local HTTP server that answers as an image provider would, from a script. */
export interface FakeProvider {
  /** Base URL (no trailing slash) to configure as the provider's root. */
  url: string;
  received: Received[];
  /** Queues answers for the next requests, in order. */
  reply(...replies: Reply[]): void;
  /** The answer once the queue is empty. */
  otherwise: (request: Received) => Reply;
  close(): Promise<void>;
}

/** Starts a fake provider on 127.0.0.1:0. */
export async function startFakeProvider(otherwise: (request: Received) => Reply): Promise<FakeProvider> {
  const queue: Reply[] = [];
  const received: Received[] = [];
  const hanging = new Set<ServerResponse>();
  const fake = {
    url: "",
    received,
    reply: (...replies: Reply[]) => queue.push(...replies),
    otherwise,
    close: async () => undefined,
  } as FakeProvider;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString();
      const request: Received = {
        method: req.method ?? "",
        path: req.url ?? "",
        headers: req.headers,
        body: text ? JSON.parse(text) : undefined,
      };
      received.push(request);
      const reply = queue.shift() ?? fake.otherwise(request);
      if ("hang" in reply) {
        hanging.add(res);
        res.on("close", () => hanging.delete(res));
        return;
      }
      res.writeHead(reply.status, { "content-type": "application/json", ...reply.headers });
      res.end(reply.json === undefined ? "" : JSON.stringify(reply.json));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.close = async () => {
    for (const res of hanging) res.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return fake;
}

/** The OpenAI Images API's answer carrying `png`. */
export function openaiImage(png: Buffer) {
  return { status: 200, json: { created: 1_700_000_000, data: [{ b64_json: png.toString("base64") }] } };
}

/** Gemini's generateContent answer carrying `png` (with a text part first, as the API may send). */
export function geminiImage(png: Buffer) {
  return {
    status: 200,
    json: {
      candidates: [
        {
          content: {
            role: "model",
            parts: [{ text: "Here is your image." }, { inlineData: { mimeType: "image/png", data: png.toString("base64") } }],
          },
          finishReason: "STOP",
        },
      ],
    },
  };
}
