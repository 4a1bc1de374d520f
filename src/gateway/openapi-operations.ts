import { Status } from "nice-grpc-common";
import { CONTENT_PATH, contentOperationExtras } from "./content.js";
import type { Contract, FieldInfo, HttpBinding, MessageInfo, MethodInfo, ServiceInfo } from "./descriptors.js";
import { httpStatusOf } from "./errors.js";
import { docText, refTo, type SchemaSet, type Schema } from "./openapi-schemas.js";

/** The HTTP status the bridge answers for each gRPC code but OK, by the code's name. */
const HTTP_STATUS: Record<string, number> = Object.fromEntries(
  Object.entries(Status)
    .filter((entry): entry is [string, number] => typeof entry[1] === "number" && entry[1] !== Status.OK)
    .map(([name, code]) => [name, httpStatusOf(code)]),
);

/**
 * Every call needs a key and may carry a `Grpc-Timeout` header, so every route may answer
 * these whatever its comment lists (401, 429, and 400 for a malformed header).
 */
const ALWAYS = ["UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"];

/** The error body of every route. */
export const STATUS_SCHEMA = "google.rpc.Status";
/** The error body of a streaming route whose call failed before its first message. */
export const STREAM_ERROR_SCHEMA = "StreamError";
const HTTP_BODY = "google.api.HttpBody";

/**
 * The `paths` object. Path variables are named by their JSON names, field by field
 * (`{keyId}`, `{image.id}`), as grpc-gateway's OpenAPI generator names them, so clients
 * generated from this document match those generated for grpc-gateway. Templates that differ
 * only in their variable names (`/v1/images/{id}` for GetImage, `/v1/images/{image.id}` for
 * UpdateImage) stay two paths, as there; they serve the same URLs.
 */
export class PathTable {
  readonly items: Record<string, Record<string, unknown>> = {};

  /**
   * The OpenAPI path for a template, and the parameter name of each of its variables;
   * `jsonPath` gives a variable's (proto field path's) JSON name.
   */
  resolve(template: string, jsonPath: (variable: string) => string): { path: string; names: Map<string, string> } {
    const names = new Map<string, string>();
    const path = template.replace(/\{([^}=]+)(?:=[^}]*)?\}/g, (_, variable: string) => {
      names.set(variable, jsonPath(variable));
      return `{${names.get(variable)}}`;
    });
    return { path, names };
  }

  add(path: string, method: string, operation: object): void {
    (this.items[path] ??= {})[method] = operation;
  }
}

/**
 * Adds the operation for one binding of an RPC: path parameters from the template, query
 * parameters for the rest of the request when the body is not `*`, the request body, the
 * answer (JSON, raw bytes for google.api.HttpBody, NDJSON for server streaming) and the error
 * statuses the RPC's comment names. Additional bindings get `_2`, `_3`... operation ids.
 */
export function addOperation(
  contract: Contract,
  schemas: SchemaSet,
  paths: PathTable,
  service: ServiceInfo,
  method: MethodInfo,
  binding: HttpBinding,
  index: number,
): void {
  const input = contract.messages.get(method.requestType);
  if (!input) throw new Error(`${method.name}: unknown request type ${method.requestType}`);
  const { path, names } = paths.resolve(binding.template, (variable) => jsonPathOf(contract, input, variable));
  const bound = binding.pathParams;
  const parameters: Schema[] = [];
  for (const [variable, name] of names) {
    const field = fieldAt(contract, input, variable);
    const parameter: Schema = { name, in: "path", required: true };
    if (field.comment) parameter.description = docText(field.comment);
    parameter.schema = schemas.valueSchema(field, "input");
    parameters.push(parameter);
  }
  if (binding.body !== "*") {
    const skip = new Set([...bound, binding.body].filter(Boolean));
    parameters.push(...queryParameters(contract, schemas, input, skip));
  }

  const operation: Schema = {
    operationId: `${service.name}_${method.name}${index === 0 ? "" : `_${index + 1}`}`,
    tags: [service.name],
  };
  const description = docText(method.comment);
  const summary = firstSentence(description);
  if (summary) operation.summary = summary;
  if (description) operation.description = description;
  if (parameters.length > 0) operation.parameters = parameters;
  const body = requestBody(schemas, input, binding, method.requestStream);
  if (body) operation.requestBody = body;
  operation.responses = {
    "200": successResponse(contract, schemas, method, binding),
    ...errorRefs(description, method.responseStream),
  };

  const verb = binding.method.toLowerCase();
  if (path === CONTENT_PATH && verb === "get") {
    const extras = contentOperationExtras();
    const get = {
      ...operation,
      parameters: [...parameters, ...extras.parameters],
      responses: { ...(operation.responses as object), ...extras.responses },
    };
    paths.add(path, "get", get);
    paths.add(path, "head", {
      ...get,
      operationId: `${operation.operationId as string}_Head`,
      summary: "The headers GET would answer, without the bytes.",
    });
    return;
  }
  paths.add(path, verb, operation);
}

