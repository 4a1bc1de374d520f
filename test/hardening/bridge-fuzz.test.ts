// Malformed requests thrown at the HTTP/JSON bridge of a real glimpse, over raw sockets: bodies,
// multipart forms, query strings, headers, path parameters and framing (Content-Length lies,
// chunked bodies cut short, clients that abort or reset mid-body), on the native /v1 routes
// and the /compat surfaces, with and without a valid key. Whatever arrives, the bridge must
// answer it as the client's mistake (never a 5xx, except a 503 that says when to come back,
// grpc-gateway's documented 501 for a known path under another method, and a 504 when the
// client's own Grpc-Timeout ran out), show no internals in error bodies, answer every complete
// request, never let an error escape to the process, and answer the next good request.
//
// The properties are bounded (GLIMPSE_FUZZ_RUNS requests each, GLIMPSE_FUZZ_TIME_S at most); a failing run
// lists each kind of fault once with the shortest request that showed it. GLIMPSE_FUZZ_SEED
// replays a run.
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { GenerationServiceDefinition } from "../../src/gen/glimpse/generation/v1/generation_service.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import type { TestAccount, TestApp } from "../helpers/app.js";
import { distinctPng } from "../helpers/images.js";
import { startSearchTestApp } from "../helpers/search.js";
import { encodeRequest, rawExchange, show, type Delivery, type Framing, type RawAnswer, type RawRequest } from "./raw-http.js";
import { HTTP_BODY_MEMORY_FACTOR } from "../../src/server/byte-budget.js";

/** Requests per property (batches: a tenth as many), each followed by two liveness requests. */
const RUNS = Number(process.env.GLIMPSE_FUZZ_RUNS ?? 50);
/** Longest a property runs, in seconds (it stops early, passing on what it tried). */
const TIME_S = Number(process.env.GLIMPSE_FUZZ_TIME_S ?? 20);
/** A fixed seed reproduces a failing run (fast-check prints the seed it used). */
const SEED = process.env.GLIMPSE_FUZZ_SEED === undefined ? undefined : Number(process.env.GLIMPSE_FUZZ_SEED);
/** GLIMPSE_FUZZ_TRACE=1 prints each exchange with its time. */
const TRACE = process.env.GLIMPSE_FUZZ_TRACE === "1";
/** How long a complete request may take to be answered. */
const ANSWER_MS = 8000;
/** How long to wait for an answer to a request the client left incomplete. */
const INCOMPLETE_MS = 600;
/** Upload limit of the app under test. */
const MAX_UPLOAD = 256 * 1024;
/** The largest body the bridge reads (the upload as base64 in JSON, plus 1 MiB); larger is a 413. */
const MAX_BODY = Math.ceil((MAX_UPLOAD * 4) / 3) + 1024 * 1024;

let t: TestApp;
let user: TestAccount;
let imageId = "";
let generationId = "";
/** Errors that escaped to the process while the bridge was under test. */
const escaped: string[] = [];
const onUncaught = (error: Error) => escaped.push(`uncaughtException: ${error?.stack ?? String(error)}`);
const onUnhandled = (reason: unknown) => escaped.push(`unhandledRejection: ${(reason as Error)?.stack ?? String(reason)}`);

beforeAll(async () => {
  process.on("uncaughtException", onUncaught);
  process.on("unhandledRejection", onUnhandled);
  // The process-wide budget of body bytes holds exactly one largest body, so a single byte
  // that an ended request failed to give back shows as a 503 to the next largest body.
  t = await startSearchTestApp({ maxUploadBytes: MAX_UPLOAD, maxUploadBytesInFlight: MAX_BODY * HTTP_BODY_MEMORY_FACTOR });
  user = await t.newAccount({ credits: 1000 });
  const images = t.client(ImageServiceDefinition, user.key);
  imageId = (await images.uploadImage({ content: await distinctPng(1), tags: ["animal"], index: false })).image!.id;
  await images.uploadImage({ content: await distinctPng(2), index: true, waitForIndex: true });
  const generated = await t
    .client(GenerationServiceDefinition, user.key)
    .generateImage({ prompt: "a lighthouse", modelId: "local:gradient", requestId: "" });
  generationId = generated.generation!.id;
}, 60_000);

afterAll(async () => {
  await t?.close();
  process.off("uncaughtException", onUncaught);
  process.off("unhandledRejection", onUnhandled);
});

afterEach(() => {
  // Taken out, so one escaped error fails the test it happened in and not every later one.
  expect(escaped.splice(0), "errors escaped to the process").toEqual([]);
});

// --- judging answers -------------------------------------------------------------------------

/** What one exchange sent, for judging its answer and for the report. */
interface Sent {
  bytes: Buffer;
  /** Whether the request set its own deadline (Grpc-Timeout): a 504 is then its answer. */
  deadline: boolean;
  /** Whether the request was complete on the wire (so an answer is owed). */
  complete: boolean;
  delivery: Delivery;
}

