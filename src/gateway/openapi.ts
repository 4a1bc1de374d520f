import type { RouteDeps } from "./gateway.js";
import type { Route } from "./http.js";
import { loadContract, type Contract } from "./descriptors.js";
import { addOperation, errorResponses, PathTable, STATUS_SCHEMA, STREAM_ERROR_SCHEMA, streamErrorSchema } from "./openapi-operations.js";
import { docText, refTo, SchemaSet, type Schema } from "./openapi-schemas.js";

/**
 * `GET /openapi.json`: the OpenAPI 3.1 document of the bridge, built once at start from the
 * contract's descriptors. The server URL is the bridge's public URL at the time of the request
 * (its port is only known once it listens).
 */
export function openapiRoutes(deps: RouteDeps): Route[] {
  // Built eagerly so a broken descriptor set fails the start, not the first request.
  const document = buildOpenApi(deps.descriptors, deps.publicUrl());
  let cached: { url: string; text: string } | undefined;
  return [
    {
      method: "GET",
      pattern: "/openapi.json",
      async handle({ res }) {
        const url = deps.publicUrl();
        if (cached?.url !== url) cached = { url, text: JSON.stringify({ ...document, servers: [{ url }] }) };
        res.writeHead(200, {
          "content-type": "application/json; charset=utf-8",
          "content-length": Buffer.byteLength(cached.text),
          "cache-control": "no-cache",
        });
        res.end(cached.text);
      },
    },
  ];
}

/**
 * Messages a google.rpc.Status may carry in `details` (glimpse sends BadRequest and RetryInfo;
 * the others are google.rpc's standard details, listed so a client handles any of them):
 * documented as components carrying their `@type`. DebugInfo is left out: stack traces never
 * leave the server.
 */
const DETAIL_TYPES = [
  "google.rpc.BadRequest",
  "google.rpc.RetryInfo",
  "google.rpc.ErrorInfo",
  "google.rpc.QuotaFailure",
  "google.rpc.PreconditionFailure",
  "google.rpc.ResourceInfo",
  "google.rpc.RequestInfo",
  "google.rpc.Help",
  "google.rpc.LocalizedMessage",
];
const TYPE_URL_PREFIX = "type.googleapis.com/";

const API_DESCRIPTION = `The HTTP/JSON bridge of glimpse, generated from its protobuf contract: every RPC with a
google.api.http binding is served here and passes through the same authentication, rate
limits, deadlines and error mapping as gRPC.

Bodies use the proto3 JSON mapping: lowerCamelCase field names (the original snake_case names
are accepted on input), 64-bit integers as strings, enums as their names, Timestamps as RFC 3339
strings, FieldMasks as comma-separated paths. Responses include every field, with its default
when unset, and an unset message field as \`null\`.

Errors are a google.rpc.Status \`{code, message, details}\` with grpc-gateway's HTTP status for
the code; INVALID_ARGUMENT carries a google.rpc.BadRequest naming each bad field, and a rate
limit (429) a google.rpc.RetryInfo and a \`Retry-After\` header; each detail carries its
\`@type\`. Server-streaming RPCs answer newline-delimited JSON, one \`{"result": ...}\` per line; a
call that fails before the first line answers its status with one \`{"error": ...}\`, as
grpc-gateway does. Every field an answer always carries is listed as \`required\`.

Send an API key as \`Authorization: Bearer <key>\` or \`X-Api-Key: <key>\`.`;

/**
 * The OpenAPI 3.1 document for a serialized FileDescriptorSet: a path for every
 * google.api.http binding, a schema for every message and enum of the API (proto3 JSON
 * mapping), the proto comments as descriptions, google.rpc.Status errors, and API-key security
 * (bearer or `X-Api-Key`) on everything except the health and document endpoints.
 */
