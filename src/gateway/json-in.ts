import Long from "long";
import { DomainError, invalidArgument } from "../errors.js";
import type { Contract, FieldInfo } from "./descriptors.js";
import { dictionary, encodeMessage, schemaOf, typeNameOfUrl, WRAPPERS, type Plain } from "./schema.js";
import {
  checkFloat32,
  checkRange,
  parseBase64,
  parseDuration,
  parseFieldMask,
  parseIntegerText,
  parseTimestamp,
  TextFormError,
} from "./wkt.js";

/**
 * Proto3 JSON -> the plain form protobufjs encodes, with every check protojson makes, so a bad
 * value is an INVALID_ARGUMENT naming the field by its proto path (`image.tags[2]`) rather than
 * a failure deep in the encoder. Names are accepted in lowerCamelCase and as in the .proto.
 */
export interface ReadOptions {
  /**
   * Skip object members that name no field. grpc-gateway v2's default marshaler does
   * (protojson DiscardUnknown); false rejects them.
   */
  discardUnknown: boolean;
}

/**
 * Deepest nesting accepted, counted as protobuf counts it (each message level one; a JSON
 * object inside a Struct three: Value, Struct and the map entry; a list two): the gRPC
 * server's decoder refuses past 100 levels, so deeper JSON is a 400 here rather than a
 * failed decode there.
 */
const MAX_DEPTH = 96;

/** Reads a JSON value (already parsed) as a message of `typeName`. */
export function messageFromJson(contract: Contract, typeName: string, json: unknown, options: ReadOptions, path = ""): Plain {
  return new Reader(contract, options).message(typeName, json, path, 0);
}

/** Reads a JSON value as the value of one field (used for a body bound to a single field). */
export function fieldFromJson(contract: Contract, field: FieldInfo, json: unknown, options: ReadOptions, path: string): unknown {
  return new Reader(contract, options).field(field, json, path, 0);
}

/** Parses JSON text; malformed text is INVALID_ARGUMENT. */
export function parseJsonText(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalidArgument({ field: what, description: `is not valid JSON: ${(err as Error).message}` });
  }
}

function bad(path: string, description: string): never {
  if (!path) throw new DomainError("INVALID_ARGUMENT", `request body: ${description}`);
  throw invalidArgument({ field: path, description });
}

function describe(json: unknown): string {
  if (json === null) return "null";
  if (Array.isArray(json)) return "an array";
  if (typeof json === "object") return "an object";
  return `${typeof json} ${JSON.stringify(json)}`;
}

function isObject(json: unknown): json is Record<string, unknown> {
  return typeof json === "object" && json !== null && !Array.isArray(json);
}

class Reader {
  constructor(
    private readonly contract: Contract,
    private readonly options: ReadOptions,
  ) {}

  message(typeName: string, json: unknown, path: string, depth: number): Plain {
    if (depth > MAX_DEPTH) bad(path, "is nested too deeply");
    const special = this.wellKnown(typeName, json, path, depth);
    if (special !== undefined) return special;
    if (!isObject(json)) bad(path, `expected an object for ${typeName}, got ${describe(json)}`);
    const schema = schemaOf(this.contract, typeName);
    const out: Plain = {};
    const seen = new Set<number>();
    const oneofs = new Map<string, string>();
    for (const [name, value] of Object.entries(json)) {
      const slot = schema.byName.get(name);
      const at = path ? `${path}.${slot?.info.name ?? name}` : (slot?.info.name ?? name);
      if (!slot) {
        if (this.options.discardUnknown) continue;
        bad(at, `unknown field of ${typeName}`);
      }
      const field = slot.info;
      if (seen.has(field.number)) bad(at, "is given twice (by its JSON name and its proto name)");
      seen.add(field.number);
      if (value === null && !(field.type === "google.protobuf.Value" && !field.repeated && !field.mapKey)) continue;
      if (field.oneof) {
        const other = oneofs.get(field.oneof);
        if (other) bad(at, `only one of the oneof ${field.oneof} may be set; ${other} is already set`);
        oneofs.set(field.oneof, field.name);
      }
      out[slot.key] = this.field(field, value, at, depth + 1);
    }
    return out;
  }

