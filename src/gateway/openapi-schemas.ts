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
 * Which way a message travels: in a request (`required` lists the fields the contract marks
 * REQUIRED) or in an answer (`required` lists every field the bridge always writes: all but
 * oneof members and proto3 `optional` fields, which it writes only when set).
 */
export type Direction = "input" | "output";

/** Suffix of the request form of a message that also travels in answers. */
const INPUT_SUFFIX = "Input";

/**
 * Maps proto types to JSON Schema by the proto3 JSON mapping (the one grpc-gateway's default
 * marshaller writes) and collects a component for every message and enum it refers to.
 *
 * A message has one component, in the form of the direction it travels; one that travels both
 * ways (an Image read, and sent back in a PATCH) has its answer form under its own name and its
 * request form as `<name>Input`, so that generated clients see what is always there in answers
 * without having to send all of it.
 */
export class SchemaSet {
  readonly components: Record<string, Schema> = {};

  /**
   * `outputs`: the messages that travel in answers (reachable from a response type); all
   * others are request forms.
   */
  constructor(
    private readonly contract: Contract,
    private readonly outputs: ReadonlySet<string> = new Set(),
  ) {}

  /** The component name of a message or enum in a direction. */
  nameOf(typeName: string, direction: Direction): string {
    if (direction === "input" && this.outputs.has(typeName) && this.contract.messages.has(typeName)) {
      const name = typeName + INPUT_SUFFIX;
      if (this.contract.messages.has(name) || this.contract.enums.has(name)) {
        throw new Error(`${typeName} travels both ways, and ${name}, the name of its request form, is taken`);
      }
      return name;
    }
    return typeName;
  }

  /** A `$ref` to the component of a type in a direction (added if missing). */
  refOf(typeName: string, direction: Direction): Schema {
    this.include(typeName, direction);
    return refTo(this.nameOf(typeName, direction));
  }

  /**
   * Adds the component for a message or enum (and everything it refers to), by default in
   * the direction it travels (as an answer when it ever does).
   */
  include(typeName: string, direction: Direction = this.outputs.has(typeName) ? "output" : "input"): void {
    const name = this.nameOf(typeName, direction);
    if (name in this.components || typeName in WELL_KNOWN) return;
    const e = this.contract.enums.get(typeName);
    if (e) {
      const list = e.values.map((v) => `- \`${v.name}\`${v.comment ? `: ${oneLine(docText(v.comment))}` : ""}`);
      this.components[name] = {
        type: "string",
        enum: e.values.map((v) => v.name),
        description: [docText(e.comment), list.join("\n")].filter(Boolean).join("\n\n"),
      };
      return;
    }
    const message = this.contract.messages.get(typeName);
    if (!message || message.mapEntry) return;
    this.components[name] = {}; // placeholder against cycles
    this.components[name] = this.messageSchema(message, new Set(), direction);
  }

  /** The object schema of a message, without the top-level fields named in `omit`. */
  messageSchema(message: MessageInfo, omit: ReadonlySet<string>, direction: Direction): Schema {
    const properties: Record<string, Schema> = {};
    const required: string[] = [];
    for (const field of message.fields) {
      if (omit.has(field.name)) continue;
      properties[field.jsonName] = this.fieldSchema(field, direction);
      const always = direction === "output" ? !field.optional && field.oneof === undefined : field.behaviors.includes("REQUIRED");
      if (always) required.push(field.jsonName);
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
  fieldSchema(field: FieldInfo, direction: Direction): Schema {
    let schema: Schema;
    if (field.mapKey) {
      schema = { type: "object", additionalProperties: this.valueSchema(field, direction) };
    } else if (field.repeated) {
      schema = { type: "array", items: this.valueSchema(field, direction) };
    } else if (field.kind === "message" && field.oneof === undefined) {
      schema = nullable(this.valueSchema(field, direction));
    } else {
      schema = this.valueSchema(field, direction);
    }
    return annotate(schema, field);
  }

  /** The schema of one value of a field (an element of a repeated field, a value of a map). */
  valueSchema(field: FieldInfo, direction: Direction): Schema {
    if (field.kind === "message") {
      const known = WELL_KNOWN[field.type];
      if (known) return { ...known };
      return this.refOf(field.type, direction);
    }
    if (field.kind === "enum") {
      if (field.type === "google.protobuf.NullValue") return { type: "null" };
      return this.refOf(field.type, direction);
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