/** A path variable's field path in JSON names: `key_id` -> `keyId`, `image.id` -> `image.id`. */
function jsonPathOf(contract: Contract, message: MessageInfo, path: string): string {
  const parts = path.split(".");
  return parts.map((_, i) => fieldAt(contract, message, parts.slice(0, i + 1).join(".")).jsonName).join(".");
}

/** The field a path variable such as `image.id` names, starting from the request message. */
function fieldAt(contract: Contract, message: MessageInfo, path: string): FieldInfo {
  let current = message;
  const parts = path.split(".");
  for (let i = 0; ; i++) {
    const field = current.fields.find((f) => f.name === parts[i] || f.jsonName === parts[i]);
    if (!field) throw new Error(`${message.fullName} has no field ${path}`);
    if (i === parts.length - 1) return field;
    const next = contract.messages.get(field.type);
    if (!next) throw new Error(`${message.fullName}.${path}: ${parts[i]} is not a message`);
    current = next;
  }
}

/**
 * Query parameters for the fields neither in the path nor the body: nested messages flatten
 * to `parent.child` names, repeated fields repeat the parameter. Output-only fields, maps and
 * repeated messages cannot be sent this way and are left out.
 */
function queryParameters(contract: Contract, schemas: SchemaSet, input: MessageInfo, skip: Set<string>): Schema[] {
  const out: Schema[] = [];
  const walk = (message: MessageInfo, protoPrefix: string, jsonPrefix: string, seen: Set<string>, top: boolean) => {
    for (const field of message.fields) {
      const protoPath = protoPrefix + field.name;
      if (skip.has(protoPath) || field.behaviors.includes("OUTPUT_ONLY")) continue;
      if (schemas.isNestedMessage(field)) {
        const nested = contract.messages.get(field.type);
        if (nested && !seen.has(nested.fullName)) {
          walk(nested, `${protoPath}.`, `${jsonPrefix}${field.jsonName}.`, new Set([...seen, nested.fullName]), false);
        }
        continue;
      }
      if (!schemas.isQueryValue(field)) continue;
      const parameter: Schema = { name: jsonPrefix + field.jsonName, in: "query" };
      if (field.comment) parameter.description = docText(field.comment);
      if (top && field.behaviors.includes("REQUIRED")) parameter.required = true;
      if (field.repeated) {
        parameter.schema = { type: "array", items: schemas.valueSchema(field, "input") };
        parameter.style = "form";
        parameter.explode = true;
      } else {
        parameter.schema = schemas.valueSchema(field, "input");
      }
      out.push(parameter);
    }
  };
  walk(input, "", "", new Set([input.fullName]), true);
  return out;
}

function requestBody(
  schemas: SchemaSet,
  input: MessageInfo,
  binding: HttpBinding,
  clientStreaming: boolean,
): Schema | undefined {
  if (binding.body === "") return undefined;
  const bound = binding.pathParams;
  let schema: Schema;
  let description: string | undefined;
  if (binding.body === "*") {
    const inPath = new Set(bound.filter((v) => !v.includes(".")));
    schema = inPath.size === 0 ? schemas.refOf(input.fullName, "input") : schemas.messageSchema(input, inPath, "input");
  } else {
    const field = input.fields.find((f) => f.name === binding.body);
    if (!field) throw new Error(`${input.fullName} has no body field ${binding.body}`);
    schema = field.repeated || field.mapKey ? schemas.fieldSchema(field, "input") : schemas.valueSchema(field, "input");
    description = docText(field.comment) || undefined;
  }
  if (clientStreaming) {
    // Either label is read the same way: JSON objects one after another.
    return {
      description: "Newline-delimited JSON: one request message per line (as `application/x-ndjson` or `application/json`).",
      required: true,
      content: { "application/x-ndjson": { schema }, "application/json": { schema } },
    };
  }
  const content: Record<string, Schema> = { "application/json": { schema } };
  const files = input.fields.filter((f) => f.kind === "scalar" && f.type === "bytes" && !f.repeated && !f.mapKey);
  if (binding.body === "*" && files.length > 0) {
    // The bridge also reads form uploads: a file part fills a bytes field, text parts the rest.
    const form = schemas.messageSchema(input, new Set(bound), "input");
    const properties = { ...(form.properties as Record<string, Schema>) };
    for (const file of files) {
      properties[file.jsonName] = { type: "string", format: "binary", description: docText(file.comment) };
    }
    content["multipart/form-data"] = {
      schema: {
        ...form,
        description:
          "A file part fills the bytes field of its name (and `fileName`, when the message has one and it is " +
          "unset); text parts fill the other fields, repeated fields as repeated parts, message fields as JSON.",
        properties,
      },
    };
  }
  return { ...(description ? { description } : {}), required: true, content };
}

