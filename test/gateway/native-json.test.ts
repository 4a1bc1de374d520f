import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DomainError } from "../../src/errors.js";
import { loadContract } from "../../src/gateway/descriptors.js";
import { httpStatusOf, retryAfterSeconds, statusJson, statusOfError } from "../../src/gateway/errors.js";
import { messageFromJson } from "../../src/gateway/json-in.js";
import { messageToJson } from "../../src/gateway/json-out.js";
import { setFromText } from "../../src/gateway/params.js";
import { decodeMessage, encodeMessage, type Plain } from "../../src/gateway/schema.js";

const contract = loadContract(readFileSync(new URL("../../src/gen/descriptors.binpb", import.meta.url)));
const STRICT = { discardUnknown: false };
const LENIENT = { discardUnknown: true };

/** JSON in, through protobuf bytes, JSON out. */
function roundTrip(type: string, json: unknown, options = STRICT): any {
  const bytes = encodeMessage(contract, type, messageFromJson(contract, type, json, options));
  return messageToJson(contract, type, decodeMessage(contract, type, bytes));
}

/** The violation a bad input raises. */
function violation(read: () => unknown): { field: string; description: string } {
  try {
    read();
  } catch (err) {
    expect(err).toBeInstanceOf(DomainError);
    expect((err as DomainError).code).toBe("INVALID_ARGUMENT");
    return (err as DomainError).violations[0];
  }
  throw new Error("expected INVALID_ARGUMENT");
}

const IMAGE = "glimpse.image.v1.Image";

describe("the contract as read from the descriptors", () => {
  it("lists every annotated RPC with its bindings and the proto comments", () => {
    const upload = contract.methods.get("/glimpse.image.v1.ImageService/UploadImage")!;
    expect(upload.bindings).toEqual([{ method: "POST", template: "/v1/images", pathParams: [], body: "*", responseBody: "", additional: false }]);
    expect(upload.comment).toMatch(/^Stores one image/);
    const update = contract.methods.get("/glimpse.image.v1.ImageService/UpdateImage")!;
    expect(update.bindings[0]).toMatchObject({ method: "PATCH", pathParams: ["image.id"], body: "image" });
    const search = contract.methods.get("/glimpse.image.v1.ImageService/SearchImages")!;
    expect(search.bindings.map((b) => [b.method, b.additional])).toEqual([
      ["POST", false],
      ["GET", true],
    ]);
    expect(contract.methods.get("/glimpse.image.v1.ImageService/BatchUploadImages")).toMatchObject({ requestStream: true, responseStream: true });
    const fields = contract.messages.get("glimpse.image.v1.ImageFilter")!.fields;
    expect(fields.find((f) => f.name === "meta_equals")).toMatchObject({ mapKey: "string", kind: "scalar", type: "string", repeated: false });
    const id = contract.messages.get(IMAGE)!.fields[0];
    expect(id).toMatchObject({ name: "id", jsonName: "id", type: "int64", behaviors: ["IDENTIFIER"] });
    expect(contract.enums.get("glimpse.image.v1.NsfwLevel")!.values[1]).toMatchObject({ name: "NSFW_LEVEL_NONE", number: 1, comment: "Safe for everyone." });
  });
});

