import { DomainError, invalidArgument } from "../errors.js";
import type { Contract, HttpBinding, MethodInfo } from "./descriptors.js";
import type { HttpContext } from "./http.js";
import { fieldFromJson, messageFromJson, type ReadOptions } from "./json-in.js";
import { jsonObjects } from "./json-stream.js";
import { parseMultipart } from "./multipart.js";
import { setFromText } from "./params.js";
import { encodeMessage, schemaOf, type Plain } from "./schema.js";

/**
 * Builds request messages from HTTP requests by a method's google.api.http binding, in
 * grpc-gateway's order: the body (all of the request for `body: "*"`, or the one field it
 * names), then the path parameters, then (unless the body is the whole request) the query
 * parameters, skipping fields already bound by the path or the body. A PATCH whose body is one
 * field and whose request has an `update_mask` left empty gets a mask of the fields the body
 * sets.
 */

/** grpc-gateway v2's default marshaler skips unknown JSON fields (protojson DiscardUnknown). */
const READ: ReadOptions = { discardUnknown: true };

/** Reads the request message of a unary or server-streaming call. */
export async function requestFromHttp(contract: Contract, method: MethodInfo, binding: HttpBinding, ctx: HttpContext): Promise<Plain> {
  const typeName = method.requestType;
  const target: Plain = {};
  let bodyJson: unknown;
  if (binding.body) {
    const raw = await ctx.body();
    const contentType = ctx.req.headers["content-type"] ?? "";
    bodyJson = await readBody(contract, typeName, binding.body, target, raw, contentType);
  }
  bindPathAndQuery(contract, typeName, binding, ctx, target);
  if (binding.method === "PATCH" && binding.body && binding.body !== "*") fillUpdateMask(contract, typeName, binding, target, bodyJson);
  return target;
}

/**
 * Reads the request messages of a client-streaming call: the body is a stream of JSON objects
 * (newline-delimited JSON), each one message as the binding's body describes it; path
 * parameters apply to every message. Each message may be up to `limit` bytes.
 */
export async function* requestStreamFromHttp(
  contract: Contract,
  method: MethodInfo,
  binding: HttpBinding,
  ctx: HttpContext,
  limit: number,
): AsyncGenerator<Uint8Array> {
  let index = 0;
  for await (const text of jsonObjects(ctx.stream(), limit, ctx.budget)) {
    try {
      const target: Plain = {};
      readJson(contract, method.requestType, binding.body || "*", target, text);
      bindPathAndQuery(contract, method.requestType, binding, ctx, target);
      yield encodeMessage(contract, method.requestType, target);
    } catch (err) {
      if (err instanceof DomainError) {
        throw new DomainError(err.code, `message ${index} of the request stream: ${err.message}`, { violations: err.violations });
      }
      throw err;
    }
    index++;
  }
}

/** The MIME type of a Content-Type header, lower-cased, without parameters. */
function mediaType(header: string): string {
  return header.split(";")[0].trim().toLowerCase();
}