/** Why an answer is wrong (a kind, and what was seen), or undefined when it is acceptable. */
function fault(sent: Sent, answer: RawAnswer): { kind: string; detail: string } | undefined {
  const { status } = answer;
  const text = answer.body.toString("utf8");
  if (status !== undefined && status >= 500) {
    const allowed =
      // Busy: the client is told when to come back.
      (status === 503 && answer.headers["retry-after"] !== undefined) ||
      // grpc-gateway's answer to a known path under another method (documented: JSON 501, code 12).
      (status === 501 && /^\{"code":12,/.test(text)) ||
      // The deadline the client set itself ran out.
      (status === 504 && sent.deadline);
    if (!allowed) return { kind: `answered ${status}`, detail: text.slice(0, 300) };
  }
  if (status !== undefined && status >= 400 && LEAKS.test(text)) {
    return { kind: `error body of a ${status} leaks internals`, detail: text.slice(0, 300) };
  }
  if (sent.complete && sent.delivery.kind === "send" && status === undefined) {
    return answer.ended === "timeout"
      ? { kind: "complete request left unanswered", detail: `no answer within ${ANSWER_MS} ms` }
      : { kind: "complete request left unanswered", detail: `connection ${answer.ended} without an answer ${answer.error ?? ""}` };
  }
  return undefined;
}

/** What an error body must never show a caller: stack frames, source paths, SQL, loopback addresses. */
const LEAKS = /\bat [\w.<>]+ \(|node_modules|\.ts:\d+|\b(SELECT|INSERT INTO|UPDATE \w+ SET)\b|remote_addr|127\.0\.0\.1:\d+/;

/** One kind of fault, with the shortest request that showed it and the routes it was seen on. */
interface Fault {
  detail: string;
  request: Buffer;
  how: string;
  routes: Set<string>;
  count: number;
}

/**
 * Faults found by the running test, one per kind. A property goes on after a fault (the
 * requests are independent) so one run reports every kind it meets, each with its shortest
 * request as the reproduction; the test fails at its end if any was found.
 */
const faults = new Map<string, Fault>();

function record(kind: string, detail: string, route: string, request: Buffer, how: string): void {
  const known = faults.get(kind);
  if (!known) {
    faults.set(kind, { detail, request, how, routes: new Set([route]), count: 1 });
    return;
  }
  known.count++;
  known.routes.add(route);
  if (request.length < known.request.length) Object.assign(known, { detail, request, how });
}

/** Fails with every fault the test found, each with its reproduction; clears them. */
function expectNoFaults(): void {
  const found = [...faults.entries()].map(
    ([kind, f]) =>
      `${kind} (${f.count}x, on ${[...f.routes].slice(0, 8).join(", ")}): ${f.detail}\n  shortest request (${f.how}): ${show(f.request, 1200)}`,
  );
  faults.clear();
  if (found.length > 0) throw new Error(`${found.length} kind(s) of fault:\n${found.join("\n")}`);
}

/**
 * The app still answers: /healthz, and a keyed GET /v1/images through gRPC and PostgreSQL. A
 * dead or wedged app ends the property at once: every later request would fail the same way.
 */
async function expectAlive(after: Buffer): Promise<void> {
  for (const [target, headers] of [
    ["/healthz", []],
    ["/v1/images?pageSize=1", [["authorization", `Bearer ${t.adminKey}`]]],
  ] as [string, [string, string][]][]) {
    const answer = await rawExchange(t.app.httpPort, encodeRequest({ method: "GET", target, headers, body: Buffer.alloc(0) }), { kind: "send" }, ANSWER_MS);
    if (answer.status !== 200) {
      throw new Error(`the app stopped answering: GET ${target} answered ${answer.status ?? answer.ended} after ${show(after, 1200)}`);
    }
  }
}

/** Sends one request, judges the answer, checks the app still answers, records what went wrong. */
async function exchange(route: string, request: RawRequest, framing: Framing, delivery: Delivery, alone = true): Promise<void> {
  const started = Date.now();
  const mark = escaped.length;
  const bytes = encodeRequest(request, framing);
  const how = `${framing.kind}, ${delivery.kind}${"at" in delivery ? ` at byte ${delivery.at}` : ""}`;
  const complete = framing.kind === "length" || framing.kind === "chunked" || framing.kind === "none";
  const answer = await rawExchange(t.app.httpPort, bytes, delivery, complete && delivery.kind === "send" ? ANSWER_MS : INCOMPLETE_MS);
  const deadline = request.headers.some(([name]) => /^grpc-timeout$/i.test(name));
  const wrong = fault({ bytes, complete, delivery, deadline }, answer);
  if (wrong) record(wrong.kind, wrong.detail, route, bytes, how);
  if (!alone) return;
  await expectAlive(bytes);
  judgeEscaped(mark, route, bytes, how);
  if (TRACE) console.log(`${Date.now() - started} ms ${answer.status ?? answer.ended} ${how} ${show(bytes, 160)}`);
}

/** Records what escaped to the process since `mark` (and takes it out of the recorder). */
function judgeEscaped(mark: number, route: string, bytes: Buffer, how: string): void {
  for (const error of escaped.splice(mark)) {
    const [first] = error.split("\n");
    record(`error escaped to the process: ${first}`, error.split("\n").slice(0, 8).join("\n"), route, bytes, how);
  }
}

/**
 * After a batch, a body of the largest size is still read (and refused as the 400 it is: not an
 * image), so the requests before it gave back every byte of the body budget they held.
 */
async function expectBudgetReturned(): Promise<void> {
  const body = Buffer.from(`{"content":"${"A".repeat(MAX_BODY - 14)}"}`);
  const bytes = encodeRequest({
    method: "POST",
    target: "/v1/images",
    headers: [["Authorization", `Bearer ${user.key}`], ["Content-Type", "application/json"]],
    body,
  });
  // A request the client has just cut off gives its bytes back once the server has seen the
  // connection close, which may be a moment later: a 503 then says when to come back, and a
  // client that waits that long is answered. Bytes never given back keep it 503.
  let answer = await rawExchange(t.app.httpPort, bytes, { kind: "send" }, ANSWER_MS);
  for (let retry = 0; retry < 3 && answer.status === 503 && answer.headers["retry-after"]; retry++) {
    await new Promise((resolve) => setTimeout(resolve, Number(answer.headers["retry-after"]) * 1000));
    answer = await rawExchange(t.app.httpPort, bytes, { kind: "send" }, ANSWER_MS);
  }
  expect(`${answer.status ?? answer.ended} ${answer.body.toString().slice(0, 200)}`).toMatch(/^400 /);
}

/** Runs a property for RUNS requests (or TIME_S), then fails with every fault it found. */
async function check(property: fc.IAsyncProperty<any>): Promise<void> {
  await fc.assert(property, { numRuns: RUNS, seed: SEED, endOnFailure: true, interruptAfterTimeLimit: TIME_S * 1000, markInterruptAsFailure: false });
  expectNoFaults();
  await expectBudgetReturned();
}

// --- what requests are made of ----------------------------------------------------------------

/** Every route of the bridge, with its path parameters as `{...}` (filled by `segment`). */
const ROUTES: [string, string][] = [
  ["GET", "/healthz"],
  ["GET", "/readyz"],
  ["GET", "/openapi.json"],
  ["GET", "/v1/images"],
  ["POST", "/v1/images"],
  ["GET", "/v1/images/{id}"],
  ["PATCH", "/v1/images/{id}"],
  ["DELETE", "/v1/images/{id}"],
  ["GET", "/v1/images/{id}/content"],
  ["HEAD", "/v1/images/{id}/content"],
  ["GET", "/v1/images/{id}/comments"],
  ["POST", "/v1/images/{id}/comments"],
  ["POST", "/v1/images/{id}/reactions"],
  ["PUT", "/v1/images/{id}/reactions/{kind}"],
  ["DELETE", "/v1/images/{id}/reactions/{kind}"],
  ["GET", "/v1/images/{id}/duplicates"],
  ["GET", "/v1/images:search"],
  ["POST", "/v1/images:search"],
  ["POST", "/v1/images:streamSearch"],
  ["POST", "/v1/images:batchUpload"],
  ["GET", "/v1/account"],
  ["GET", "/v1/account/usage"],
  ["GET", "/v1/account/keys"],
  ["POST", "/v1/account/keys"],
  ["DELETE", "/v1/account/keys/{id}"],
  ["GET", "/v1/accounts/{id}"],
  ["POST", "/v1/accounts"],
  ["POST", "/v1/accounts/{id}/credits:grant"],
  ["GET", "/v1/models"],
  ["GET", "/v1/generations"],
  ["POST", "/v1/generations"],
  ["GET", "/v1/generations/{id}"],
  ["GET", "/compat/miki/images"],
  ["GET", "/compat/miki/images/{id}"],
  ["GET", "/compat/civitai/api/v1/images"],
  ["POST", "/compat/roboflow/{id}/{id}/search"],
  ["POST", "/compat/reka/v1/images/upload"],
  ["POST", "/compat/reka/v1/images/search"],
  ["POST", "/compat/getimages/api/v1/images/generate"],
  ["GET", "/compat/getimages/api/v1/images"],
  ["GET", "/compat/getimages/api/v1/images/{id}"],
  ["GET", "/compat/getimages/api/v1/account"],
  ["GET", "/compat/getimages/api/v1/usage"],
  ["GET", "/compat/getimages/openapi.json"],
  ["PUT", "/compat/getimages/{id}"],
];
const BODY_ROUTES = ROUTES.filter(([m]) => m === "POST" || m === "PATCH" || m === "PUT");
const UPLOAD_ROUTES: [string, string][] = [
  ["POST", "/v1/images"],
  ["POST", "/compat/reka/v1/images/upload"],
  ["POST", "/v1/images:search"],
  ["PATCH", "/v1/images/{id}"],
  ["POST", "/v1/generations"],
  ["POST", "/compat/roboflow/{id}/{id}/search"],
];

/** Field names the requests use (JSON and proto spellings), and names that mean nothing. */
const FIELDS = [
  "content", "fileName", "file_name", "tags", "meta", "index", "waitForIndex", "visibility", "requestId", "prompt",
  "modelId", "model_id", "aspectRatio", "style", "limit", "offset", "threshold", "pageSize", "page_size", "pageToken",
  "cursor", "page", "zeroBasedPage", "sort", "filter", "filter.tags", "filter.tagsQuery", "filter.period", "filter.nsfw",
  "fields", "ef", "hybrid", "likeImageId", "likeImageContent", "imageId", "image", "image.id", "image.tags",
  "updateMask", "text", "kind", "amount", "accountId", "email", "initialCredits", "createApiKey", "name",
  "rateLimitPerMinute", "view", "query", "max_results", "images", "metadata", "nsfw", "period", "username",
  "postId", "modelVersionId", "tags_query", "unknownField", "", "__proto__", "constructor", "a.b.c", "filter..tags",
];

/** Values that have broken parsers before: huge and odd numbers, escapes, NUL, empty, enums. */
const ODD_VALUES = [
  "", "0", "-1", "1.5", "1e400", "-1e400", "NaN", "Infinity", "99999999999999999999999999", "18446744073709551616",
  "9223372036854775808", "-9223372036854775809", "0x1f", "1_000", " 7 ", "true", "null", "%", "%ZZ", "%0", "%00",
  "%C0%AF", "%FF%FE", "\u0000", "a\u0000b", "😀", "\ud800", "IMAGE_SORT_NEWEST", "IMAGE_SORT_BOGUS", "PERIOD_WEEK",
  "VISIBILITY_PUBLIC", "local:gradient", "16:9", "animal+dog+-cat", "[]", "{}", '{"a":', "x".repeat(5000),
];

/** A path parameter: an id that exists, odd ids, escapes and overlong text. */
const segment = fc.oneof(
  fc.constantFrom(
    "__image__", "__generation__", "0", "-1", "abc", "%00", "%ZZ", "%", "%2F", "..", "%2e%2e", "9".repeat(400),
    "18446744073709551616", "1e3", "a%00b", "%C0%AF", "%E2%80%AE", "%F0%9F%98%80", "%ED%A0%80", "REACTION_KIND_LIKE",
    "00000000-0000-0000-0000-000000000000", "x".repeat(5000),
  ),
  fc.string({ maxLength: 20 }).map(pct),
  fc.bigInt({ min: 0n, max: 2n ** 70n }).map(String),
);

/** Percent-encodes the UTF-8 bytes of `s` (lone surrogates too, as U+FFFD) except unreserved characters. */
function pct(s: string): string {
  let out = "";
  for (const byte of Buffer.from(s, "utf8")) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9\-._~]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

function fillPath(template: string, values: string[]): string {
  let i = 0;
  return template.replace(/\{[^}]+\}/g, () => {
    const value = values[i++ % values.length] ?? "1";
    return value === "__image__" ? imageId : value === "__generation__" ? generationId : value;
  });
}

/** A query string: known and unknown names, odd values, raw or percent-encoded, keys repeated. */
const query = fc
  .array(
    fc.record({
      name: fc.oneof(fc.constantFrom(...FIELDS), fc.string({ maxLength: 12 })),
      value: fc.oneof(fc.constantFrom(...ODD_VALUES), fc.string({ maxLength: 30 }), fc.bigInt().map(String)),
      raw: fc.boolean(),
      repeat: fc.nat({ max: 3 }),
    }),
    { maxLength: 8 },
  )
  .map((pairs) => {
    const parts: string[] = [];
    for (const p of pairs) {
      // Raw text may carry bad escapes; bytes the request line cannot hold are encoded anyway.
      const enc = (s: string) => (p.raw ? s.replace(/[\s#\x00-\x1f\x7f-\uffff]/g, pct) : pct(s));
      for (let i = 0; i <= p.repeat; i++) parts.push(`${enc(p.name)}=${enc(p.value)}`);
    }
    return parts.length ? `?${parts.join("&")}` : "";
  });

/** The credentials a request carries: none, a valid key (admin or not), both at once, or junk. */
const auth = fc.constantFrom(
  "none", "admin", "user", "user-x-api-key", "both", "two-authorization", "two-x-api-key", "metadata-auth",
  "bearer-junk", "bearer-empty", "basic", "non-ascii", "revoked-looking",
);

function authHeaders(kind: string): [string, string][] {
  switch (kind) {
    case "admin":
      return [["Authorization", `Bearer ${t.adminKey}`]];
    case "user":
      return [["Authorization", `Bearer ${user.key}`]];
    case "user-x-api-key":
      return [["X-Api-Key", user.key]];
    case "both":
      return [["Authorization", `Bearer ${t.adminKey}`], ["X-Api-Key", user.key]];
    case "two-authorization":
      return [["Authorization", `Bearer ${user.key}`], ["Authorization", `Bearer ${t.adminKey}`]];
    case "two-x-api-key":
      return [["X-Api-Key", user.key], ["X-Api-Key", t.adminKey]];
    case "metadata-auth":
      return [["Grpc-Metadata-Authorization", `Bearer ${user.key}`]];
    case "bearer-junk":
      return [["Authorization", "Bearer glk_not-a-key"]];
    case "bearer-empty":
      return [["Authorization", "Bearer "]];
    case "basic":
      return [["Authorization", "Basic dXNlcjpwYXNz"]];
    case "non-ascii":
      return [["Authorization", `Bearer ${user.key}\xff\xfe`]];
    case "revoked-looking":
      return [["X-Api-Key", `${user.key.slice(0, 12)}${"A".repeat(40)}`]];
    default:
      return [];
  }
}

const CONTENT_TYPES = [
  undefined, "application/json", "application/json; charset=utf-16", "application/json; charset=\"", "text/plain",
  "application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary=",
  "multipart/form-data; boundary=AAA", `multipart/form-data; boundary=${"b".repeat(200)}`, "application/x-ndjson",
  "*/*", ";;;", "application/octet-stream", "image/png", "multipart/mixed; boundary=AAA", "MULTIPART/FORM-DATA; BOUNDARY=AAA",
  "multipart/form-data; boundary=\"AAA\"; charset=bogus", "application/grpc", "application/json\u0000",
];

/** Extra headers: deadlines, gRPC metadata (reserved names too), request ids, caching, ranges. */
const extraHeader: fc.Arbitrary<[string, string]> = fc.oneof(
  fc.tuple(
    fc.constantFrom("Grpc-Timeout"),
    fc.constantFrom("1S", "5S", "0m", "1n", "99999999H", "abc", "-1S", "1.5S", "", "100000000S"),
  ),
  fc.tuple(
    fc
      .constantFrom(
        "content-type", "te", "user-agent", "host", "x-api-key", "x-request-id", "grpc-timeout", "grpc-encoding",
        "grpc-status", "foo-bin", "Foo", "a.b", "x".repeat(300), "connection", "transfer-encoding", "keep-alive",
        "upgrade", "proxy-connection", ":path", "authorization-bin", "", "-", "a b",
      )
      .map((n) => `Grpc-Metadata-${n}`),
    fc.oneof(fc.constantFrom("x", "", "!!!", "AAAA", "\xff", "a".repeat(10_000), "close", "chunked", "trailers"), fc.string({ maxLength: 20 })),
  ),
  fc.tuple(fc.constantFrom("X-Request-Id"), fc.constantFrom("abc", "", "x".repeat(500), "a b", "\xff", "../..")),
  fc.tuple(fc.constantFrom("If-None-Match", "If-Modified-Since", "If-Range", "Range"), fc.constantFrom("*", "bytes=0-0", "bytes=-1", "bytes=5-1", "bytes=0-1,2-3", "bytes=99999999999999999999-", "Mon, 32 Foo", '"x"', "")),
  fc.tuple(fc.constantFrom("Accept", "Accept-Encoding", "Expect", "Content-Encoding"), fc.constantFrom("*/*", "gzip", "100-continue", "br, gzip", "identity;q=0", "x")),
);

/** A raw header value the request line framing allows (no CR, LF); other control bytes stay. */
const headerSafe = (s: string) => s.replace(/[\r\n]/g, " ");

/** JSON texts: valid and not, cut short, nested deep, huge numbers, wrong types. */
const jsonBody: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a)),
  fc.tuple(fc.jsonValue(), fc.nat()).map(([v, cut]) => {
    const text = JSON.stringify(v) ?? "";
    return Buffer.from(text.slice(0, text.length ? cut % text.length : 0));
  }),
  fc.tuple(fc.constantFrom("[", '{"a":', '{"meta":', '{"filter":', '{"image":{"meta":', '{"metadata":'), fc.integer({ min: 50, max: 100_000 }), fc.boolean()).map(
    ([open, depth, closed]) => {
      const inner = open === "[" ? "[".repeat(depth) + (closed ? "]".repeat(depth) : "") : `${open}${'{"a":'.repeat(depth)}1${closed ? "}".repeat(depth + 1) : ""}`;
      return Buffer.from(inner);
    },
  ),
  fc.dictionary(fc.constantFrom(...FIELDS), fc.oneof(fc.jsonValue(), fc.constantFrom(...ODD_VALUES)), { maxKeys: 6 }).map((o) => Buffer.from(JSON.stringify(o))),
  fc.dictionary(fc.constantFrom(...FIELDS), fc.constantFrom("1e400", "-1e400", "99999999999999999999999999999", "-0", "1.0000000000000002", "4294967296", "-2147483649", "1e-400", "[1e400]", '"1e400"'), { minKeys: 1, maxKeys: 4 }).map(
    (o) => Buffer.from(`{${Object.entries(o).map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`),
  ),
  fc.array(fc.dictionary(fc.constantFrom(...FIELDS), fc.jsonValue(), { maxKeys: 4 }), { maxLength: 5 }).map((lines) =>
    Buffer.from(lines.map((l) => JSON.stringify(l)).join("\n")),
  ),
  fc.constantFrom(
    Buffer.from('{"content":"!!!notbase64","fileName":"a.png"}'),
    Buffer.from('{"prompt":"x","modelId":"local:gradient","aspectRatio":"99:1"}'),
    Buffer.from('{"query":"red","max_results":1e400}'),
    Buffer.from('{"__proto__":{"admin":true},"constructor":{"prototype":{"x":1}}}'),
    Buffer.from("\ufeff{}"),
    Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]),
    Buffer.from('{"a":"\\ud800"}'),
    Buffer.alloc(0),
  ),
);

