import { readFileSync } from "node:fs";
import { Validator } from "@seriousme/openapi-schema-validator";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildOpenApi } from "../../src/gateway/openapi.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { startTestApp, type TestApp } from "../helpers/app.js";
import { distinctPng } from "../helpers/images.js";

type Json = Record<string, any>;

/** A `$ref` to a component schema. */
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

const METHODS = ["get", "put", "post", "delete", "patch", "head"];

describe("GET /openapi.json", () => {
  let t: TestApp;
  let base: string;
  let doc: Json;

  beforeAll(async () => {
    t = await startTestApp();
    base = `http://127.0.0.1:${t.app.httpPort}`;
    const res = await fetch(`${base}/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    doc = (await res.json()) as Json;
  });
  afterAll(async () => {
    await t?.close();
  });

  it("is a valid OpenAPI 3.1 document, served without a key, pointing at this server", async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    expect(result.errors).toBeUndefined();
    expect(result.valid).toBe(true);
    expect(validator.version).toBe("3.1");
    expect(doc.servers).toEqual([{ url: base }]);
  });

  it("holds valid JSON Schema 2020-12 that the bridge's real error bodies satisfy", async () => {
    // The OpenAPI 3.1 validator leaves schema objects alone, so check them against the dialect.
    const ajv = addFormats(new Ajv2020({ strict: false, allowUnionTypes: true }));
    ajv.addFormat("uint32", true);
    ajv.addFormat("uint64", true);
    const schemas = [...Object.values<Json>(doc.components.schemas), ...schemasIn(doc.paths)];
    for (const schema of schemas) expect(ajv.validateSchema(schema), JSON.stringify(ajv.errors)).toBe(true);
    const root = "https://glimpse.invalid/openapi.json";
    // Strict copies of the schemas: a field the document does not name (a misspelt or
    // snake_case one) fails validation instead of passing as an extra property.
    const strict = (node: unknown): unknown => {
      if (Array.isArray(node)) return node.map(strict);
      if (node === null || typeof node !== "object") return node;
      const copy: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(node)) copy[key] = strict(value);
      if (copy.type === "object" && copy.properties && copy.additionalProperties === undefined) {
        copy.additionalProperties = false;
      }
      return copy;
    };
    const components = strict(doc.components) as typeof doc.components;
    ajv.addSchema({ $id: root, components });
    for (const name of Object.keys(doc.components.schemas)) {
      expect(ajv.getSchema(`${root}#/components/schemas/${name}`), name).toBeDefined();
    }
    const status = ajv.getSchema(`${root}#/components/schemas/google.rpc.Status`)!;
    const auth = { authorization: `Bearer ${t.adminKey}` };
    for (const path of ["/v1/images/123456789/content", "/v1/images/x/content", "/v1/no-such-route", "/v1/images/x", "/v1/images/"]) {
      const res = await fetch(`${base}${path}`, { headers: auth });
      expect(res.status, path).toBeGreaterThanOrEqual(400);
      const body = await res.json();
      expect(status(body), `${path}: ${JSON.stringify(status.errors)}`).toBe(true);
    }
    expect(status({ code: "5", message: 1 })).toBe(false);
    // A detail must be one of the typed details, by its @type and fields.
    const badRequest = { "@type": "type.googleapis.com/google.rpc.BadRequest", fieldViolations: [] };
    expect(status({ code: 3, message: "m", details: [badRequest] })).toBe(true);
    expect(status({ code: 3, message: "m", details: [{ ...badRequest, "@type": "type.googleapis.com/google.rpc.RetryInfo" }] })).toBe(false);
    // A stream whose call fails before its first message: grpc-gateway's {error} chunk.
    const streamError = ajv.getSchema(`${root}#/components/schemas/StreamError`)!;
    const res = await fetch(`${base}/v1/images:streamSearch`, { method: "POST", body: '{"prompt": "x", "limit": 100000}', headers: auth });
    expect(res.status).toBe(400);
    const body = await res.json();
    expect(streamError(body), JSON.stringify(streamError.errors)).toBe(true);
  });

  it("describes the JSON the bridge really answers", async () => {
    const ajv = addFormats(new Ajv2020({ strict: false, allowUnionTypes: true }));
    ajv.addFormat("uint32", true);
    ajv.addFormat("uint64", true);
    const root = "https://glimpse.invalid/openapi.json";
    // Strict copies of the schemas: a field the document does not name (a misspelt or
    // snake_case one) fails validation instead of passing as an extra property.
    const strict = (node: unknown): unknown => {
      if (Array.isArray(node)) return node.map(strict);
      if (node === null || typeof node !== "object") return node;
      const copy: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(node)) copy[key] = strict(value);
      if (copy.type === "object" && copy.properties && copy.additionalProperties === undefined) {
        copy.additionalProperties = false;
      }
      return copy;
    };
    const components = strict(doc.components) as typeof doc.components;
    ajv.addSchema({ $id: root, components });
    const schemaOf = (path: string, method: string) => {
      const ref: string = doc.paths[path][method].responses["200"].content["application/json"].schema.$ref;
      return ajv.getSchema(`${root}${ref}`)!;
    };
    const images = t.client(ImageServiceDefinition);
    const { image } = await images.uploadImage({
      content: await distinctPng(5),
      tags: ["cat"],
      meta: { prompt: "a cat", steps: 20 },
      index: false,
    });
    const auth = { authorization: `Bearer ${t.adminKey}` };
    const checks: [string, string, string][] = [
      [`/v1/images/${image!.id}`, "/v1/images/{id}", "get"],
      ["/v1/images?pageSize=5", "/v1/images", "get"],
      [`/v1/images/${image!.id}/comments`, "/v1/images/{imageId}/comments", "get"],
      ["/v1/account", "/v1/account", "get"],
      ["/v1/models", "/v1/models", "get"],
    ];
    for (const [url, path, method] of checks) {
      const res = await fetch(`${base}${url}`, { headers: auth });
      expect(res.status, url).toBe(200);
      const validate = schemaOf(path, method);
      const body = (await res.json()) as Record<string, unknown>;
      expect(validate(body), `${url}: ${JSON.stringify(validate.errors)}`).toBe(true);
      // Every field the document lists for the response is there (unpopulated ones included).
      const ref: string = doc.paths[path][method].responses["200"].content["application/json"].schema.$ref;
      const top = components.schemas[ref.split("/").pop()!];
      expect(Object.keys(body).sort(), url).toEqual(Object.keys(top.properties).sort());
    }
    const getImage = schemaOf("/v1/images/{id}", "get");
    expect(getImage({ image: { file_name: "x.png" } })).toBe(false);
  });

  it("resolves every $ref, declares every path variable, and names each operation once", () => {
    for (const ref of refsIn(doc)) {
      const target = ref.replace(/^#\//, "").split("/").reduce<any>((node, key) => node?.[key], doc);
      expect(target, ref).toBeDefined();
    }
    const ids = new Set<string>();
    for (const [path, item] of Object.entries<Json>(doc.paths)) {
      const variables = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
      for (const method of METHODS.filter((m) => item[m])) {
        const op = item[method];
        const inPath = (op.parameters ?? []).filter((p: Json) => p.in === "path").map((p: Json) => p.name).sort();
        expect(inPath, `${method} ${path}`).toEqual(variables);
        expect(ids.has(op.operationId), op.operationId).toBe(false);
        ids.add(op.operationId);
      }
    }
  });

  it("has a route for every google.api.http binding, additional bindings included", () => {
    const routes = Object.entries<Json>(doc.paths).flatMap(([path, item]) =>
      METHODS.filter((m) => item[m]).map((m) => `${m.toUpperCase()} ${path}`),
    );
    expect(routes).toEqual(
      expect.arrayContaining([
        "POST /v1/images",
        "GET /v1/images",
        "GET /v1/images/{id}",
        "PATCH /v1/images/{image.id}",
        "DELETE /v1/images/{id}",
        "GET /v1/images/{id}/content",
        "HEAD /v1/images/{id}/content",
        "POST /v1/images/{imageId}/reactions",
        "PUT /v1/images/{imageId}/reactions/{kind}",
        "DELETE /v1/images/{imageId}/reactions/{kind}",
        "POST /v1/images:search",
        "GET /v1/images:search",
        "POST /v1/images:streamSearch",
        "POST /v1/generations",
        "GET /v1/account",
        "GET /v1/accounts/{accountId}",
        "POST /v1/accounts/{accountId}/credits:grant",
        "DELETE /v1/account/keys/{keyId}",
        "GET /healthz",
        "GET /readyz",
      ]),
    );
    // Services without HTTP bindings (gRPC health) are not part of the bridge.
    expect(routes.some((r) => r.includes("grpc.health"))).toBe(false);
  });

  it("describes path and query parameters with the proto3 JSON types", () => {
    const getImage = doc.paths["/v1/images/{id}"].get;
    expect(getImage.parameters).toContainEqual(
      expect.objectContaining({ name: "id", in: "path", required: true, schema: { type: "string", format: "int64" } }),
    );
    expect(getImage.parameters).toContainEqual(
      expect.objectContaining({ name: "view", in: "query", schema: ref("glimpse.image.v1.ImageView") }),
    );
    const list = doc.paths["/v1/images"].get.parameters as Json[];
    const byName = new Map(list.map((p) => [p.name, p]));
    expect(byName.get("pageSize")).toMatchObject({ in: "query", schema: { type: "integer", format: "int32" } });
    expect(byName.get("filter.tags")).toMatchObject({
      in: "query",
      explode: true,
      schema: { type: "array", items: { type: "string" } },
    });
    expect(byName.get("filter.postId")).toMatchObject({ schema: { type: "string", format: "int64" } });
    // A field bound to the path, or sent as the body, is not also a query parameter.
    const update = doc.paths["/v1/images/{image.id}"].patch;
    expect(update.parameters.map((p: Json) => p.name)).toEqual(["image.id", "updateMask"]);
    expect(update.requestBody.content["application/json"].schema).toEqual(ref("glimpse.image.v1.ImageInput"));
    const react = doc.paths["/v1/images/{imageId}/reactions"].post.requestBody.content["application/json"].schema;
    expect(Object.keys(react.properties)).toEqual(["kind"]);
    const upload = doc.paths["/v1/images"].post.requestBody.content;
    expect(upload["application/json"].schema).toEqual(ref("glimpse.image.v1.UploadImageRequest"));
    expect(upload["multipart/form-data"].schema.properties.content).toMatchObject({ type: "string", format: "binary" });
  });

  it("maps proto types to their JSON forms in the schemas", () => {
    const image = doc.components.schemas["glimpse.image.v1.Image"];
    expect(image.properties.byteSize).toMatchObject({ type: "string", format: "int64" });
    expect(image.properties.createdAt).toMatchObject({ type: ["string", "null"], format: "date-time", readOnly: true });
    expect(image.properties.meta).toMatchObject({ type: ["object", "null"] });
    expect(image.properties.content).toMatchObject({ type: "string", format: "byte" });
    expect(image.properties.tags).toMatchObject({ type: "array", items: { type: "string" } });
    expect(image.properties.stats.anyOf).toEqual([
      ref("glimpse.image.v1.ImageStats"),
      { type: "null" },
    ]);
    expect(image.properties.fileName).toBeDefined(); // lowerCamelCase, not file_name
    expect(doc.components.schemas["glimpse.image.v1.Visibility"]).toMatchObject({
      type: "string",
      enum: ["VISIBILITY_UNSPECIFIED", "VISIBILITY_PRIVATE", "VISIBILITY_PUBLIC"],
    });
    const classes = doc.components.schemas["glimpse.image.v1.Annotations"].properties.classes;
    expect(classes).toMatchObject({ type: "object", additionalProperties: { type: "integer" } });
    const update = doc.components.schemas["glimpse.image.v1.UpdateImageRequest"];
    expect(update.properties.updateMask).toMatchObject({ type: ["string", "null"] });
  });

  it("answers raw bytes for HttpBody, NDJSON for server streaming, and google.rpc.Status for errors", () => {
    const content = doc.paths["/v1/images/{id}/content"].get;
    expect(content.responses["200"].content["*/*"].schema).toEqual({ type: "string", format: "binary" });
    expect(Object.keys(content.responses)).toEqual(expect.arrayContaining(["206", "304", "416"]));
    expect(content.parameters.map((p: Json) => p.name)).toEqual(expect.arrayContaining(["Range", "If-None-Match"]));

    const stream = doc.paths["/v1/images:streamSearch"].post;
    const line = stream.responses["200"].content["application/x-ndjson"].schema;
    expect(line.oneOf).toEqual([
      { type: "object", properties: { result: ref("glimpse.image.v1.StreamSearchImagesResponse") }, required: ["result"] },
      ref("StreamError"),
    ]);
    expect(doc.components.schemas.StreamError).toMatchObject({ properties: { error: ref("google.rpc.Status") }, required: ["error"] });
    expect(stream.requestBody.content["application/json"].schema).toEqual({
      $ref: "#/components/schemas/glimpse.image.v1.SearchImagesRequest",
    });
    // Its failures: the call's as {error}, a request it could not read as a plain Status; 400 included.
    expect(stream.responses["400"]).toEqual({ $ref: "#/components/responses/StreamError400" });
    expect(doc.components.responses.StreamError400.content["application/json"].schema.oneOf).toEqual([
      ref("StreamError"),
      ref("google.rpc.Status"),
    ]);
    const batch = doc.paths["/v1/images:batchUpload"].post;
    expect(Object.keys(batch.requestBody.content)).toEqual(["application/x-ndjson", "application/json"]);
    expect(batch.responses["400"]).toEqual({ $ref: "#/components/responses/StreamError400" });

    const getImage = doc.paths["/v1/images/{id}"].get.responses;
    expect(getImage["404"]).toEqual({ $ref: "#/components/responses/Error404" });
    expect(getImage.default).toEqual({ $ref: "#/components/responses/Error" });
    expect(doc.components.responses.Error429.headers["Retry-After"]).toBeDefined();
    expect(doc.components.responses.Error404.content["application/json"].schema).toEqual({
      $ref: "#/components/schemas/google.rpc.Status",
    });
    expect(Object.keys(doc.components.schemas["google.rpc.Status"].properties)).toEqual(["code", "message", "details"]);
  });

  it("lists as required every field an answer always carries, and only REQUIRED ones in requests", () => {
    const image = doc.components.schemas["glimpse.image.v1.Image"];
    expect(image.required).toEqual(expect.arrayContaining(["id", "fileName", "tags", "createdAt", "stats", "meta"]));
    // proto3 optional fields and oneof members are written only when set.
    expect(image.required).not.toContain("postId");
    expect(image.required).not.toContain("content");
    const batch = doc.components.schemas["glimpse.image.v1.BatchUploadImagesResponse"];
    expect(batch.required).not.toContain("image");
    expect(batch.required).not.toContain("error");
    // The request form of a message that travels both ways requires nothing the contract does not.
    expect(doc.components.schemas["glimpse.image.v1.ImageInput"].required).toBeUndefined();
    expect(Object.keys(doc.components.schemas["glimpse.image.v1.ImageInput"].properties)).toEqual(Object.keys(image.properties));
    expect(doc.components.schemas["glimpse.image.v1.UploadImageRequest"].required).toEqual(["content"]);
    expect(doc.components.schemas["google.rpc.Status"].required).toEqual(["code", "message", "details"]);
  });

  it("types status details by their @type", () => {
    const items = doc.components.schemas["google.rpc.Status"].properties.details.items;
    expect(items.discriminator.propertyName).toBe("@type");
    expect(items.discriminator.mapping["type.googleapis.com/google.rpc.BadRequest"]).toBe("#/components/schemas/google.rpc.BadRequest");
    expect(items.oneOf).toContainEqual(ref("google.rpc.RetryInfo"));
    expect(items.oneOf).toContainEqual(ref("google.rpc.ErrorInfo"));
    expect(items.oneOf).not.toContainEqual(ref("google.rpc.DebugInfo"));
    const badRequest = doc.components.schemas["google.rpc.BadRequest"];
    expect(badRequest.properties["@type"]).toEqual({ type: "string", const: "type.googleapis.com/google.rpc.BadRequest" });
    expect(badRequest.required).toEqual(["@type", "fieldViolations"]);
  });

  it("carries the proto comments as descriptions", () => {
    const getImage = doc.paths["/v1/images/{id}"].get;
    expect(getImage.summary).toBe("Returns one image's metadata, and its bytes when the view asks for them.");
    expect(getImage.description).toContain("NOT_FOUND when no image the caller");
    expect(doc.tags.find((tag: Json) => tag.name === "ImageService").description).toMatch(/^The image catalogue/);
    const image = doc.components.schemas["glimpse.image.v1.Image"];
    expect(image.properties.sha256.description).toMatch(/^SHA-256 of the original bytes/);
    expect(doc.components.schemas["glimpse.image.v1.Visibility"].description).toContain(
      "`VISIBILITY_PUBLIC`: Every account can list, read and search it",
    );
    // Lint directives in comments are not documentation.
    expect(doc.paths["/v1/images/{id}/content"].get.description).not.toContain("buf:lint");
  });

  it("asks for an API key as a bearer token or X-Api-Key everywhere but the health endpoints", () => {
    expect(doc.components.securitySchemes).toEqual({
      bearerAuth: expect.objectContaining({ type: "http", scheme: "bearer" }),
      apiKeyAuth: expect.objectContaining({ type: "apiKey", in: "header", name: "X-Api-Key" }),
    });
    expect(doc.security).toEqual([{ bearerAuth: [] }, { apiKeyAuth: [] }]);
    expect(doc.paths["/healthz"].get.security).toEqual([]);
    expect(doc.paths["/readyz"].get.security).toEqual([]);
    expect(doc.paths["/v1/images/{id}"].get.security).toBeUndefined();
  });

  it("is the same document buildOpenApi makes from the generated descriptors", () => {
    const descriptors = readFileSync(new URL("../../src/gen/descriptors.binpb", import.meta.url));
    expect(buildOpenApi(descriptors, base)).toEqual(doc);
  });
});

/** Every inline `schema` of parameters, bodies and responses. */
function schemasIn(node: unknown, out: Json[] = []): Json[] {
  if (Array.isArray(node)) for (const item of node) schemasIn(item, out);
  else if (node && typeof node === "object") {
    for (const [key, value] of Object.entries(node)) {
      if (key === "schema" && value && typeof value === "object") out.push(value as Json);
      else schemasIn(value, out);
    }
  }
  return out;
}

/** Every `$ref` value anywhere in a JSON tree. */
function refsIn(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const item of node) refsIn(item, out);
  else if (node && typeof node === "object") {
    for (const [key, value] of Object.entries(node)) {
      if (key === "$ref" && typeof value === "string") out.push(value);
      else refsIn(value, out);
    }
  }
  return out;
}