async function readBody(contract: Contract, typeName: string, body: string, target: Plain, raw: Buffer, header: string): Promise<unknown> {
  const type = mediaType(header);
  // The message the body fills: the request itself, or the message-typed field the body names.
  const slot = body === "*" ? undefined : schemaOf(contract, typeName).byName.get(body)!;
  const intoType = !slot ? typeName : slot.info.kind === "message" && !slot.info.repeated && !slot.info.mapKey ? slot.info.type : undefined;
  const into = () => (slot ? ((target[slot.key] ??= {}) as Plain) : target);
  if (intoType === "google.api.HttpBody") {
    Object.assign(into(), { contentType: header, data: raw });
    return undefined;
  }
  // `curl -d '{...}'` labels JSON as a form; grpc-gateway reads any body as JSON, so a
  // "form" whose text is a JSON object is read as JSON.
  const jsonAsForm = type === "application/x-www-form-urlencoded" && /^\s*[{[]/.test(raw.toString("utf8", 0, 64));
  if (!jsonAsForm && (type === "multipart/form-data" || type === "application/x-www-form-urlencoded")) {
    if (!intoType) throw new DomainError("INVALID_ARGUMENT", `the body of this route is the field ${body}: send it as JSON`);
    if (type === "multipart/form-data") await readMultipart(contract, intoType, into(), raw, header);
    else setAll(contract, intoType, into(), new URLSearchParams(raw.toString("utf8")), true);
    return undefined;
  }
  return readJson(contract, typeName, body, target, raw.toString("utf8"));
}

/** Reads a JSON body into the request (or the field `body` names); returns the parsed JSON. */
function readJson(contract: Contract, typeName: string, body: string, target: Plain, text: string): unknown {
  if (text.trim() === "") return undefined;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new DomainError("INVALID_ARGUMENT", `request body is not valid JSON: ${(err as Error).message}`);
  }
  if (body === "*") Object.assign(target, messageFromJson(contract, typeName, json, READ));
  else {
    const slot = schemaOf(contract, typeName).byName.get(body)!;
    if (json !== null) target[slot.key] = fieldFromJson(contract, slot.info, json, READ, slot.info.name);
  }
  return json;
}

/**
 * A multipart/form-data body: text parts are fields (by JSON or proto name; repeated fields as
 * repeated parts; message fields such as `meta` as JSON text), a file part fills the bytes field
 * of its name, or the message's only bytes field, and its filename fills an unset `file_name`.
 */
async function readMultipart(contract: Contract, typeName: string, target: Plain, raw: Buffer, header: string): Promise<void> {
  const parts = await parseMultipart(raw, header);
  const params = new URLSearchParams();
  for (const { name, value } of parts.fields) params.append(name, value);
  setAll(contract, typeName, target, params, true);
  const schema = schemaOf(contract, typeName);
  const bytesFields = schema.fields.filter((f) => f.info.kind === "scalar" && f.info.type === "bytes" && !f.info.mapKey);
  for (const file of parts.files) {
    const named = schema.byName.get(file.name);
    const slot = named?.info.type === "bytes" ? named : bytesFields.length === 1 ? bytesFields[0] : undefined;
    if (!slot) throw invalidArgument({ field: file.name, description: `is a file, but ${typeName} has no bytes field of that name` });
    if (slot.info.repeated) ((target[slot.key] ??= []) as Buffer[]).push(file.data);
    else if (target[slot.key] !== undefined) throw invalidArgument({ field: slot.info.name, description: "is given twice" });
    else target[slot.key] = file.data;
  }
  const fileName = schema.byName.get("file_name");
  const first = parts.files.find((f) => f.filename);
  if (first && fileName?.info.type === "string" && !fileName.info.repeated && target[fileName.key] === undefined) {
    target[fileName.key] = first.filename.split(/[\\/]/).pop();
  }
}

/** Sets every name of `params` (grouped, so repeated keys are one repeated field). */
function setAll(
  contract: Contract,
  typeName: string,
  target: Plain,
  params: URLSearchParams,
  jsonMessages: boolean,
  skip: string[] = [],
): void {
  for (const name of new Set(params.keys())) {
    setFromText(contract, typeName, target, name, params.getAll(name), { jsonMessages, strictNames: false }, skip);
  }
}

function bindPathAndQuery(contract: Contract, typeName: string, binding: HttpBinding, ctx: HttpContext, target: Plain): void {
  for (const param of binding.pathParams) {
    if (ctx.params[param] === "") throw invalidArgument({ field: param, description: "is empty: the path must give a value here" });
    setFromText(contract, typeName, target, param, [ctx.params[param]], { jsonMessages: false, strictNames: true });
  }
  if (binding.body === "*") return;
  const bound = binding.body ? [...binding.pathParams, binding.body] : binding.pathParams;
  setAll(contract, typeName, target, ctx.url.searchParams, false, bound);
}

/**
 * grpc-gateway's PATCH convenience: with no update_mask in the query, the mask names the fields
 * the JSON body sets. Only top-level fields are named (the updatable paths are whole fields),
 * and fields bound by the path or marked OUTPUT_ONLY or IDENTIFIER are left out, so a client
 * can send back an object it read.
 */
function fillUpdateMask(contract: Contract, typeName: string, binding: HttpBinding, target: Plain, bodyJson: unknown): void {
  const schema = schemaOf(contract, typeName);
  const mask = schema.byName.get("update_mask");
  if (!mask || mask.info.type !== "google.protobuf.FieldMask" || mask.info.repeated) return;
  if (((target[mask.key] as Plain | undefined)?.paths as string[] | undefined)?.length) return;
  if (typeof bodyJson !== "object" || bodyJson === null || Array.isArray(bodyJson)) return;
  const bodyField = schema.byName.get(binding.body)!.info;
  if (bodyField.kind !== "message") return;
  const bodySchema = schemaOf(contract, bodyField.type);
  const bound = binding.pathParams.filter((p) => p.startsWith(`${binding.body}.`)).map((p) => p.slice(binding.body.length + 1));
  const paths: string[] = [];
  for (const key of Object.keys(bodyJson)) {
    const field = bodySchema.byName.get(key)?.info;
    if (!field || bound.includes(field.name)) continue;
    if (field.behaviors.includes("OUTPUT_ONLY") || field.behaviors.includes("IDENTIFIER")) continue;
    paths.push(field.name);
  }
  target[mask.key] = { paths };
}