export function buildOpenApi(descriptors: Uint8Array, serverUrl: string): object {
  const contract = loadContract(descriptors);
  const services = contract.services.filter((s) => s.methods.some((m) => m.bindings.length > 0));
  const bound = services.flatMap((s) => s.methods.filter((m) => m.bindings.length > 0));
  const outputs = reachable(contract, [...bound.map((m) => m.responseType), STATUS_SCHEMA, ...DETAIL_TYPES]);
  const schemas = new SchemaSet(contract, outputs);
  const paths = new PathTable();
  for (const service of services) {
    for (const method of service.methods) {
      method.bindings.forEach((binding, i) => addOperation(contract, schemas, paths, service, method, binding, i));
    }
  }
  // Every message and enum of the API's packages, and the error types, referenced or not.
  const packages = services.map((s) => s.fullName.slice(0, s.fullName.lastIndexOf(".") + 1));
  const inApi = (name: string) => packages.some((prefix) => name.startsWith(prefix));
  for (const name of [...contract.messages.keys(), ...contract.enums.keys()]) if (inApi(name)) schemas.include(name);
  for (const name of [STATUS_SCHEMA, ...DETAIL_TYPES]) schemas.include(name, "output");
  typeDetails(schemas.components, contract);
  schemas.components[STREAM_ERROR_SCHEMA] = streamErrorSchema();

  return {
    openapi: "3.1.0",
    info: { title: "glimpse", version: "v1", description: API_DESCRIPTION },
    servers: [{ url: serverUrl }],
    tags: [
      ...services.map((s) => ({ name: s.name, description: docText(s.comment) })),
      { name: "Health", description: "Liveness, readiness and this document; no key needed." },
    ],
    security: [{ bearerAuth: [] }, { apiKeyAuth: [] }],
    paths: { ...paths.items, ...healthPaths() },
    components: {
      schemas: sortedByKey(schemas.components),
      responses: errorResponses(),
      securitySchemes: {
        bearerAuth: {
          type: "http",
          scheme: "bearer",
          description: "An API key as `Authorization: Bearer <key>`.",
        },
        apiKeyAuth: {
          type: "apiKey",
          in: "header",
          name: "X-Api-Key",
          description: "An API key as `X-Api-Key: <key>`.",
        },
      },
    },
  };
}

/** The messages a set of types refers to, themselves included. */
function reachable(contract: Contract, roots: string[]): Set<string> {
  const seen = new Set<string>();
  const walk = (typeName: string) => {
    const message = contract.messages.get(typeName);
    if (!message || seen.has(typeName)) return;
    seen.add(typeName);
    for (const field of message.fields) if (field.kind === "message") walk(field.type);
  };
  roots.forEach(walk);
  return seen;
}

/**
 * Gives each detail type's component its `@type` (a constant), and google.rpc.Status's
 * `details` items the union of those, discriminated by `@type`: a generated client narrows a
 * detail by its `@type` to its fields without a cast.
 */
function typeDetails(components: Record<string, Schema>, contract: Contract): void {
  const mapping: Record<string, string> = {};
  for (const name of DETAIL_TYPES) {
    if (!contract.messages.has(name)) continue;
    const url = TYPE_URL_PREFIX + name;
    const component = components[name];
    component.properties = { "@type": { type: "string", const: url }, ...(component.properties as object) };
    component.required = ["@type", ...((component.required as string[] | undefined) ?? [])];
    mapping[url] = (refTo(name).$ref as string);
  }
  const status = components[STATUS_SCHEMA];
  const properties = status.properties as Record<string, Schema>;
  properties.details = {
    ...properties.details,
    items: {
      oneOf: Object.values(mapping).map(($ref) => ({ $ref })),
      discriminator: { propertyName: "@type", mapping },
    },
  };
}

/** Liveness, readiness and this document: open to everyone. */
function healthPaths(): Record<string, unknown> {
  const status = (value: string) => ({
    "application/json": {
      schema: { type: "object", properties: { status: { type: "string", const: value } }, required: ["status"] },
    },
  });
  return {
    "/healthz": {
      get: {
        operationId: "Healthz",
        tags: ["Health"],
        summary: "Liveness: the process answers.",
        security: [],
        responses: { "200": { description: "Alive.", content: status("ok") } },
      },
    },
    "/readyz": {
      get: {
        operationId: "Readyz",
        tags: ["Health"],
        summary: "Readiness: the store is migrated and answering.",
        security: [],
        responses: {
          "200": { description: "Ready to serve.", content: status("ready") },
          "503": { description: "Still starting.", content: status("starting") },
        },
      },
    },
    "/openapi.json": {
      get: {
        operationId: "OpenApi",
        tags: ["Health"],
        summary: "This document.",
        security: [],
        responses: {
          "200": { description: "This document.", content: { "application/json": { schema: { type: "object" } } } },
        },
      },
    },
  };
}

function sortedByKey<V>(record: Record<string, V>): Record<string, V> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => a.localeCompare(b)));
}