  field(field: FieldInfo, json: unknown, path: string, depth: number): unknown {
    if (field.mapKey) {
      if (json === null) return {};
      if (!isObject(json)) bad(path, `expected an object (a map), got ${describe(json)}`);
      const out = dictionary();
      for (const [key, value] of Object.entries(json)) {
        const at = `${path}[${key}]`;
        out[this.mapKey(field.mapKey, key, at)] = this.single(field, value, at, depth);
      }
      return out;
    }
    if (field.repeated) {
      if (json === null) return [];
      if (!Array.isArray(json)) bad(path, `expected an array, got ${describe(json)}`);
      return json.map((item, i) => {
        if (item === null && field.type !== "google.protobuf.Value") bad(`${path}[${i}]`, "must not be null");
        return this.single(field, item, `${path}[${i}]`, depth);
      });
    }
    return this.single(field, json, path, depth);
  }

  private single(field: FieldInfo, json: unknown, path: string, depth: number): unknown {
    if (field.kind === "message") return this.message(field.type, json, path, depth + 1);
    if (field.kind === "enum") return this.enumValue(field.type, json, path);
    return this.scalar(field.type, json, path);
  }

  private mapKey(type: string, key: string, path: string): string {
    if (type === "string") return key;
    if (type === "bool") {
      if (key !== "true" && key !== "false") bad(path, "map key must be true or false");
      return key;
    }
    return String(this.guard(path, () => checkRange(parseIntegerText(key), type)));
  }

  enumValue(typeName: string, json: unknown, path: string): number {
    const info = this.contract.enums.get(typeName);
    if (!info) throw new Error(`unknown enum type ${typeName}`);
    if (typeName === "google.protobuf.NullValue" && json === null) return 0;
    if (typeof json === "string") {
      const value = info.values.find((v) => v.name === json);
      if (!value) bad(path, `unknown value ${JSON.stringify(json)} for ${typeName}; one of ${info.values.map((v) => v.name).join(", ")}`);
      return value.number;
    }
    if (typeof json === "number" && Number.isInteger(json)) {
      return Number(this.guard(path, () => checkRange(BigInt(json), "int32")));
    }
    bad(path, `expected an enum name of ${typeName}, got ${describe(json)}`);
  }

  scalar(type: string, json: unknown, path: string): unknown {
    switch (type) {
      case "string":
        if (typeof json !== "string") bad(path, `expected a string, got ${describe(json)}`);
        return json;
      case "bool":
        if (typeof json !== "boolean") bad(path, `expected true or false, got ${describe(json)}`);
        return json;
      case "bytes":
        if (typeof json !== "string") bad(path, `expected a base64 string, got ${describe(json)}`);
        return this.guard(path, () => parseBase64(json));
      case "double":
      case "float":
        return this.floating(type, json, path);
      default:
        return this.integer(type, json, path);
    }
  }

  private floating(type: string, json: unknown, path: string): number {
    let value: number;
    if (typeof json === "number") value = json;
    else if (typeof json === "string" && /^(NaN|-?Infinity)$/.test(json)) value = Number(json);
    else if (typeof json === "string" && /^-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(json)) value = Number(json);
    else bad(path, `expected a number, got ${describe(json)}`);
    return type === "float" ? this.guard(path, () => checkFloat32(value)) : value;
  }

  private integer(type: string, json: unknown, path: string): unknown {
    let value: bigint;
    if (typeof json === "number") {
      if (!Number.isInteger(json)) bad(path, `expected an integer, got ${json}`);
      value = BigInt(json);
    } else if (typeof json === "string") {
      value = this.guard(path, () => parseIntegerText(json));
    } else {
      bad(path, `expected an integer (a number or a string), got ${describe(json)}`);
    }
    this.guard(path, () => checkRange(value, type));
    if (type.endsWith("64")) return Long.fromString(value.toString(), type.startsWith("u") || type === "fixed64");
    return Number(value);
  }

