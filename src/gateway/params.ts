import Long from "long";
import { invalidArgument } from "../errors.js";
import type { Contract, FieldInfo } from "./descriptors.js";
import { messageFromJson, parseJsonText, type ReadOptions } from "./json-in.js";
import { dictionary, schemaOf, WRAPPERS, type Plain } from "./schema.js";
import {
  checkFloat32,
  checkRange,
  parseBase64,
  parseDuration,
  parseFieldMask,
  parseTimestamp,
  TextFormError,
} from "./wkt.js";

/**
 * Request fields given as text: path parameters, query parameters, form fields and multipart
 * parts, the way grpc-gateway v2 reads query parameters. A dotted name reaches into nested
 * messages (`filter.tags`); each segment may be the JSON or the proto name; a repeated field
 * takes every value of its repeated key; a map entry is written `name[key]=value`; enums by
 * name or number; booleans as Go's strconv.ParseBool reads them; Timestamp, Duration,
 * FieldMask and the wrappers in their JSON text forms; Struct, Value and ListValue as JSON.
 */
export interface TextOptions {
  /** Accept any message field as JSON text (form and multipart fields); otherwise only the well-known types. */
  jsonMessages: boolean;
  /** Fail on a name that matches no field (path parameters); otherwise ignore it (query parameters). */
  strictNames: boolean;
}

const READ: ReadOptions = { discardUnknown: true };
const KEYED = /^(.*)\[(.*)\]$/;

/**
 * Sets the field named by `name` (dotted, optionally `name[key]`) of the plain message `target`
 * of type `typeName` from its text values. `skip` lists proto field paths already bound
 * elsewhere (the path, the body): a name under one of them is ignored.
 */
export function setFromText(
  contract: Contract,
  typeName: string,
  target: Plain,
  name: string,
  values: string[],
  options: TextOptions,
  skip: string[] = [],
): void {
  let mapKey: string | undefined;
  const keyed = KEYED.exec(name);
  if (keyed) [, name, mapKey] = keyed;
  const segments = name.split(".");
  let schema = schemaOf(contract, typeName);
  let message = target;
  const protoPath: string[] = [];
  for (let i = 0; i < segments.length; i++) {
    const slot = schema.byName.get(segments[i]);
    if (!slot) {
      if (options.strictNames) throw invalidArgument({ field: name, description: `names no field of ${schema.info.fullName}` });
      return;
    }
    const field = slot.info;
    protoPath.push(field.name);
    const path = protoPath.join(".");
    if (skip.some((bound) => path === bound || path.startsWith(`${bound}.`))) return;
    if (i === segments.length - 1) {
      message[slot.key] = valueOf(contract, field, message[slot.key], values, mapKey, path, options);
      claimOneof(schema.fields, message, slot.key, field, path);
      return;
    }
    if (field.kind !== "message" || field.repeated || field.mapKey || isSpecial(field.type)) {
      throw invalidArgument({ field: path, description: `has no field ${JSON.stringify(segments[i + 1])}` });
    }
    claimOneof(schema.fields, message, slot.key, field, path);
    message = (message[slot.key] ??= {}) as Plain;
    schema = schemaOf(contract, field.type);
  }
}

/** grpc-gateway refuses a second member of a oneof. */
function claimOneof(fields: { info: FieldInfo; key: string }[], message: Plain, key: string, field: FieldInfo, path: string): void {
  if (!field.oneof) return;
  const other = fields.find((f) => f.info.oneof === field.oneof && f.key !== key && message[f.key] !== undefined);
  if (!other) return;
  const description = `only one of the oneof ${field.oneof} may be set; ${other.info.name} is already set`;
  throw invalidArgument({ field: path, description });
}

