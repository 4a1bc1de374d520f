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
  return new Writer(contract).message(typeName, message);
}

/** The JSON of one field's value (for `response_body` bindings). */
export function fieldToJson(contract: Contract, field: FieldInfo, value: unknown): unknown {
  return new Writer(contract).field(field, value);
}

const hasOwn = (o: object, key: string) => Object.prototype.hasOwnProperty.call(o, key);

/** Reads a protobufjs 64-bit value (Long, number or string) as a bigint. */
function bigintOf(value: unknown): bigint {
  if (typeof value === "bigint") return value;
  if (typeof value === "number") return BigInt(Math.trunc(value));
  if (typeof value === "string") return BigInt(value);
  return BigInt(String(value));
}

class Writer {
  constructor(private readonly contract: Contract) {}

  message(typeName: string, message: Plain): unknown {
    const special = this.wellKnown(typeName, message);
    if (special !== undefined) return special;
    const schema = schemaOf(this.contract, typeName);
    const out: Record<string, unknown> = {};
    for (const { info, key } of schema.fields) {
      const value = message[key];
      const present = hasOwn(message, key) && value !== null && value !== undefined;
      if ((info.oneof || info.optional) && !present) continue;
      out[info.jsonName] = this.field(info, present ? value : undefined);
    }
    return out;
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
    const info = this.contract.enums.get(typeName);
    return info?.values.find((v) => v.number === value)?.name ?? value;
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
        return formatTimestamp(bigintOf(message.seconds ?? 0), (message.nanos ?? 0) as number);
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
