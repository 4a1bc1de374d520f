import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import "protobufjs/ext/descriptor.js";

/**
 * The contract as the HTTP bridge and the OpenAPI document see it, read from the serialized
 * FileDescriptorSet (`buf build -o`, with source info): services, methods with their
 * google.api.http bindings, message and enum types with their comments and field behaviours,
 * and a protobufjs reflection root that encodes and decodes every type.
 */
export interface Contract {
  /** protobufjs reflection of every type in the set; field names are their lowerCamelCase JSON names. */
  root: protobuf.Root;
  services: ServiceInfo[];
  /** Methods by gRPC path, e.g. `/glimpse.image.v1.ImageService/GetImage`. */
  methods: Map<string, MethodInfo>;
  /** Message types by full name without a leading dot, e.g. `glimpse.image.v1.Image`. */
  messages: Map<string, MessageInfo>;
  /** Enum types by full name without a leading dot. */
  enums: Map<string, EnumInfo>;
}

/** One service of the contract. */
export interface ServiceInfo {
  /** Simple name, e.g. `ImageService`. */
  name: string;
  /** Full name, e.g. `glimpse.image.v1.ImageService`. */
  fullName: string;
  /** The .proto file that declares it, e.g. `glimpse/image/v1/image_service.proto`. */
  file: string;
  comment: string;
  methods: MethodInfo[];
}

/** One RPC. */
export interface MethodInfo {
  name: string;
  /** Full name of the service. */
  service: string;
  /** gRPC path: `/<service full name>/<method name>`. */
  path: string;
  /** Full name of the request message. */
  requestType: string;
  /** Full name of the response message. */
  responseType: string;
  requestStream: boolean;
  responseStream: boolean;
  comment: string;
  /** The google.api.http rule followed by its additional_bindings; empty when unannotated. */
  bindings: HttpBinding[];
}

/** One HTTP binding of an RPC (the primary rule or one of its additional_bindings). */
export interface HttpBinding {
  /** Upper-case HTTP method (GET, POST, PUT, PATCH, DELETE, or a custom kind). */
  method: string;
  /** The path template as annotated, e.g. `/v1/images/{image.id}`. */
  template: string;
  /** Request fields bound by the path, as proto field paths in template order, e.g. `["image.id"]`. */
  pathParams: string[];
  /** `""` (no body), `"*"` (the whole request), or the proto name of the request field the body holds. */
  body: string;
  /** `""` (the whole response), or the proto name of the response field sent as the body. */
  responseBody: string;
  /** False for the primary rule, true for an additional binding. */
  additional: boolean;
}

/** Scalar field types, as protobuf names them. */
export type ScalarType =
  | "double"
  | "float"
  | "int64"
  | "uint64"
  | "int32"
  | "fixed64"
  | "fixed32"
  | "bool"
  | "string"
  | "bytes"
  | "uint32"
  | "sfixed32"
  | "sfixed64"
  | "sint32"
  | "sint64";

/** One message type. */
export interface MessageInfo {
  /** Simple name, e.g. `Image` (a nested type has its own simple name, e.g. `FieldViolation`). */
  name: string;
  fullName: string;
  file: string;
  comment: string;
  /** Fields in declaration order (the order JSON output uses). */
  fields: FieldInfo[];
  /** Real oneofs (not the synthetic ones of proto3 `optional`), with the proto names of their fields. */
  oneofs: { name: string; comment: string; fields: string[] }[];
  /** True for the synthetic entry type of a map field. */
  mapEntry: boolean;
}

/** One field of a message. */
export interface FieldInfo {
  /** Proto name, e.g. `file_name`. */
  name: string;
  /** JSON name, e.g. `fileName`. */
  jsonName: string;
  number: number;
  /** Whether the type (of the value, for a map) is a scalar, an enum or a message. */
  kind: "scalar" | "enum" | "message";
  /** A ScalarType for scalars; the full name of the enum or message type otherwise. */
  type: string;
  repeated: boolean;
  /** Key type when the field is a map (`type` and `kind` then describe the value). */
  mapKey?: ScalarType;
  /** Declared with proto3 `optional`: it has presence, and JSON output leaves it out when unset. */
  optional: boolean;
  /** Name of the real oneof the field belongs to, if any. */
  oneof?: string;
  /** google.api.field_behavior values, e.g. `["REQUIRED"]`, `["OUTPUT_ONLY"]`. */
  behaviors: string[];
  comment: string;
}

