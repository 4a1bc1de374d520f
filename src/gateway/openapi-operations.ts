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

/** Every call needs a key, so every route may answer these whatever its comment lists. */
const ALWAYS = ["UNAUTHENTICATED", "RESOURCE_EXHAUSTED"];

/** The error body of every route. */
export const STATUS_SCHEMA = "google.rpc.Status";
const HTTP_BODY = "google.api.HttpBody";

/**
 * The `paths` object. Templates that differ only in their variable names (`/v1/images/{id}`
 * and `/v1/images/{image.id}`) are one path in OpenAPI, so later ones take the first one's
 * names.
 */
export class PathTable {
  readonly items: Record<string, Record<string, unknown>> = {};
  private readonly byShape = new Map<string, { path: string; names: string[] }>();

  /** The OpenAPI path for a template, and the parameter name to use for each of its variables. */
  resolve(template: string): { path: string; names: Map<string, string> } {
    const vars: string[] = [];
    const path = template.replace(/\{([^}=]+)(?:=[^}]*)?\}/g, (_, name: string) => {
      vars.push(name);
      return `{${name}}`;
    });
    const shape = path.replace(/\{[^}]+\}/g, "{}");
    const known = this.byShape.get(shape) ?? { path, names: vars };
    this.byShape.set(shape, known);
    return { path: known.path, names: new Map(vars.map((v, i) => [v, known.names[i]])) };
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
  const { path, names } = paths.resolve(binding.template);
  const bound = binding.pathParams;
  const parameters: Schema[] = [];
  for (const [variable, name] of names) {
    const field = fieldAt(contract, input, variable);
    const description = [docText(field.comment), name === variable ? "" : `The request field \`${variable}\`.`];
    parameters.push({
      name,
      in: "path",
      required: true,
      description: description.filter(Boolean).join("\n\n"),
      schema: schemas.valueSchema(field),
    });
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
  operation.responses = { "200": successResponse(contract, schemas, method, binding), ...errorRefs(description) };

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
        parameter.schema = { type: "array", items: schemas.valueSchema(field) };
        parameter.style = "form";
        parameter.explode = true;
      } else {
        parameter.schema = schemas.valueSchema(field);
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
    schemas.include(input.fullName);
    schema = inPath.size === 0 ? refTo(input.fullName) : schemas.messageSchema(input, inPath);
  } else {
    const field = input.fields.find((f) => f.name === binding.body);
    if (!field) throw new Error(`${input.fullName} has no body field ${binding.body}`);
    schema = field.repeated || field.mapKey ? schemas.fieldSchema(field) : schemas.valueSchema(field);
    description = docText(field.comment) || undefined;
  }
  if (clientStreaming) {
    return {
      description: "Newline-delimited JSON: one request message per line.",
      required: true,
      content: { "application/x-ndjson": { schema } },
    };
  }
  const content: Record<string, Schema> = { "application/json": { schema } };
  const files = input.fields.filter((f) => f.kind === "scalar" && f.type === "bytes" && !f.repeated && !f.mapKey);
  if (binding.body === "*" && files.length > 0) {
    // The bridge also reads form uploads: a file part fills a bytes field, text parts the rest.
    const form = schemas.messageSchema(input, new Set(bound));
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
    schema = schemas.fieldSchema(field);
  } else {
    schemas.include(method.responseType);
    schema = refTo(method.responseType);
  }
  if (!method.responseStream) return { description: "OK", content: { "application/json": { schema } } };
  schemas.include(STATUS_SCHEMA);
  return {
    description:
      "Newline-delimited JSON: one `{\"result\": ...}` line per message. A failure after the first " +
      "message ends the stream with an `{\"error\": ...}` line (the HTTP status stays 200); a failure " +
      "before it answers the error's own status.",
    content: {
      "application/x-ndjson": {
        schema: {
          type: "object",
          properties: { result: schema, error: refTo(STATUS_SCHEMA) },
        },
      },
    },
  };
}

/** The error statuses a method's comment names (plus authentication and rate limits), as refs. */
function errorRefs(description: string): Record<string, Schema> {
  const codes = new Set(ALWAYS);
  for (const match of description.matchAll(/\b[A-Z][A-Z_]+[A-Z]\b/g)) if (match[0] in HTTP_STATUS) codes.add(match[0]);
  const statuses = [...new Set([...codes].map((c) => HTTP_STATUS[c]))].sort((a, b) => a - b);
  const out: Record<string, Schema> = {};
  for (const status of statuses) out[String(status)] = { $ref: `#/components/responses/Error${status}` };
  out.default = { $ref: "#/components/responses/Error" };
  return out;
}

/** One shared response per HTTP error status, naming the gRPC codes behind it. */
export function errorResponses(): Record<string, Schema> {
  const json = { "application/json": { schema: refTo(STATUS_SCHEMA) } };
  const out: Record<string, Schema> = {
    Error: { description: "An error, as a google.rpc.Status.", content: json },
  };
  const byStatus = new Map<number, string[]>();
  for (const [code, status] of Object.entries(HTTP_STATUS)) {
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  for (const [status, codes] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    const response: Schema = { description: `${codes.join(" or ")}, as a google.rpc.Status.`, content: json };
    if (status === 429) {
      response.headers = {
        "Retry-After": {
          description: "Seconds to wait before retrying (the RetryInfo delay, rounded up).",
          schema: { type: "integer", minimum: 0 },
        },
      };
    }
    out[`Error${status}`] = response;
  }
  return out;
}

/** The first sentence of a comment's first paragraph, as an operation summary. */
function firstSentence(text: string): string {
  const paragraph = text.split(/\n\s*\n/)[0].replace(/\s*\n\s*/g, " ").trim();
  const end = paragraph.search(/\.(\s|$)/);
  return end === -1 ? paragraph : paragraph.slice(0, end + 1);
}
