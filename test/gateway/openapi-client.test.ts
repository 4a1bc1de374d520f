import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildOpenApi } from "../../src/gateway/openapi.js";

/**
 * A client generated from the bridge's OpenAPI document by openapi-typescript, as a user of
 * the API would generate one, must compile against ordinary use of the JSON routes without a
 * cast: fields the bridge always writes are required, path parameters have grpc-gateway's
 * names, error details narrow by their `@type`, and stream lines are `{result}` or `{error}`.
 */

/** Ordinary client code over the generated types: no `as`, no `!`, no `any`. */
const CLIENT = `
import type { components, paths } from "./schema";

type Json<R> = R extends { content: { "application/json": infer B } } ? B : never;
type Ok<Op> = Op extends { responses: { 200: infer R } } ? Json<R> : never;

type GetImage = paths["/v1/images/{id}"]["get"];
type UpdateImage = paths["/v1/images/{image.id}"]["patch"];
type RevokeKey = paths["/v1/account/keys/{keyId}"]["delete"];
type Comments = paths["/v1/images/{imageId}/comments"]["get"];
type Status = components["schemas"]["google.rpc.Status"];
type StreamLine = paths["/v1/images:streamSearch"]["post"]["responses"][200]["content"]["application/x-ndjson"];
type StreamFailure = Json<paths["/v1/images:streamSearch"]["post"]["responses"][400]>;

declare function call<T>(method: string, url: string, body?: unknown): Promise<T>;

export async function describeImage(id: GetImage["parameters"]["path"]["id"]): Promise<string> {
  const { image } = await call<Ok<GetImage>>("GET", \`/v1/images/\${id}\`);
  if (image === null) return "none";
  const name: string = image.fileName;
  const tags: string[] = image.tags;
  const size: string = image.byteSize;
  const comments: string = image.stats === null ? "0" : image.stats.commentCount;
  const created: string | null = image.createdAt;
  const post: string | undefined = image.postId;
  return \`\${name} \${tags.join(",")} \${size} \${comments} \${created} \${post}\`;
}

export async function retag(id: UpdateImage["parameters"]["path"]["image.id"], tags: string[]): Promise<string[]> {
  const body: UpdateImage["requestBody"]["content"]["application/json"] = { tags };
  const { image } = await call<Ok<UpdateImage>>("PATCH", \`/v1/images/\${id}\`, body);
  return image === null ? [] : image.tags;
}

export async function revoke(keyId: RevokeKey["parameters"]["path"]["keyId"]): Promise<void> {
  await call<Ok<RevokeKey>>("DELETE", \`/v1/account/keys/\${keyId}\`);
}

export async function commentTexts(imageId: Comments["parameters"]["path"]["imageId"]): Promise<string[]> {
  const page = await call<Ok<Comments>>("GET", \`/v1/images/\${imageId}/comments\`);
  return page.comments.map((comment) => comment.text);
}

export function badFields(status: Status): string[] {
  const fields: string[] = [];
  for (const detail of status.details) {
    if (detail["@type"] === "type.googleapis.com/google.rpc.BadRequest") {
      for (const violation of detail.fieldViolations) fields.push(violation.field);
    } else if (detail["@type"] === "type.googleapis.com/google.rpc.RetryInfo") {
      const delay: string | null = detail.retryDelay;
      fields.push(\`retry after \${delay}\`);
    }
  }
  return fields;
}

export function lineIds(lines: StreamLine[]): string[] {
  return lines.flatMap((line) => ("result" in line ? [line.result.rank] : [line.error.message]).map(String));
}

export function streamFailure(body: StreamFailure): number {
  return "error" in body ? body.error.code : body.code;
}

export function optionalStaysOptional(image: components["schemas"]["glimpse.image.v1.Image"]): string {
  // @ts-expect-error postId is written only when set (proto3 optional), so it may be missing
  const post: string = image.postId;
  return post;
}

export function requestFormsDoNotRequireEverything(): UpdateImage["requestBody"]["content"]["application/json"] {
  return {};
}
`;

describe("a client generated from /openapi.json by openapi-typescript", () => {
  let dir: string;
  let types: string;

  beforeAll(async () => {
    const descriptors = await readFile(new URL("../../src/gen/descriptors.binpb", import.meta.url));
    const document = buildOpenApi(descriptors, "http://127.0.0.1:8080");
    types = astToString(await openapiTS(document as Parameters<typeof openapiTS>[0]));
    dir = await mkdtemp(path.join(tmpdir(), "glimpse-openapi-client-"));
    await writeFile(path.join(dir, "schema.d.ts"), types);
    await writeFile(path.join(dir, "client.ts"), CLIENT);
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("compiles ordinary use of the JSON routes, strictly and without a cast", () => {
    expect(CLIENT).not.toMatch(/\bas\s+[A-Z{(]|\bany\b|[\w)\]]!\./);
    const program = ts.createProgram([path.join(dir, "client.ts")], {
      strict: true,
      noEmit: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      lib: ["lib.es2022.d.ts"],
      types: [],
      noUnusedLocals: false,
    });
    const problems = ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined;
      return `${d.file ? path.basename(d.file.fileName) : ""}:${where ? where.line + 1 : ""} ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`;
    });
    expect(problems).toEqual([]);
  });

  it("names path parameters as grpc-gateway's generator does", () => {
    for (const template of ["/v1/images/{image.id}", "/v1/account/keys/{keyId}", "/v1/images/{imageId}/reactions/{kind}"]) {
      expect(types).toContain(`"${template}": {`);
    }
    expect(types).not.toContain('"/v1/account/keys/{key_id}"');
  });
});