/** Framing and delivery: mostly exact, sometimes lying, cut short, aborted or reset. */
const framing: fc.Arbitrary<Framing> = fc.oneof(
  { weight: 6, arbitrary: fc.constant<Framing>({ kind: "length" }) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 512 }).map<Framing>((chunkSize) => ({ kind: "chunked", chunkSize })) },
  { weight: 1, arbitrary: fc.record({ chunkSize: fc.integer({ min: 1, max: 512 }), keep: fc.nat({ max: 4096 }) }).map<Framing>((r) => ({ kind: "chunked-cut", ...r })) },
  // Up to about a whole body declared and never sent: what the budget reserves up front.
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 1_000_000 }).map<Framing>((extra) => ({ kind: "length-more", extra })) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 100 }).map<Framing>((missing) => ({ kind: "length-less", missing })) },
  { weight: 1, arbitrary: fc.constant<Framing>({ kind: "length-and-chunked" }) },
);
const delivery: fc.Arbitrary<Delivery> = fc.oneof(
  { weight: 6, arbitrary: fc.constant<Delivery>({ kind: "send" }) },
  { weight: 2, arbitrary: fc.constant<Delivery>({ kind: "half-close" }) },
  { weight: 1, arbitrary: fc.nat({ max: 2000 }).map<Delivery>((at) => ({ kind: "abort", at })) },
  { weight: 1, arbitrary: fc.nat({ max: 2000 }).map<Delivery>((at) => ({ kind: "reset", at })) },
);

