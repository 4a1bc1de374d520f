import { Violations } from "../errors.js";

export const MAX_TAGS = 100;
export const MAX_TAG_LENGTH = 100;
export const MAX_FILTER_TAGS = 20;
const MAX_QUERY_LENGTH = 500;

/**
 * Normalises one tag: trimmed, lower-cased, inner whitespace collapsed to one space.
 * Namespaced tags such as `bird:lovebird` keep their form.
 */
export function normaliseTag(tag: string): string {
  return tag.trim().toLowerCase().replace(/\s+/g, " ");
}

/** Why a normalised tag is unusable, or undefined when it is fine. */
function tagProblem(tag: string): string | undefined {
  if (tag.length === 0) return "must not be empty";
  if (tag.length > MAX_TAG_LENGTH) return `must be at most ${MAX_TAG_LENGTH} characters`;
  if (tag.includes("+")) return "must not contain '+' (it joins tags in a tag expression)";
  if (tag.startsWith("-")) return "must not start with '-' (it marks an excluded tag in a tag expression)";
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(tag)) return "must not contain control characters";
  return undefined;
}

/**
 * Normalises and validates the tags of an image, dropping duplicates (first one wins).
 * Problems are recorded against `field[i]`.
 */
export function normaliseTags(tags: readonly string[], field: string, v: Violations, max = MAX_TAGS): string[] {
  v.check(tags.length <= max, field, `at most ${max} tags, got ${tags.length}`);
  const out: string[] = [];
  tags.forEach((raw, i) => {
    const tag = normaliseTag(raw);
    const problem = tagProblem(tag);
    if (problem) v.add(`${field}[${i}]`, problem);
    else if (!out.includes(tag)) out.push(tag);
  });
  return out;
}

/**
 * The terms an image's tags match in filters: each tag, plus the namespace of a namespaced
 * tag, so a filter on `bird` finds `bird:lovebird`.
 */
export function tagTerms(tags: readonly string[]): string[] {
  const terms = new Set<string>();
  for (const tag of tags) {
    terms.add(tag);
    const colon = tag.indexOf(":");
    if (colon > 0) terms.add(tag.slice(0, colon));
  }
  return [...terms];
}

/** Tags a listed image must have and must not have. */
export interface TagCondition {
  include: string[];
  exclude: string[];
}

/**
 * Parses a tag expression such as `animal+dog+-cat`: every plain tag required, every `-` tag
 * excluded. A `+` that reached us decoded from a URL query arrives as a space, so when the
 * expression has no `+`, whitespace separates the terms.
 */
export function parseTagExpression(expression: string, field: string, v: Violations): TagCondition {
  const result: TagCondition = { include: [], exclude: [] };
  const text = expression.trim();
  if (text === "") return result;
  if (!v.check(text.length <= MAX_QUERY_LENGTH, field, `must be at most ${MAX_QUERY_LENGTH} characters`)) {
    return result;
  }
  const terms = text.includes("+") ? text.split("+") : text.split(/\s+/);
  for (const [i, raw] of terms.entries()) {
    const term = raw.trim();
    const negated = term.startsWith("-");
    const tag = normaliseTag(negated ? term.slice(1) : term);
    if (tag === "") {
      v.add(field, `term ${i + 1} is empty; write tags joined by '+', e.g. animal+dog+-cat`);
      continue;
    }
    const problem = tagProblem(tag);
    if (problem) v.add(field, `term ${i + 1} (${JSON.stringify(term)}) ${problem}`);
    else (negated ? result.exclude : result.include).push(tag);
  }
  return result;
}
