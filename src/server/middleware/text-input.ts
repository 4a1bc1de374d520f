import type { ServerMiddleware } from "nice-grpc-common";
import { checkJsonText, checkText, KEY_NUL_DESCRIPTION, keyInPath } from "../../catalogue/validate.js";
import { Violations } from "../../errors.js";
import type { Contract, FieldInfo } from "../../gateway/descriptors.js";

/**
 * Refuses request text that PostgreSQL cannot store: U+0000 in any string of a request
 * message (fields, repeated items, map keys and values, google.protobuf.Struct keys and
 * values, at any depth) is INVALID_ARGUMENT naming the field, before a handler runs, so no
 * field of any RPC, present or future, can forget the check. Bytes fields are not text and
 * are skipped without being read.
 *
 * Client-streaming calls are left to their handler: BatchUploadImages promises that one bad
 * item never aborts the batch and answers each item as UploadImage would, so its items are
 * refused one by one by the catalogue's own field checks (which refuse NUL the same way).
 */
export function textInputMiddleware(contract: Contract): ServerMiddleware {
  const check = textInputCheck(contract);
  return async function* (call, context) {
    if (!call.requestStream) check(call.method.path, call.request);
    return yield* call.next(call.request, context);
  };
}

/**
 * The middleware's check without a layer of its own (see call-chain.ts): throws
 * INVALID_ARGUMENT when a (single) request message of the method holds U+0000 in a string.
 */
export function textInputCheck(contract: Contract): (path: string, request: unknown) => void {
  const walker = new TextWalker(contract);
  return (path, request) => {
    // Nearly every request is clean: one look at its strings and keys, and only one that holds
    // U+0000 is walked by its schema, to name the fields.
    if (!holdsNul(request)) return;
    const type = contract.methods.get(path)?.requestType;
    const v = new FewViolations();
    walker.message(type, request, "", v);
    v.throwIfAny();
  };
}

/** Most violations one request reports: enough to fix it, few enough to fit a trailer. */
const MAX_VIOLATIONS = 20;

/** Violations that keeps the first {@link MAX_VIOLATIONS}, however many strings are bad. */
class FewViolations extends Violations {
  private count = 0;

  override check(ok: boolean, field: string, description: string): boolean {
    if (!ok) this.add(field, description);
    return ok;
  }

  override add(field: string, description: string): void {
    if (this.count++ < MAX_VIOLATIONS) super.add(field, description);
  }
}

/** How a message type's fields appear in the generated (ts-proto) objects. */
interface MessageShape {
  /** Fields by property name (lowerCamelCase) and by proto name. */
  fields: Map<string, FieldInfo>;
  /** Oneof members by the oneof's property name, then by their `$case` name. */
  oneofs: Map<string, Map<string, FieldInfo>>;
}

/** Well-known types whose generated form is plain JSON data: their keys are data, not fields. */
const JSON_TYPES = new Set(["google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"]);

const camel = (name: string) => name.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());

/** Walks decoded request messages guided by the contract, so violations carry proto field paths. */
class TextWalker {
  private readonly shapes = new Map<string, MessageShape>();

  constructor(private readonly contract: Contract) {}

  /** Checks a message of type `typeName` (unknown types are walked as plain data). */
  message(typeName: string | undefined, value: unknown, path: string, v: Violations): void {
    const shape = typeName === undefined ? undefined : this.shape(typeName);
    if (!shape || !isRecord(value)) {
      this.data(value, path, v);
      return;
    }
    for (const [key, member] of Object.entries(value)) {
      // Numbers, booleans, enums, unset fields: nothing to read.
      if (member === undefined || member === null || (typeof member !== "string" && typeof member !== "object")) continue;
      const field = shape.fields.get(key);
      if (field) {
        this.field(field, member, join(path, field.name), v);
        continue;
      }
      const oneof = shape.oneofs.get(key);
      const chosen = oneof && isRecord(member) && typeof member.$case === "string" ? oneof.get(member.$case) : undefined;
      if (chosen) this.field(chosen, (member as { value?: unknown }).value, join(path, chosen.name), v);
      else this.data(member, join(path, key), v);
    }
  }

  private field(field: FieldInfo, value: unknown, path: string, v: Violations): void {
    if (field.mapKey && isRecord(value)) {
      for (const [key, item] of Object.entries(value)) {
        const at = `${path}[${keyInPath(key)}]`;
        if (field.mapKey === "string") v.check(!key.includes("\u0000"), at, KEY_NUL_DESCRIPTION);
        this.single(field, item, at, v);
      }
    } else if (Array.isArray(value) && field.repeated) {
      value.forEach((item, i) => this.single(field, item, `${path}[${i}]`, v));
    } else {
      this.single(field, value, path, v);
    }
  }

  private single(field: FieldInfo, value: unknown, path: string, v: Violations): void {
    if (typeof value === "string") checkText(value, path, v);
    else if (field.kind !== "message" || typeof value !== "object" || value === null) return;
    else if (JSON_TYPES.has(field.type)) checkJsonText(value, path, v);
    else this.message(field.type, value, path, v);
  }

  /** A value without a schema (JSON data, or a field the contract does not describe). */
  private data(value: unknown, path: string, v: Violations): void {
    if (typeof value === "string") checkText(value, path, v);
    else if (typeof value === "object" && value !== null && !ArrayBuffer.isView(value) && !(value instanceof Date)) {
      checkJsonText(value, path, v);
    }
  }

  private shape(typeName: string): MessageShape | undefined {
    const known = this.shapes.get(typeName);
    if (known) return known;
    const info = this.contract.messages.get(typeName);
    if (!info || JSON_TYPES.has(typeName)) return undefined;
    const shape: MessageShape = { fields: new Map(), oneofs: new Map() };
    for (const field of info.fields) {
      shape.fields.set(field.name, field);
      shape.fields.set(field.jsonName, field);
      shape.fields.set(camel(field.name), field);
    }
    for (const oneof of info.oneofs) {
      const members = new Map<string, FieldInfo>();
      for (const name of oneof.fields) {
        const field = info.fields.find((f) => f.name === name)!;
        members.set(field.name, field).set(field.jsonName, field).set(camel(field.name), field);
        // A oneof member is found through its oneof, not as a field of its own.
        for (const key of [field.name, field.jsonName, camel(field.name)]) shape.fields.delete(key);
      }
      shape.oneofs.set(camel(oneof.name), members);
      shape.oneofs.set(oneof.name, members);
    }
    this.shapes.set(typeName, shape);
    return shape;
  }
}

/**
 * Whether any string or object key anywhere in `value` holds U+0000 (bytes and dates are not
 * text); iterative, so deep nesting cannot exhaust the stack. Everything the walker could
 * report is among what this sees.
 */
function holdsNul(value: unknown): boolean {
  const pending: unknown[] = [value];
  for (let item = pending.pop(); pending.length > 0 || item !== undefined; item = pending.pop()) {
    if (typeof item === "string") {
      if (item.includes("\u0000")) return true;
    } else if (Array.isArray(item)) {
      for (const member of item) pending.push(member);
    } else if (typeof item === "object" && item !== null && !ArrayBuffer.isView(item) && !(item instanceof Date)) {
      for (const key in item) {
        if (key.includes("\u0000")) return true;
        pending.push((item as Record<string, unknown>)[key]);
      }
    }
  }
  return false;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === "object" && value !== null && !Array.isArray(value) && !ArrayBuffer.isView(value) && !(value instanceof Date)
  );
}

function join(path: string, name: string): string {
  return path === "" ? name : `${path}.${name}`;
}