/** One enum type. */
export interface EnumInfo {
  name: string;
  fullName: string;
  file: string;
  comment: string;
  values: { name: string; number: number; comment: string }[];
}

/* Raw descriptor shapes, as protobufjs' toObject renders the decoded set. */
interface RawField {
  name: string;
  number: number;
  label?: string;
  type?: string;
  typeName?: string;
  jsonName?: string;
  oneofIndex?: number;
  proto3Optional?: boolean;
  options?: { ".google.api.fieldBehavior"?: string[] };
}
interface RawMessage {
  name: string;
  field: RawField[];
  nestedType: RawMessage[];
  enumType: RawEnum[];
  oneofDecl: { name: string }[];
  options?: { mapEntry?: boolean };
}
interface RawEnum {
  name: string;
  value: { name: string; number: number }[];
}
interface RawRule {
  get?: string;
  put?: string;
  post?: string;
  delete?: string;
  patch?: string;
  custom?: { kind: string; path: string };
  body?: string;
  responseBody?: string;
  additionalBindings?: RawRule[];
}
interface RawMethod {
  name: string;
  inputType: string;
  outputType: string;
  clientStreaming?: boolean;
  serverStreaming?: boolean;
  options?: { ".google.api.http"?: RawRule };
}
interface RawFile {
  name: string;
  package?: string;
  messageType: RawMessage[];
  enumType: RawEnum[];
  service: { name: string; method: RawMethod[] }[];
  sourceCodeInfo?: { location: { path: number[]; leadingComments?: string }[] };
}

const TYPE_NAMES: Record<string, ScalarType> = {
  TYPE_DOUBLE: "double",
  TYPE_FLOAT: "float",
  TYPE_INT64: "int64",
  TYPE_UINT64: "uint64",
  TYPE_INT32: "int32",
  TYPE_FIXED64: "fixed64",
  TYPE_FIXED32: "fixed32",
  TYPE_BOOL: "bool",
  TYPE_STRING: "string",
  TYPE_BYTES: "bytes",
  TYPE_UINT32: "uint32",
  TYPE_SFIXED32: "sfixed32",
  TYPE_SFIXED64: "sfixed64",
  TYPE_SINT32: "sint32",
  TYPE_SINT64: "sint64",
};

/**
 * Reads a serialized FileDescriptorSet. The set must include google/protobuf/descriptor.proto
 * and google/api/annotations.proto (buf includes imports by default): the set is decoded a
 * second time with its own descriptor types, which is how the google.api.http and
 * google.api.field_behavior options become readable without hand-written option types.
 */
export function loadContract(descriptors: Uint8Array): Contract {
  const root = protobuf.Root.fromDescriptor(descriptors);
  const setType = root.lookupType("google.protobuf.FileDescriptorSet");
  const set = setType.toObject(setType.decode(descriptors), { enums: String, longs: String, arrays: true }) as {
    file: RawFile[];
  };
  const contract: Contract = { root, services: [], methods: new Map(), messages: new Map(), enums: new Map() };
  for (const file of set.file) readFile(file, contract);
  return contract;
}

let bundled: Contract | undefined;

/**
 * The contract compiled into this build (src/gen/descriptors.binpb), loaded once. For code
 * that renders protobuf messages (status details) without being handed the descriptors.
 */
export function bundledContract(): Contract {
  if (!bundled) {
    const file = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "gen", "descriptors.binpb");
    bundled = loadContract(readFileSync(file));
  }
  return bundled;
}