// --- multipart bodies -------------------------------------------------------------------------

interface Part {
  name: string;
  filename?: string;
  type?: string;
  data: Buffer;
}

const part: fc.Arbitrary<Part> = fc.record(
  {
    name: fc.oneof(fc.constantFrom("content", "file", "images", "tags", "fileName", "file_name", "index", "metadata", "meta", "visibility", "likeImageContent", "prompt", "image.tags", ""), fc.string({ maxLength: 10 })),
    filename: fc.oneof({ weight: 1, arbitrary: fc.constant(undefined) }, { weight: 3, arbitrary: fc.constantFrom("a.jpg", "", "../../etc/passwd", "a\\b.png", "😀.png", "x".repeat(300)) }),
    type: fc.oneof(fc.constant(undefined), fc.constantFrom("image/png", "text/plain", "application/json", "", ";;")),
    data: fc.oneof(
      fc.uint8Array({ maxLength: 512 }).map((a) => Buffer.from(a)),
      fc.constantFrom("true", "false", '{"requests":[{"indexing_config":{"index":"yes"}}]}', '{"a":', "VISIBILITY_PUBLIC", "a,b").map((s) => Buffer.from(s)),
      fc.nat({ max: 50 }).map(() => PNG),
    ),
  },
  { requiredKeys: ["name", "data"] },
);

