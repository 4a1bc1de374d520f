import type { Contract, FieldInfo, MessageInfo, ScalarType } from "./descriptors.js";

/** A JSON Schema object as OpenAPI 3.1 writes it. */
export type Schema = Record<string, unknown>;

/**
 * Well-known types in their proto3 JSON form, written inline instead of as components:
 * a Timestamp is an RFC 3339 string, a Struct a plain object, a FieldMask a comma-separated
 * string of lowerCamelCase paths, and so on.
 */
const WELL_KNOWN: Record<string, Schema> = {
  "google.protobuf.Timestamp": { type: "string", format: "date-time" },
  "google.protobuf.Duration": { type: "string", pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$", examples: ["1.5s"] },
  "google.protobuf.FieldMask": {
    type: "string",
    description: "Comma-separated field paths in lowerCamelCase, for example `tags,nsfwLevel`.",
  },
  "google.protobuf.Struct": { type: "object", additionalProperties: true },
  "google.protobuf.Value": {},
  "google.protobuf.ListValue": { type: "array", items: {} },
  "google.protobuf.Empty": { type: "object" },
  "google.protobuf.Any": {
    type: "object",
    properties: { "@type": { type: "string", description: "Type URL of the embedded message." } },
    required: ["@type"],
    additionalProperties: true,
  },
  "google.protobuf.DoubleValue": { type: "number", format: "double" },
  "google.protobuf.FloatValue": { type: "number", format: "float" },
  "google.protobuf.Int64Value": { type: "string", format: "int64" },
  "google.protobuf.UInt64Value": { type: "string", format: "uint64" },
  "google.protobuf.Int32Value": { type: "integer", format: "int32" },
  "google.protobuf.UInt32Value": { type: "integer", format: "uint32", minimum: 0 },
  "google.protobuf.BoolValue": { type: "boolean" },
  "google.protobuf.StringValue": { type: "string" },
  "google.protobuf.BytesValue": { type: "string", format: "byte" },
};

/** Well-known types that travel as one query parameter (the others cannot). */
const QUERY_WELL_KNOWN = new Set(
  Object.keys(WELL_KNOWN).filter((name) => !/\.(Struct|Value|ListValue|Empty|Any)$/.test(name)),
);

const SCALARS: Record<ScalarType, Schema> = {
  double: { type: "number", format: "double" },
  float: { type: "number", format: "float" },
  int32: { type: "integer", format: "int32" },
  sint32: { type: "integer", format: "int32" },
  sfixed32: { type: "integer", format: "int32" },
  uint32: { type: "integer", format: "uint32", minimum: 0 },
  fixed32: { type: "integer", format: "uint32", minimum: 0 },
  // proto3 JSON writes 64-bit integers as decimal strings, since JSON numbers lose precision.
  int64: { type: "string", format: "int64" },
  sint64: { type: "string", format: "int64" },
  sfixed64: { type: "string", format: "int64" },
  uint64: { type: "string", format: "uint64" },
  fixed64: { type: "string", format: "uint64" },
  bool: { type: "boolean" },
  string: { type: "string" },
  bytes: { type: "string", format: "byte" },
};

/**
 * A proto comment as documentation: lint directives (`buf:lint:ignore ...`) are instructions
 * to a tool, not to readers, and are dropped.
 */
export function docText(comment: string): string {
  return comment
    .split("\n")
    .filter((line) => !/^\s*(buf:lint:|protolint:)/.test(line))
    .join("\n")
    .trim();
}

/** `#/components/schemas/<full name>`. */
export function refTo(typeName: string): Schema {
  return { $ref: `#/components/schemas/${typeName}` };
}

/**
 * Maps proto types to JSON Schema by the proto3 JSON mapping (the one grpc-gateway's default
 * marshaller writes) and collects a component for every message and enum it refers to.
 */
export class SchemaSet {
  readonly components: Record<string, Schema> = {};

  constructor(private readonly contract: Contract) {}

  /** Adds the component for a message or enum (and everything it refers to). */
  include(typeName: string): void {
    if (typeName in this.components || typeName in WELL_KNOWN) return;
    const e = this.contract.enums.get(typeName);
    if (e) {
      const list = e.values.map((v) => `- \`${v.name}\`${v.comment ? `: ${oneLine(docText(v.comment))}` : ""}`);
      this.components[typeName] = {
        type: "string",
        enum: e.values.map((v) => v.name),
        description: [docText(e.comment), list.join("\n")].filter(Boolean).join("\n\n"),
      };
      return;
    }
    const message = this.contract.messages.get(typeName);
    if (!message || message.mapEntry) return;
    this.components[typeName] = {}; // placeholder against cycles
    this.components[typeName] = this.messageSchema(message, new Set());
  }

  /** The object schema of a message, without the top-level fields named in `omit`. */
  messageSchema(message: MessageInfo, omit: ReadonlySet<string>): Schema {
    const properties: Record<string, Schema> = {};
    const required: string[] = [];
    for (const field of message.fields) {
      if (omit.has(field.name)) continue;
      properties[field.jsonName] = this.fieldSchema(field);
      if (field.behaviors.includes("REQUIRED")) required.push(field.jsonName);
    }
    const schema: Schema = { type: "object" };
    if (message.comment) schema.description = docText(message.comment);
    schema.properties = properties;
    if (required.length > 0) schema.required = required;
    return schema;
  }

  /**
   * The schema of a field as it appears in a message: arrays for repeated fields, objects for
   * maps, and null allowed for a singular message field, which the bridge writes as `null`
   * when unset. Carries the field's comment and behaviours.
   */
  fieldSchema(field: FieldInfo): Schema {
    let schema: Schema;
    if (field.mapKey) {
      schema = { type: "object", additionalProperties: this.valueSchema(field) };
    } else if (field.repeated) {
      schema = { type: "array", items: this.valueSchema(field) };
    } else if (field.kind === "message" && field.oneof === undefined) {
      schema = nullable(this.valueSchema(field));
    } else {
      schema = this.valueSchema(field);
    }
    return annotate(schema, field);
  }

  /** The schema of one value of a field (an element of a repeated field, a value of a map). */
  valueSchema(field: FieldInfo): Schema {
    if (field.kind === "message") {
      const known = WELL_KNOWN[field.type];
      if (known) return { ...known };
      this.include(field.type);
      return refTo(field.type);
    }
    if (field.kind === "enum") {
      if (field.type === "google.protobuf.NullValue") return { type: "null" };
      this.include(field.type);
      return refTo(field.type);
    }
    return { ...(SCALARS[field.type as ScalarType] ?? { type: "string" }) };
  }

  /** Whether a field is a message that query parameters can reach into by `parent.child`. */
  isNestedMessage(field: FieldInfo): boolean {
    return field.kind === "message" && !field.repeated && !field.mapKey && !(field.type in WELL_KNOWN);
  }

  /** Whether a field can be one query parameter (a scalar, an enum or a scalar well-known type). */
  isQueryValue(field: FieldInfo): boolean {
    if (field.mapKey) return false;
    if (field.kind !== "message") return true;
    return !field.repeated && QUERY_WELL_KNOWN.has(field.type);
  }
}

/** Lets a schema also be `null`. */
function nullable(schema: Schema): Schema {
  if (typeof schema.$ref === "string") return { anyOf: [schema, { type: "null" }] };
  if (typeof schema.type === "string") return { ...schema, type: [schema.type, "null"] };
  return schema; // already admits null (google.protobuf.Value)
}

/** Adds the field's comment and behaviours (output only, input only) to its schema. */
function annotate(schema: Schema, field: FieldInfo): Schema {
  const out: Schema = { ...schema };
  const notes: string[] = [];
  if (field.comment) notes.push(docText(field.comment));
  if (typeof schema.description === "string") notes.push(schema.description);
  if (field.oneof) notes.push(`Member of the oneof \`${field.oneof}\`: at most one of its fields is set.`);
  if (notes.length > 0) out.description = notes.join("\n\n");
  if (field.behaviors.includes("OUTPUT_ONLY")) out.readOnly = true;
  if (field.behaviors.includes("INPUT_ONLY")) out.writeOnly = true;
  return out;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ");
}
