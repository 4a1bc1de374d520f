import type { Contract, FieldInfo } from "./descriptors.js";
import { decodeMessage, dictionary, schemaOf, typeNameOfUrl, WRAPPERS, type Plain } from "./schema.js";
import { formatDuration, formatFieldMask, formatTimestamp, shortestFloat32 } from "./wkt.js";

/**
 * A decoded message -> proto3 JSON the way grpc-gateway v2's default marshaler writes it
 * (protojson with EmitUnpopulated): lowerCamelCase names; every field present with its
 * default, an unset message field as null, repeated fields as [], maps as {}; fields of a
 * oneof (and proto3 `optional` fields) only when set; 64-bit integers as strings; enums by
 * name; bytes as standard base64; the well-known types in their JSON forms.
 */
export function messageToJson(contract: Contract, typeName: string, message: Plain): unknown {
  return writerOf(contract).message(typeName, message);
}

/** The JSON of one field's value (for `response_body` bindings). */
export function fieldToJson(contract: Contract, field: FieldInfo, value: unknown): unknown {
  return writerOf(contract).field(field, value);
}

/** One writer per contract: what it learns of each type (its plan, its enums' names) is kept. */
const writers = new WeakMap<Contract, Writer>();

function writerOf(contract: Contract): Writer {
  let writer = writers.get(contract);
  if (!writer) writers.set(contract, (writer = new Writer(contract)));
  return writer;
}

/** The well-known types written in a JSON form of their own rather than as an object of fields. */
const SPECIAL = new Set([
  "google.protobuf.Timestamp",
  "google.protobuf.Duration",
  "google.protobuf.FieldMask",
  "google.protobuf.Struct",
  "google.protobuf.ListValue",
  "google.protobuf.Value",
  "google.protobuf.Any",
  ...Object.keys(WRAPPERS),
]);

/** How a message type is written, worked out once per type. */
interface Plan {
  special: boolean;
  fields: { info: FieldInfo; key: string; jsonName: string; onlyWhenSet: boolean }[];
}

const hasOwn = (o: object, key: string) => Object.prototype.hasOwnProperty.call(o, key);

/**
 * A protobufjs 64-bit value as a number, for Timestamp seconds (at most 12 digits, exact as a
 * number); a Long is read directly rather than through its text.
 */
function secondsOf(value: unknown): number {
  if (typeof value === "number") return Math.trunc(value);
  if (typeof value === "object" && value !== null && typeof (value as { toNumber?: unknown }).toNumber === "function") {
    return (value as { toNumber(): number }).toNumber();
  }
  return Number(bigintOf(value));
}

/** Reads a protobufjs 64-bit value (Long, number or string) as a bigint. */
function bigintOf(value: unknown): bigint {
  if (typeof value === "bigint") return value;
  if (typeof value === "number") return BigInt(Math.trunc(value));
  if (typeof value === "string") return BigInt(value);
  return BigInt(String(value));
}

class Writer {
  private readonly plans = new Map<string, Plan>();
  private readonly enumNames = new Map<string, Map<number, string>>();

  constructor(private readonly contract: Contract) {}

  message(typeName: string, message: Plain): unknown {
    const plan = this.plans.get(typeName) ?? this.plan(typeName);
    if (plan.special) {
      const special = this.wellKnown(typeName, message);
      if (special !== undefined) return special;
    }
    const out: Record<string, unknown> = {};
    for (const { info, key, jsonName, onlyWhenSet } of plan.fields) {
      const value = message[key];
      const present = value !== null && value !== undefined && hasOwn(message, key);
      if (onlyWhenSet && !present) continue;
      out[jsonName] = this.field(info, present ? value : undefined);
    }
    return out;
  }

  private plan(typeName: string): Plan {
    const special = SPECIAL.has(typeName);
    // A well-known type is written by its own rule whether or not the contract describes it;
    // any other unknown type fails here (schemaOf names it), as it always did.
    const fields = special && !this.contract.messages.has(typeName) ? [] : schemaOf(this.contract, typeName).fields;
    const plan: Plan = {
      special,
      fields: fields.map(({ info, key }) => ({ info, key, jsonName: info.jsonName, onlyWhenSet: Boolean(info.oneof || info.optional) })),
    };
    this.plans.set(typeName, plan);
    return plan;
  }