let PNG: Buffer = Buffer.alloc(0);
beforeAll(async () => {
  PNG = await distinctPng(99);
});

/** Ways a multipart body goes wrong. */
type Mangle =
  | { kind: "none" }
  | { kind: "cut"; at: number }
  | { kind: "no-close" }
  | { kind: "part-without-end" }
  | { kind: "bad-header"; line: string }
  | { kind: "preamble"; text: string }
  | { kind: "many"; count: number };

const mangle: fc.Arbitrary<Mangle> = fc.oneof(
  fc.constant<Mangle>({ kind: "none" }),
  fc.nat({ max: 4000 }).map<Mangle>((at) => ({ kind: "cut", at })),
  fc.constant<Mangle>({ kind: "no-close" }),
  fc.constant<Mangle>({ kind: "part-without-end" }),
  fc.constantFrom("Content-Disposition", "Content-Disposition: form-data", "Content-Disposition: attachment; name=x", "garbage", `X-${"h".repeat(20_000)}: 1`, 'Content-Disposition: form-data; name="a"; filename*=UTF-8\'\'%ZZ', "Content-Type: image/png; charset=\u0000").map<Mangle>((line) => ({ kind: "bad-header", line })),
  fc.constantFrom("preamble\r\n", "--", "\r\n\r\n", "--AAAA\r\n").map<Mangle>((text) => ({ kind: "preamble", text })),
  fc.integer({ min: 50, max: 3000 }).map<Mangle>((count) => ({ kind: "many", count })),
);