function valueOf(
  contract: Contract,
  field: FieldInfo,
  current: unknown,
  values: string[],
  mapKey: string | undefined,
  path: string,
  options: TextOptions,
): unknown {
  if (field.mapKey) {
    if (mapKey === undefined) throw invalidArgument({ field: path, description: "is a map: write its entries as name[key]=value" });
    if (values.length !== 1) throw invalidArgument({ field: `${path}[${mapKey}]`, description: "takes exactly one value" });
    const keyType = field.mapKey;
    const key = keyType === "string" || keyType === "bool" ? mapKey : String(guard(path, () => intText(mapKey, keyType)));
    const entries = (current as Record<string, unknown> | undefined) ?? dictionary();
    entries[key] = single(contract, field, values[0], `${path}[${mapKey}]`, options);
    return entries;
  }
  if (mapKey !== undefined) throw invalidArgument({ field: path, description: "is not a map" });
  if (field.repeated) {
    return [...((current as unknown[]) ?? []), ...values.map((v, i) => single(contract, field, v, `${path}[${i}]`, options))];
  }
  if (values.length > 1) throw invalidArgument({ field: path, description: `takes one value, got ${values.length}` });
  return single(contract, field, values[0], path, options);
}

function single(contract: Contract, field: FieldInfo, text: string, path: string, options: TextOptions): unknown {
  if (field.kind === "enum") return enumText(contract, field.type, text, path);
  if (field.kind === "scalar") return guard(path, () => scalarText(field.type, text));
  switch (field.type) {
    case "google.protobuf.Timestamp":
    case "google.protobuf.Duration": {
      const { seconds, nanos } = guard(path, () => (field.type.endsWith("Timestamp") ? parseTimestamp(text) : parseDuration(text)));
      return { seconds: Long.fromString(seconds.toString()), nanos };
    }
    case "google.protobuf.FieldMask":
      return { paths: guard(path, () => parseFieldMask(text)) };
  }
  const wrapped = WRAPPERS[field.type];
  if (wrapped) return { value: guard(path, () => scalarText(wrapped, text)) };
  if (isJsonType(field.type) || options.jsonMessages) {
    return messageFromJson(contract, field.type, parseJsonText(text, path), READ, path);
  }
  throw invalidArgument({ field: path, description: `is a ${field.type} message, which cannot be given as text here` });
}

function enumText(contract: Contract, typeName: string, text: string, path: string): number {
  const info = contract.enums.get(typeName)!;
  const byName = info.values.find((v) => v.name === text);
  if (byName) return byName.number;
  const byNumber = /^-?\d+$/.test(text) ? info.values.find((v) => v.number === Number(text)) : undefined;
  if (byNumber) return byNumber.number;
  throw invalidArgument({
    field: path,
    description: `unknown value ${JSON.stringify(text)} for ${typeName}; one of ${info.values.map((v) => v.name).join(", ")}`,
  });
}

function scalarText(type: string, text: string): unknown {
  switch (type) {
    case "string":
      return text;
    case "bytes":
      return parseBase64(text);
    case "bool":
      if (["1", "t", "T", "TRUE", "true", "True"].includes(text)) return true;
      if (["0", "f", "F", "FALSE", "false", "False"].includes(text)) return false;
      throw new TextFormError(`expected true or false, got ${JSON.stringify(text)}`);
    case "double":
    case "float": {
      let value: number;
      if (/^[+-]?(inf|infinity)$/i.test(text)) value = text.startsWith("-") ? -Infinity : Infinity;
      else if (/^nan$/i.test(text)) value = NaN;
      else if (/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) value = Number(text);
      else throw new TextFormError(`expected a number, got ${JSON.stringify(text)}`);
      return type === "float" ? checkFloat32(value) : value;
    }
    default: {
      const value = intText(text, type);
      return type.endsWith("64") ? Long.fromString(value.toString(), type.startsWith("u") || type === "fixed64") : Number(value);
    }
  }
}

/** A decimal integer as Go's strconv.ParseInt reads it, checked against the type's range. */
function intText(text: string, type: string): bigint {
  if (!/^[+-]?\d+$/.test(text)) throw new TextFormError(`expected an integer, got ${JSON.stringify(text)}`);
  return checkRange(BigInt(text.replace(/^\+/, "")), type);
}

function guard<T>(path: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof TextFormError) throw invalidArgument({ field: path, description: err.message });
    throw err;
  }
}

/** Message types read as JSON text even in a query string. */
function isJsonType(type: string): boolean {
  return type === "google.protobuf.Struct" || type === "google.protobuf.Value" || type === "google.protobuf.ListValue";
}

/** Well-known types that are leaves in a dotted name. */
function isSpecial(type: string): boolean {
  return type.startsWith("google.protobuf.") && (isJsonType(type) || type in WRAPPERS || /Timestamp|Duration|FieldMask|Any$/.test(type));
}