  field(field: FieldInfo, value: unknown): unknown {
    if (field.mapKey) {
      const out = dictionary();
      for (const [key, item] of Object.entries((value ?? {}) as Record<string, unknown>)) out[key] = this.single(field, item);
      return out;
    }
    if (field.repeated) return ((value ?? []) as unknown[]).map((item) => this.single(field, item));
    if (field.kind === "message" && value === undefined) return null;
    return this.single(field, value);
  }

  private single(field: FieldInfo, value: unknown): unknown {
    if (field.kind === "message") return this.message(field.type, (value ?? {}) as Plain);
    if (field.kind === "enum") return this.enumName(field.type, (value ?? 0) as number);
    return this.scalar(field.type, value);
  }

  private enumName(typeName: string, value: number): unknown {
    if (typeName === "google.protobuf.NullValue") return null;
    let names = this.enumNames.get(typeName);
    if (!names) {
      names = new Map();
      // The first name of a number wins (an alias comes after the value it aliases).
      for (const v of this.contract.enums.get(typeName)?.values ?? []) if (!names.has(v.number)) names.set(v.number, v.name);
      this.enumNames.set(typeName, names);
    }
    return names.get(value) ?? value;
  }

  scalar(type: string, value: unknown): unknown {
    switch (type) {
      case "string":
        return value ?? "";
      case "bool":
        return value ?? false;
      case "bytes":
        return value ? Buffer.from(value as Uint8Array).toString("base64") : "";
      case "double":
      case "float": {
        const n = (value ?? 0) as number;
        if (!Number.isFinite(n)) return Number.isNaN(n) ? "NaN" : n > 0 ? "Infinity" : "-Infinity";
        return type === "float" ? shortestFloat32(n) : n;
      }
      case "int64":
      case "uint64":
      case "sint64":
      case "fixed64":
      case "sfixed64":
        return value === undefined || value === null ? "0" : String(value);
      default:
        return (value ?? 0) as number;
    }
  }

  private wellKnown(typeName: string, message: Plain): unknown {
    switch (typeName) {
      case "google.protobuf.Timestamp":
        return formatTimestamp(secondsOf(message.seconds ?? 0), (message.nanos ?? 0) as number);
      case "google.protobuf.Duration":
        return formatDuration(bigintOf(message.seconds ?? 0), (message.nanos ?? 0) as number);
      case "google.protobuf.FieldMask":
        return formatFieldMask((message.paths ?? []) as string[]);
      case "google.protobuf.Struct":
        return this.struct(message);
      case "google.protobuf.ListValue":
        return ((message.values ?? []) as Plain[]).map((v) => this.jsonValue(v));
      case "google.protobuf.Value":
        return this.jsonValue(message);
      case "google.protobuf.Any":
        return this.any(message);
    }
    const wrapped = WRAPPERS[typeName];
    if (wrapped) return this.scalar(wrapped, message.value);
    return undefined;
  }

  private struct(message: Plain): Record<string, unknown> {
    const out = dictionary();
    for (const [key, value] of Object.entries((message.fields ?? {}) as Record<string, Plain>)) out[key] = this.jsonValue(value);
    return out;
  }

  private jsonValue(value: Plain): unknown {
    if (hasOwn(value, "numberValue")) return value.numberValue;
    if (hasOwn(value, "stringValue")) return value.stringValue;
    if (hasOwn(value, "boolValue")) return value.boolValue;
    if (hasOwn(value, "structValue")) return this.struct(value.structValue as Plain);
    if (hasOwn(value, "listValue")) return ((value.listValue as Plain).values as Plain[] | undefined ?? []).map((v) => this.jsonValue(v));
    return null;
  }

  private any(message: Plain): unknown {
    const url = (message.typeUrl ?? "") as string;
    const bytes = (message.value ?? new Uint8Array()) as Uint8Array;
    const typeName = typeNameOfUrl(url);
    if (!this.contract.messages.has(typeName)) {
      // protojson refuses types it cannot resolve; the bridge still shows what it got.
      return { "@type": url, value: Buffer.from(bytes).toString("base64") };
    }
    const inner = decodeMessage(this.contract, typeName, bytes);
    const special = this.wellKnown(typeName, inner);
    if (special !== undefined) return { "@type": url, value: special };
    return { "@type": url, ...(this.message(typeName, inner) as Record<string, unknown>) };
  }
}
