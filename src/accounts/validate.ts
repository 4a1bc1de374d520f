import type { Violations } from "../errors.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const USERNAME = /^[A-Za-z0-9_.-]{1,50}$/;
const EMAIL_MAX = 254;

/** A UUID field, lower-cased; empty is null (and a violation when required). */
export function uuidField(text: string, field: string, v: Violations, required = true): string | null {
  if (text === "") {
    if (required) v.add(field, "is required: a UUID");
    return null;
  }
  return v.check(UUID.test(text), field, "must be a UUID such as 0f1c89a4-2843-47e2-8b69-6de51b777c07")
    ? text.toLowerCase()
    : null;
}

/** An email address: trimmed, one '@' with text on both sides, no spaces, at most 254 characters. */
export function emailOf(text: string, field: string, v: Violations): string {
  const email = text.trim();
  const at = email.indexOf("@");
  v.check(
    email.length <= EMAIL_MAX && at > 0 && at === email.lastIndexOf("@") && at < email.length - 1 &&
      !/[\s\u0000]/.test(email),
    field,
    `is required: an address with one '@', at most ${EMAIL_MAX} characters`,
  );
  return email;
}

/** A username: empty (none), or 1..50 letters, digits, '_', '.' and '-'. */
export function usernameOf(text: string, field: string, v: Violations): string {
  const username = text.trim();
  if (username !== "") v.check(USERNAME.test(username), field, "must be 1..50 letters, digits, '_', '.' or '-'");
  return username;
}
