import type protobuf from "protobufjs";
import type { Contract, FieldInfo, MessageInfo } from "./descriptors.js";

/**
 * A message type as the JSON reader and writer walk it: the contract's field descriptions
 * joined with the property names protobufjs uses for them.
 */
export interface MessageSchema {
  info: MessageInfo;
  type: protobuf.Type;
  /** Fields in declaration order. */
  fields: FieldSlot[];
  /** Fields by JSON name and by proto name. */
  byName: Map<string, FieldSlot>;
}

/** One field and the property that holds it in a protobufjs message or plain object. */
export interface FieldSlot {
  info: FieldInfo;
  key: string;
}

/**
 * The plain form of a message that protobufjs encodes and decodes: properties named as
 * protobufjs names fields, 64-bit integers as Long, bytes as Uint8Array, enums as numbers,
 * maps as objects keyed by the key's text.
 */
export type Plain = Record<string, unknown>;

/** An object for arbitrary keys (map entries, Struct fields): `__proto__` is a key like any other. */
export function dictionary(): Record<string, unknown> {
  return Object.create(null) as Record<string, unknown>;
}

const cache = new WeakMap<Contract, Map<string, MessageSchema>>();

/** The schema of a message type by full name (without a leading dot). */
export function schemaOf(contract: Contract, fullName: string): MessageSchema {
  let schemas = cache.get(contract);
  if (!schemas) cache.set(contract, (schemas = new Map()));
  let schema = schemas.get(fullName);
  if (schema) return schema;
  const info = contract.messages.get(fullName);
  if (!info) throw new Error(`unknown message type ${fullName}`);
  const type = contract.root.lookupType(fullName);
  const fields = info.fields.map((field): FieldSlot => {
    const reflected = type.fieldsById[field.number];
    if (!reflected) throw new Error(`${fullName}: protobufjs has no field number ${field.number}`);
    return { info: field, key: reflected.name };
  });
  const byName = new Map<string, FieldSlot>();
  for (const slot of fields) {
    byName.set(slot.info.jsonName, slot);
    byName.set(slot.info.name, slot);
  }
  schema = { info, type, fields, byName };
  schemas.set(fullName, schema);
  return schema;
}

/** Encodes a plain message of `fullName` to protobuf bytes. */
export function encodeMessage(contract: Contract, fullName: string, plain: Plain): Uint8Array {
  return schemaOf(contract, fullName).type.encode(plain).finish();
}

/** Decodes protobuf bytes of `fullName`; unset fields are not own properties of the result. */
export function decodeMessage(contract: Contract, fullName: string, bytes: Uint8Array): Plain {
  return schemaOf(contract, fullName).type.decode(bytes) as unknown as Plain;
}

/** Full names of the well-known types whose JSON form is not an object of their fields. */
export const WRAPPERS: Record<string, string> = {
  "google.protobuf.DoubleValue": "double",
  "google.protobuf.FloatValue": "float",
  "google.protobuf.Int64Value": "int64",
  "google.protobuf.UInt64Value": "uint64",
  "google.protobuf.Int32Value": "int32",
  "google.protobuf.UInt32Value": "uint32",
  "google.protobuf.BoolValue": "bool",
  "google.protobuf.StringValue": "string",
  "google.protobuf.BytesValue": "bytes",
};

/** The message type an Any's type URL names (the part after the last `/`). */
export function typeNameOfUrl(url: string): string {
  return url.slice(url.lastIndexOf("/") + 1);
}