function multipartBody(boundary: string, parts: Part[], how: Mangle): Buffer {
  const pieces: Buffer[] = [];
  if (how.kind === "preamble") pieces.push(Buffer.from(how.text));
  const all = how.kind === "many" ? Array.from({ length: how.count }, (_, i) => ({ name: `f${i % 7}`, data: Buffer.from(String(i)) }) as Part) : parts;
  all.forEach((p, i) => {
    const head = [`--${boundary}`];
    const filename = p.filename === undefined ? "" : `; filename="${p.filename}"`;
    head.push(`Content-Disposition: form-data; name="${p.name}"${filename}`);
    if (p.type !== undefined) head.push(`Content-Type: ${p.type}`);
    if (how.kind === "bad-header" && i === 0) head[1] = how.line;
    pieces.push(Buffer.from(`${head.join("\r\n")}\r\n\r\n`), p.data);
    if (!(how.kind === "part-without-end" && i === all.length - 1)) pieces.push(Buffer.from("\r\n"));
  });
  if (how.kind !== "no-close" && how.kind !== "part-without-end") pieces.push(Buffer.from(`--${boundary}--\r\n`));
  const body = Buffer.concat(pieces);
  return how.kind === "cut" ? body.subarray(0, how.at % (body.length + 1)) : body;
}

// --- the properties ---------------------------------------------------------------------------