function readFile(file: RawFile, contract: Contract): void {
  const comments = new Map<string, string>();
  for (const location of file.sourceCodeInfo?.location ?? []) {
    if (location.leadingComments) comments.set(location.path.join("."), cleanComment(location.leadingComments));
  }
  const commentAt = (at: number[]) => comments.get(at.join(".")) ?? "";
  const scope = file.package ? `${file.package}.` : "";

  const readEnum = (raw: RawEnum, prefix: string, at: number[]) => {
    const fullName = prefix + raw.name;
    contract.enums.set(fullName, {
      name: raw.name,
      fullName,
      file: file.name,
      comment: commentAt(at),
      values: raw.value.map((v, i) => ({ name: v.name, number: v.number, comment: commentAt([...at, 2, i]) })),
    });
  };

  const readMessage = (raw: RawMessage, prefix: string, at: number[]) => {
    const fullName = prefix + raw.name;
    const fields = raw.field.map((f, i): FieldInfo => fieldInfo(f, raw, commentAt([...at, 2, i])));
    const oneofs = raw.oneofDecl
      .map((o, index) => ({
        name: o.name,
        comment: commentAt([...at, 8, index]),
        fields: raw.field.filter((f) => f.oneofIndex === index && !f.proto3Optional).map((f) => f.name),
      }))
      .filter((o) => o.fields.length > 0);
    contract.messages.set(fullName, {
      name: raw.name,
      fullName,
      file: file.name,
      comment: commentAt(at),
      fields,
      oneofs,
      mapEntry: raw.options?.mapEntry === true,
    });
    raw.nestedType.forEach((n, i) => readMessage(n, `${fullName}.`, [...at, 3, i]));
    raw.enumType.forEach((e, i) => readEnum(e, `${fullName}.`, [...at, 4, i]));
  };

  file.messageType.forEach((m, i) => readMessage(m, scope, [4, i]));
  file.enumType.forEach((e, i) => readEnum(e, scope, [5, i]));
  // Map fields need their entry types, which may be declared after the field that uses them.
  for (const message of contract.messages.values()) {
    if (message.file === file.name) resolveMaps(message, contract);
  }

  file.service.forEach((s, i) => {
    const fullName = scope + s.name;
    const methods = s.method.map((m, j): MethodInfo => {
      const rule = m.options?.[".google.api.http"];
      return {
        name: m.name,
        service: fullName,
        path: `/${fullName}/${m.name}`,
        requestType: trimDot(m.inputType),
        responseType: trimDot(m.outputType),
        requestStream: m.clientStreaming === true,
        responseStream: m.serverStreaming === true,
        comment: commentAt([6, i, 2, j]),
        bindings: rule ? bindingsOf(rule, `${fullName}.${m.name}`) : [],
      };
    });
    contract.services.push({ name: s.name, fullName, file: file.name, comment: commentAt([6, i]), methods });
    for (const method of methods) contract.methods.set(method.path, method);
  });
}

function fieldInfo(raw: RawField, owner: RawMessage, comment: string): FieldInfo {
  const scalar = raw.type ? TYPE_NAMES[raw.type] : undefined;
  const optional = raw.proto3Optional === true;
  const oneofIndex = raw.oneofIndex;
  return {
    name: raw.name,
    jsonName: raw.jsonName || protobuf.util.jsonName(raw.name),
    number: raw.number,
    kind: scalar ? "scalar" : raw.type === "TYPE_ENUM" ? "enum" : "message",
    type: scalar ?? trimDot(raw.typeName ?? ""),
    repeated: raw.label === "LABEL_REPEATED",
    optional,
    oneof: oneofIndex !== undefined && !optional ? owner.oneofDecl[oneofIndex]?.name : undefined,
    behaviors: raw.options?.[".google.api.fieldBehavior"] ?? [],
    comment,
  };
}

/** Turns `repeated XEntry` fields into map fields described by the entry's key and value. */
function resolveMaps(message: MessageInfo, contract: Contract): void {
  for (const field of message.fields) {
    if (field.kind !== "message" || !field.repeated) continue;
    const entry = contract.messages.get(field.type);
    if (!entry?.mapEntry) continue;
    const [key, value] = entry.fields;
    field.mapKey = key.type as ScalarType;
    field.kind = value.kind;
    field.type = value.type;
    field.repeated = false;
  }
}

const METHODS = ["get", "put", "post", "delete", "patch"] as const;

function bindingsOf(rule: RawRule, method: string): HttpBinding[] {
  const one = (r: RawRule, additional: boolean): HttpBinding => {
    const verb = METHODS.find((m) => r[m]);
    const httpMethod = verb ? verb.toUpperCase() : r.custom?.kind.toUpperCase();
    const template = verb ? r[verb]! : r.custom?.path;
    if (!httpMethod || !template) throw new Error(`${method}: google.api.http rule without a pattern`);
    return {
      method: httpMethod,
      template,
      pathParams: [...template.matchAll(/\{([^}=]+)(?:=[^}]*)?\}/g)].map((m) => m[1]),
      body: r.body ?? "",
      responseBody: r.responseBody ?? "",
      additional,
    };
  };
  return [one(rule, false), ...(rule.additionalBindings ?? []).map((r) => one(r, true))];
}

/** Comment text without the single space protoc keeps after `//`, trimmed. */
function cleanComment(text: string): string {
  return text
    .split("\n")
    .map((line) => (line.startsWith(" ") ? line.slice(1) : line))
    .join("\n")
    .trim();
}

function trimDot(name: string): string {
  return name.startsWith(".") ? name.slice(1) : name;
}