  /** Runs a text-form parser, turning its failure into INVALID_ARGUMENT on `path`. */
  private guard<T>(path: string, parse: () => T): T {
    try {
      return parse();
    } catch (err) {
      if (err instanceof TextFormError) bad(path, err.message);
      throw err;
    }
  }

  /** The plain form of a well-known type with a special JSON form; undefined for other types. */
  private wellKnown(typeName: string, json: unknown, path: string, depth: number): Plain | undefined {
    const text = (what: string): string => {
      if (typeof json !== "string") bad(path, `expected ${what} string, got ${describe(json)}`);
      return json;
    };
    switch (typeName) {
      case "google.protobuf.Timestamp":
      case "google.protobuf.Duration": {
        const isTimestamp = typeName.endsWith("Timestamp");
        const value = text(isTimestamp ? "an RFC 3339 timestamp" : "a duration");
        const { seconds, nanos } = this.guard(path, () => (isTimestamp ? parseTimestamp(value) : parseDuration(value)));
        return { seconds: Long.fromString(seconds.toString()), nanos };
      }
      case "google.protobuf.FieldMask":
        return { paths: this.guard(path, () => parseFieldMask(text("a field mask"))) };
      case "google.protobuf.Struct":
        if (!isObject(json)) bad(path, `expected an object, got ${describe(json)}`);
        return { fields: this.structFields(json, path, depth) };
      case "google.protobuf.ListValue":
        if (!Array.isArray(json)) bad(path, `expected an array, got ${describe(json)}`);
        return { values: json.map((v, i) => this.jsonValue(v, `${path}[${i}]`, depth + 2)) };
      case "google.protobuf.Value":
        return this.jsonValue(json, path, depth);
      case "google.protobuf.Any":
        return this.any(json, path, depth);
    }
    const wrapped = WRAPPERS[typeName];
    if (wrapped) return { value: this.scalar(wrapped, json, path) };
    return undefined;
  }

  private structFields(json: Record<string, unknown>, path: string, depth: number): Plain {
    const fields = dictionary();
    for (const [key, value] of Object.entries(json)) fields[key] = this.jsonValue(value, `${path}.${key}`, depth + 3);
    return fields;
  }

  private jsonValue(json: unknown, path: string, depth: number): Plain {
    if (depth > MAX_DEPTH) bad(path, "is nested too deeply");
    if (json === null) return { nullValue: 0 };
    if (typeof json === "number") return { numberValue: json };
    if (typeof json === "string") return { stringValue: json };
    if (typeof json === "boolean") return { boolValue: json };
    if (Array.isArray(json)) return { listValue: { values: json.map((v, i) => this.jsonValue(v, `${path}[${i}]`, depth + 2)) } };
    return { structValue: { fields: this.structFields(json as Record<string, unknown>, path, depth) } };
  }

  private any(json: unknown, path: string, depth: number): Plain {
    if (!isObject(json)) bad(path, `expected an object with "@type", got ${describe(json)}`);
    const url = json["@type"];
    if (typeof url !== "string" || url === "") bad(`${path}.@type`, "is required");
    const typeName = typeNameOfUrl(url);
    if (!this.contract.messages.has(typeName)) bad(`${path}.@type`, `names a type this service does not know: ${url}`);
    const { "@type": _, ...rest } = json;
    const special = typeName.startsWith("google.protobuf.") && (WRAPPERS[typeName] || typeName in SPECIAL);
    const inner = special ? this.message(typeName, rest.value, `${path}.value`, depth + 1) : this.message(typeName, rest, path, depth + 1);
    return { typeUrl: url, value: encodeMessage(this.contract, typeName, inner) };
  }
}

/** Well-known types whose Any form carries their JSON under "value". */
const SPECIAL: Record<string, true> = {
  "google.protobuf.Timestamp": true,
  "google.protobuf.Duration": true,
  "google.protobuf.FieldMask": true,
  "google.protobuf.Struct": true,
  "google.protobuf.ListValue": true,
  "google.protobuf.Value": true,
  "google.protobuf.Any": true,
};