describe("the HTTP bridge under malformed requests", () => {
  it("answers malformed bodies on every body route as the client's mistake", async () => {
    await check(
      fc.asyncProperty(fc.constantFrom(...BODY_ROUTES), fc.array(segment, { minLength: 2, maxLength: 2 }), auth, fc.constantFrom(...CONTENT_TYPES), jsonBody, framing, delivery, async ([method, template], seg, key, type, body, frame, how) => {
        const headers = authHeaders(key);
        if (type !== undefined) headers.push(["Content-Type", type]);
        await exchange(`${method} ${template}`, { method, target: fillPath(template, seg), headers, body }, frame, how);
      }),
    );
  });

  it("answers malformed multipart bodies on the upload routes as the client's mistake", async () => {
    await check(
      fc.asyncProperty(
        fc.constantFrom(...UPLOAD_ROUTES),
        auth,
        fc.constantFrom("AAA", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "b".repeat(70), "a b", "é"),
        fc.oneof(
          { weight: 6, arbitrary: fc.constant("same" as const) },
          { weight: 1, arbitrary: fc.constantFrom("other" as const, "none" as const, "empty" as const, "quoted" as const) },
        ),
        fc.array(part, { maxLength: 6 }),
        mangle,
        framing,
        delivery,
        async ([method, template], key, boundary, declared, parts, how, frame, send) => {
          const headers = authHeaders(key);
          const param = { same: `; boundary=${boundary}`, other: "; boundary=ZZZ", none: "", empty: "; boundary=", quoted: `; boundary="${boundary}"` }[declared];
          headers.push(["Content-Type", `multipart/form-data${param}`]);
          const body = multipartBody(boundary, parts, how);
          await exchange(`${method} ${template}`, { method, target: fillPath(template, [imageId]), headers, body }, frame, send);
        },
      ),
    );
  });

  it("answers odd query strings and path parameters on every route as the client's mistake", async () => {
    await check(
      fc.asyncProperty(fc.constantFrom(...ROUTES), fc.array(segment, { minLength: 2, maxLength: 2 }), query, auth, async ([method, template], seg, q, key) => {
        await exchange(`${method} ${template}`, { method, target: fillPath(template, seg) + q, headers: authHeaders(key), body: Buffer.alloc(0) }, { kind: method === "GET" || method === "HEAD" ? "none" : "length" }, { kind: "send" });
      }),
    );
  });

  it("answers odd headers on every route as the client's mistake", async () => {
    await check(
      fc.asyncProperty(fc.constantFrom(...ROUTES), auth, fc.constantFrom(...CONTENT_TYPES), fc.array(extraHeader, { maxLength: 5 }), jsonBody, framing, async ([method, template], key, type, extra, body, frame) => {
        const headers = authHeaders(key);
        if (type !== undefined) headers.push(["Content-Type", type]);
        for (const [name, value] of extra) headers.push([headerSafe(name), headerSafe(value)]);
        const hasBody = method !== "GET" && method !== "HEAD" && method !== "DELETE";
        await exchange(`${method} ${template}`, { method, target: fillPath(template, [imageId, "REACTION_KIND_LIKE"]), headers, body: hasBody ? body : Buffer.alloc(0) }, hasBody ? frame : { kind: "none" }, { kind: "send" });
      }),
    );
  });

  it("answers batches of malformed requests arriving together, and stays whole after each", async () => {
    const one = fc.record({
      route: fc.constantFrom(...BODY_ROUTES, ...UPLOAD_ROUTES),
      seg: fc.array(segment, { minLength: 2, maxLength: 2 }),
      key: auth,
      type: fc.constantFrom(...CONTENT_TYPES),
      body: fc.oneof(jsonBody, fc.tuple(fc.array(part, { maxLength: 4 }), mangle).map(([parts, how]) => multipartBody("AAA", parts, how))),
      frame: framing,
      how: delivery,
    });
    await fc.assert(
      fc.asyncProperty(fc.array(one, { minLength: 5, maxLength: 25 }), async (batch) => {
        const mark = escaped.length;
        await Promise.all(
          batch.map(({ route: [method, template], seg, key, type, body, frame, how }) => {
            const headers = authHeaders(key);
            if (type !== undefined) headers.push(["Content-Type", type]);
            return exchange(`${method} ${template}`, { method, target: fillPath(template, seg), headers, body }, frame, how, false);
          }),
        );
        const all = Buffer.from(`a batch of ${batch.length}`);
        await expectAlive(all);
        judgeEscaped(mark, "a batch", all, "together");
      }),
      { numRuns: Math.max(2, Math.ceil(RUNS / 10)), seed: SEED, endOnFailure: true, interruptAfterTimeLimit: TIME_S * 1000, markInterruptAsFailure: false },
    );
    expectNoFaults();
    await expectBudgetReturned();
  });

  it("answers requests that are not HTTP, or barely, without harm", async () => {
    const garbage = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 1024 }).map((a) => Buffer.from(a)),
      fc.tuple(fc.constantFrom("GET", "POST", "BREW", "G\u0000T", "", "CONNECT", "OPTIONS", "TRACE", "PRI"), fc.constantFrom("/v1/images", "*", "http://x/v1/images", "v1/images", "/v1/images/%00", "//v1//images", "/v1/images/\u0000", `/${"a".repeat(70_000)}`, "/v1/images?%", "/compat/reka/v1/images/upload#x"), fc.constantFrom("HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", "")).map(
        ([m, target, version]) => Buffer.from(`${m} ${target} ${version}\r\nHost: x\r\nConnection: close\r\n\r\n`, "latin1"),
      ),
      fc.constantFrom(
        Buffer.from("POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcde"),
        Buffer.from("POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        Buffer.from("POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        Buffer.from("POST /v1/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        Buffer.from("POST /v1/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n"),
        Buffer.from("POST /v1/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        Buffer.from("GET /v1/images HTTP/1.1\r\nHost: x\r\n bad continuation\r\n\r\n"),
        Buffer.from("GET /v1/images HTTP/1.1\r\nHost: x\r\nX: \u0000\r\n\r\n"),
        Buffer.from("GET /v1/images HTTP/1.1\nHost: x\n\n"),
        Buffer.from(`GET /v1/images HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`),
        Buffer.from(`GET /v1/images HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 3000 }, (_, i) => `X-${i}: 1`).join("\r\n")}\r\n\r\n`),
        Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Buffer.from("GET /v1/images HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        Buffer.from("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n"),
      ),
    );
    await check(
      fc.asyncProperty(garbage, fc.constantFrom<Delivery>({ kind: "send" }, { kind: "half-close" }), async (bytes, how) => {
        const mark = escaped.length;
        const answer = await rawExchange(t.app.httpPort, bytes, how, INCOMPLETE_MS);
        const route = bytes.subarray(0, 40).toString("latin1").split(" ").slice(0, 2).join(" ");
        const wrong = fault({ bytes, complete: false, delivery: how, deadline: false }, answer);
        if (wrong) record(wrong.kind, wrong.detail, route, bytes, how.kind);
        await expectAlive(bytes);
        judgeEscaped(mark, route, bytes, how.kind);
      }),
    );
  });

  it("answers a body over the limit with a 413 and stays up", async () => {
    const body = Buffer.alloc(Math.ceil((MAX_UPLOAD * 4) / 3) + 2 * 1024 * 1024, 0x41);
    for (const [method, target] of [["POST", "/v1/images"], ["POST", "/compat/reka/v1/images/upload"], ["POST", "/v1/images:batchUpload"]]) {
      const bytes = encodeRequest({ method, target, headers: [["Authorization", `Bearer ${user.key}`], ["Content-Type", target.includes("reka") ? "multipart/form-data; boundary=AAA" : "application/json"]], body });
      const answer = await rawExchange(t.app.httpPort, bytes, { kind: "send" }, ANSWER_MS);
      // The server may close before the client has written everything; then the answer can be lost to a reset.
      if (answer.status !== undefined) expect(answer.status, `${target}: ${answer.body.toString()}`).toBeLessThan(500);
      await expectAlive(bytes.subarray(0, 300));
    }
    await expectBudgetReturned();
  });
});

// --- regressions: each has broken the bridge, or would, on its own -----------------------------

describe("the HTTP bridge's regressions", () => {
  const TRUNCATED = Buffer.from('--AAA\r\nContent-Disposition: form-data; name="content"; filename="a.jpg"\r\n\r\nxxxx');
  const UPLOADS: [string, (key: string) => [string, string]][] = [
    ["/v1/images", (key) => ["Authorization", `Bearer ${key}`]],
    ["/compat/reka/v1/images/upload", (key) => ["X-Api-Key", key]],
  ];

  it("answers a request whose Grpc-Metadata names an HTTP/2 connection header, and others meanwhile", async () => {
    for (const name of ["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"]) {
      const bad = encodeRequest({
        method: "GET",
        target: "/v1/images?pageSize=1",
        headers: [["Authorization", `Bearer ${user.key}`], [`Grpc-Metadata-${name}`, "x"]],
        body: Buffer.alloc(0),
      });
      const good = encodeRequest({ method: "GET", target: "/v1/images?pageSize=1", headers: [["Authorization", `Bearer ${user.key}`]], body: Buffer.alloc(0) });
      const [badAnswer, goodAnswer] = await Promise.all([
        rawExchange(t.app.httpPort, bad, { kind: "send" }, ANSWER_MS),
        rawExchange(t.app.httpPort, good, { kind: "send" }, ANSWER_MS),
      ]);
      expect({ name, status: badAnswer.status ?? badAnswer.ended }).toEqual({ name, status: expect.any(Number) });
      expect(badAnswer.status).toBeLessThan(500);
      expect({ name, status: goodAnswer.status ?? goodAnswer.ended }).toEqual({ name, status: 200 });
    }
  });

  it("does not show the loopback gRPC address when the caller's deadline runs out", async () => {
    // Deadlines that run out at different points of the loopback call (before and after a
    // connection is picked); whichever answers 504 must say no more than that.
    const seen: string[] = [];
    for (const timeout of ["1n", "1u", "1m", "2m", "5m", "20m"]) {
      for (const target of ["/v1/account", "/v1/images?pageSize=5", "/v1/images:search?prompt=red"]) {
        const bytes = encodeRequest({
          method: "GET",
          target,
          headers: [["Authorization", `Bearer ${user.key}`], ["Grpc-Timeout", timeout]],
          body: Buffer.alloc(0),
        });
        const answer = await rawExchange(t.app.httpPort, bytes, { kind: "send" }, ANSWER_MS);
        const text = answer.body.toString();
        if (answer.status !== 200 && answer.status !== 504) seen.push(`${target} (${timeout}): ${answer.status ?? answer.ended} ${text}`);
        // A call that beat its deadline answers images whose URLs name the public address.
        if (answer.status !== 200 && LEAKS.test(text)) seen.push(`${target} (${timeout}): ${text}`);
      }
    }
    expect(seen).toEqual([]);
  });

  for (const [target, keyHeader] of UPLOADS) {
    describe(`POST ${target}`, () => {
      const request = (body: Buffer): RawRequest => ({
        method: "POST",
        target,
        headers: [keyHeader(user.key), ["Content-Type", "multipart/form-data; boundary=AAA"]],
        body,
      });

      it("answers a multipart body whose file part is cut short with a 400", async () => {
        const bytes = encodeRequest(request(TRUNCATED));
        const answer = await rawExchange(t.app.httpPort, bytes, { kind: "send" }, ANSWER_MS);
        expect(answer.status, answer.raw.toString()).toBe(400);
        await expectAlive(bytes);
      });

      it("stays up when the client aborts mid-body", async () => {
        const body = Buffer.concat([TRUNCATED, Buffer.alloc(64 * 1024, 0x78)]);
        const bytes = encodeRequest(request(body));
        await rawExchange(t.app.httpPort, bytes, { kind: "abort", at: bytes.length - body.length + 1000 });
        await expectAlive(bytes);
      });

      it("stays up when the connection is reset mid-body", async () => {
        const body = Buffer.concat([TRUNCATED, Buffer.alloc(64 * 1024, 0x78)]);
        const bytes = encodeRequest(request(body));
        await rawExchange(t.app.httpPort, bytes, { kind: "reset", at: bytes.length - body.length + 1000 });
        await expectAlive(bytes);
      });

      it("stays up when a chunked body stops halfway", async () => {
        const full = Buffer.concat([TRUNCATED, Buffer.from("\r\n--AAA--\r\n")]);
        const bytes = encodeRequest(request(full), { kind: "chunked-cut", chunkSize: 16, keep: 40 });
        const answer = await rawExchange(t.app.httpPort, bytes, { kind: "half-close" }, INCOMPLETE_MS);
        if (answer.status !== undefined) expect(answer.status).toBeLessThan(500);
        const aborted = await rawExchange(t.app.httpPort, bytes, { kind: "abort", at: bytes.length });
        expect(aborted.status).toBeUndefined();
        await expectAlive(bytes);
      });

      it("answers a whole upload after all that", async () => {
        const body = Buffer.concat([
          Buffer.from('--AAA\r\nContent-Disposition: form-data; name="content"; filename="ok.png"\r\nContent-Type: image/png\r\n\r\n'),
          await distinctPng(target.length),
          Buffer.from("\r\n--AAA--\r\n"),
        ]);
        const answer = await rawExchange(t.app.httpPort, encodeRequest(request(body)), { kind: "send" }, ANSWER_MS);
        expect(answer.status, answer.body.toString()).toBe(200);
        await expectBudgetReturned();
      });
    });
  }
});