describe("proto3 JSON mapping", () => {
  it("reads timestamps with offsets and writes them in UTC with 0, 3, 6 or 9 fractional digits", () => {
    expect(roundTrip(IMAGE, { createdAt: "2024-02-29T23:30:00+01:30" }).createdAt).toBe("2024-02-29T22:00:00Z");
    expect(roundTrip(IMAGE, { createdAt: "2024-01-01T00:00:00.5Z" }).createdAt).toBe("2024-01-01T00:00:00.500Z");
    expect(roundTrip(IMAGE, { createdAt: "2024-01-01T00:00:00.000001Z" }).createdAt).toBe("2024-01-01T00:00:00.000001Z");
    expect(roundTrip(IMAGE, { createdAt: "2024-01-01T00:00:00.123456789Z" }).createdAt).toBe("2024-01-01T00:00:00.123456789Z");
    expect(violation(() => roundTrip(IMAGE, { createdAt: "2023-02-29T00:00:00Z" })).field).toBe("created_at");
    expect(violation(() => roundTrip(IMAGE, { createdAt: 1700000000 })).description).toContain("RFC 3339");
  });

  it("keeps 64-bit integers exact as strings, and reads numbers and exponent forms", () => {
    expect(roundTrip(IMAGE, { id: "18446744073709551" }).id).toBe("18446744073709551");
    expect(roundTrip(IMAGE, { id: "9223372036854775807" }).id).toBe("9223372036854775807");
    expect(roundTrip(IMAGE, { id: 12 }).id).toBe("12");
    expect(roundTrip(IMAGE, { id: "1e3" }).id).toBe("1000");
    expect(violation(() => roundTrip(IMAGE, { id: "9223372036854775808" })).description).toContain("out of range");
    expect(violation(() => roundTrip(IMAGE, { id: 1.5 })).field).toBe("id");
    expect(violation(() => roundTrip(IMAGE, { width: "1.5" })).field).toBe("width");
  });

  it("writes floats as the shortest decimal of the float32, and non-finite ones as strings", () => {
    const box = roundTrip("glimpse.image.v1.BoundingBox", { className: "a", x: 0.1, y: "2.5", width: "Infinity", confidence: "NaN" });
    expect(box).toEqual({ className: "a", x: 0.1, y: 2.5, width: "Infinity", height: 0, confidence: "NaN" });
    expect(violation(() => roundTrip("glimpse.image.v1.BoundingBox", { x: 1e39 })).description).toContain("out of range");
  });

  it("reads bytes in either base64 alphabet and writes standard base64", () => {
    const bytes = Buffer.from([0xfb, 0xff, 0xfe, 0x01]);
    expect(roundTrip(IMAGE, { content: bytes.toString("base64url") }).content).toBe(bytes.toString("base64"));
    expect(roundTrip(IMAGE, { content: bytes.toString("base64") }).content).toBe(bytes.toString("base64"));
    expect(violation(() => roundTrip(IMAGE, { content: "not base64!" })).field).toBe("content");
  });

  it("maps FieldMask paths between lowerCamelCase JSON and snake_case proto paths", () => {
    const type = "glimpse.image.v1.UpdateImageRequest";
    const plain = messageFromJson(contract, type, { updateMask: "fileName,nsfwLevel,tags" }, STRICT);
    expect(plain.updateMask).toEqual({ paths: ["file_name", "nsfw_level", "tags"] });
    expect(roundTrip(type, { update_mask: "file_name,meta" }).updateMask).toBe("fileName,meta");
  });

  it("reads and writes Struct as plain JSON", () => {
    const meta = { a: 1, b: "two", c: [true, null, { d: [] }], e: {} };
    expect(roundTrip(IMAGE, { meta }).meta).toEqual(meta);
    // Keys are data, even the ones that mean something to JavaScript objects.
    const odd = JSON.parse('{"__proto__": {"x": 1}, "constructor": "c"}');
    expect(JSON.stringify(roundTrip(IMAGE, { meta: odd }).meta)).toBe('{"__proto__":{"x":1},"constructor":"c"}');
  });

  it("accepts both names, skips unknown fields like grpc-gateway, and refuses them when strict", () => {
    expect(roundTrip(IMAGE, { file_name: "a", mystery: 1 }, LENIENT).fileName).toBe("a");
    expect(violation(() => roundTrip(IMAGE, { mystery: 1 })).field).toBe("mystery");
    expect(violation(() => roundTrip(IMAGE, { fileName: "a", file_name: "b" })).field).toBe("file_name");
  });

  it("refuses two members of a oneof and writes only the one that is set", () => {
    const type = "glimpse.image.v1.SearchImagesRequest";
    expect(violation(() => roundTrip(type, { prompt: "a", likeImageId: "1" })).description).toContain("oneof query");
    const out = roundTrip(type, { likeImageId: "5" });
    expect(out.likeImageId).toBe("5");
    expect(out).not.toHaveProperty("prompt");
    expect(out).not.toHaveProperty("likeImageContent");
  });

  it("names nested fields by their proto path, with indices", () => {
    const bad = violation(() => roundTrip(IMAGE, { annotations: { boxes: [{}, { confidence: "high" }] } }));
    expect(bad.field).toBe("annotations.boxes[1].confidence");
    expect(violation(() => roundTrip(IMAGE, { tags: "one" })).description).toContain("array");
    expect(violation(() => roundTrip(IMAGE, { tags: ["a", null] })).field).toBe("tags[1]");
    expect(violation(() => roundTrip(IMAGE, { nsfwLevel: true })).field).toBe("nsfw_level");
  });

  it("renders Any with its @type, and well-known types under value", () => {
    const status = {
      code: 3,
      message: "bad",
      details: [
        { "@type": "type.googleapis.com/google.rpc.BadRequest", fieldViolations: [{ field: "x", description: "y" }] },
        { "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "1.500s" },
        { "@type": "type.googleapis.com/google.protobuf.Timestamp", value: "2024-01-01T00:00:00Z" },
      ],
    };
    expect(roundTrip("google.rpc.Status", status)).toEqual({
      code: 3,
      message: "bad",
      details: [
        {
          "@type": "type.googleapis.com/google.rpc.BadRequest",
          fieldViolations: [{ field: "x", description: "y", reason: "", localizedMessage: null }],
        },
        { "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "1.500s" },
        { "@type": "type.googleapis.com/google.protobuf.Timestamp", value: "2024-01-01T00:00:00Z" },
      ],
    });
    expect(violation(() => roundTrip("google.rpc.Status", { details: [{ "@type": "type.googleapis.com/no.Such" }] })).field).toBe("details[0].@type");
  });
});

describe("fields from text (path, query and form parameters)", () => {
  const LIST = "glimpse.image.v1.ListImagesRequest";
  const read = (params: Record<string, string[]>, jsonMessages = false): Plain => {
    const target: Plain = {};
    for (const [name, values] of Object.entries(params)) setFromText(contract, LIST, target, name, values, { jsonMessages, strictNames: false });
    return messageToJson(contract, LIST, decodeMessage(contract, LIST, encodeMessage(contract, LIST, target))) as Plain;
  };

  it("reads nested, repeated, map, enum, bool and int64 parameters", () => {
    const out = read({
      "filter.tags": ["a", "b"],
      "filter.exclude_tags": ["c"],
      "filter.metaEquals[split]": ["train"],
      "filter.nsfwLevel": ["2"],
      "filter.nsfw": ["t"],
      "filter.postId": ["9007199254740993"],
      include_total: ["TRUE"],
      sort: ["IMAGE_SORT_OLDEST"],
    });
    expect(out).toMatchObject({
      filter: {
        tags: ["a", "b"],
        excludeTags: ["c"],
        metaEquals: { split: "train" },
        nsfwLevel: "NSFW_LEVEL_SOFT",
        nsfw: true,
        postId: "9007199254740993",
      },
      includeTotal: true,
      sort: "IMAGE_SORT_OLDEST",
    });
  });

  it("refuses bad values, naming the field", () => {
    expect(violation(() => read({ page_size: ["1", "2"] })).description).toContain("one value");
    expect(violation(() => read({ "filter.nsfw": ["maybe"] })).field).toBe("filter.nsfw");
    expect(violation(() => read({ sort: ["IMAGE_SORT_RANDOM"] })).description).toContain("IMAGE_SORT_NEWEST");
    expect(violation(() => read({ filter: ["{}"] })).field).toBe("filter");
    expect(violation(() => read({ "filter.metaEquals": ["x"] })).description).toContain("name[key]");
    expect(violation(() => read({ "sort.x": ["1"] })).field).toBe("sort");
  });

  it("reads message fields as JSON text in forms", () => {
    expect(read({ filter: ['{"tags": ["x"]}'] }, true)).toMatchObject({ filter: { tags: ["x"] } });
  });
});

describe("error statuses", () => {
  it("maps gRPC codes to HTTP statuses as grpc-gateway does", () => {
    const table = [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401];
    expect(table.map((_, code) => httpStatusOf(code))).toEqual(table);
    expect(httpStatusOf(99)).toBe(500);
  });

  it("renders a domain error's violations and retry delay as typed details", () => {
    const error = new DomainError("RESOURCE_EXHAUSTED", "slow down", { retryAfterMs: 1200, violations: [{ field: "f", description: "d" }] });
    expect(statusJson(error)).toEqual({
      code: 8,
      message: "slow down",
      details: [
        { "@type": "type.googleapis.com/google.rpc.BadRequest", fieldViolations: [{ field: "f", description: "d", reason: "", localizedMessage: null }] },
        { "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "1.200s" },
      ],
    });
    expect(retryAfterSeconds(statusOfError(error))).toBe(2);
    expect(statusJson(new Error("secret cause"))).toEqual({ code: 13, message: "internal error", details: [] });
  });
});