function successResponse(contract: Contract, schemas: SchemaSet, method: MethodInfo, binding: HttpBinding): Schema {
  if (method.responseType === HTTP_BODY) {
    return {
      description: "The raw bytes, with their media type as the Content-Type.",
      content: { "*/*": { schema: { type: "string", format: "binary" } } },
    };
  }
  let schema: Schema;
  if (binding.responseBody) {
    const output = contract.messages.get(method.responseType);
    const field = output?.fields.find((f) => f.name === binding.responseBody);
    if (!field) throw new Error(`${method.responseType} has no response field ${binding.responseBody}`);
    schema = schemas.fieldSchema(field, "output");
  } else {
    schema = schemas.refOf(method.responseType, "output");
  }
  if (!method.responseStream) return { description: "OK", content: { "application/json": { schema } } };
  schemas.include(STATUS_SCHEMA, "output");
  return {
    description:
      "Newline-delimited JSON: one `{\"result\": ...}` line per message. A failure after the first " +
      "message ends the stream with an `{\"error\": ...}` line (the HTTP status stays 200); a failure " +
      "before it answers the error's own status with one `{\"error\": ...}` line.",
    content: {
      "application/x-ndjson": {
        schema: {
          description: "One line of the stream.",
          oneOf: [
            { type: "object", properties: { result: schema }, required: ["result"] },
            refTo(STREAM_ERROR_SCHEMA),
          ],
        },
      },
    },
  };
}

/**
 * The error statuses a method's comment names (plus authentication, rate limits and bad
 * requests), as refs; a streaming route's are its own (see errorResponses).
 */
function errorRefs(description: string, streaming: boolean): Record<string, Schema> {
  const codes = new Set(ALWAYS);
  for (const match of description.matchAll(/\b[A-Z][A-Z_]+[A-Z]\b/g)) if (match[0] in HTTP_STATUS) codes.add(match[0]);
  const statuses = [...new Set([...codes].map((c) => HTTP_STATUS[c]))].sort((a, b) => a - b);
  const prefix = streaming ? "StreamError" : "Error";
  const out: Record<string, Schema> = {};
  for (const status of statuses) out[String(status)] = { $ref: `#/components/responses/${prefix}${status}` };
  out.default = { $ref: `#/components/responses/${prefix}` };
  return out;
}

/**
 * One shared response per HTTP error status, naming the gRPC codes behind it; and the same
 * for streaming routes, whose call's failures before the first message are grpc-gateway's
 * stream error chunk `{"error": ...}`, while a request the bridge could not read (bad JSON, a
 * bad parameter) is answered, before any call, with the plain google.rpc.Status.
 */
export function errorResponses(): Record<string, Schema> {
  const json = { "application/json": { schema: refTo(STATUS_SCHEMA) } };
  const streamJson = { "application/json": { schema: { oneOf: [refTo(STREAM_ERROR_SCHEMA), refTo(STATUS_SCHEMA)] } } };
  const streamNote = "`{\"error\": google.rpc.Status}` when the call failed; a google.rpc.Status when the request could not be read.";
  const out: Record<string, Schema> = {
    Error: { description: "An error, as a google.rpc.Status.", content: json },
    StreamError: { description: `An error of a streaming route: ${streamNote}`, content: streamJson },
  };
  const byStatus = new Map<number, string[]>();
  for (const [code, status] of Object.entries(HTTP_STATUS)) {
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  for (const [status, codes] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    const response: Schema = { description: `${codes.join(" or ")}, as a google.rpc.Status.`, content: json };
    const streamed: Schema = { description: `${codes.join(" or ")}: ${streamNote}`, content: streamJson };
    if (status === 429 || status === 503) {
      response.headers = {
        "Retry-After": {
          description: "Seconds to wait before retrying (the RetryInfo delay, rounded up).",
          schema: { type: "integer", minimum: 0 },
        },
      };
    }
    if (response.headers) streamed.headers = response.headers;
    out[`Error${status}`] = response;
    out[`StreamError${status}`] = streamed;
  }
  return out;
}

/** The body of a streaming route's call failure before its first message (grpc-gateway's error chunk). */
export function streamErrorSchema(): Schema {
  return {
    type: "object",
    description: "A streaming call's failure: before the first message, the whole answer (with the error's HTTP status); after it, the last line.",
    properties: { error: refTo(STATUS_SCHEMA) },
    required: ["error"],
  };
}

/** The first sentence of a comment's first paragraph, as an operation summary. */
function firstSentence(text: string): string {
  const paragraph = text.split(/\n\s*\n/)[0].replace(/\s*\n\s*/g, " ").trim();
  const end = paragraph.search(/\.(\s|$)/);
  return end === -1 ? paragraph : paragraph.slice(0, end + 1);
}
