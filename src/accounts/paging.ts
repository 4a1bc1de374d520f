import { Violations } from "../errors.js";

const PAGE_DEFAULT = 20;
const PAGE_MAX = 100;

/**
 * Validates limit/offset paging as seed 5 pages usage and generations: limit 0..100 (0 means
 * 20), offset >= 0. Returns the limit in effect and the offset.
 */
export function offsetPage(limit: number, offset: number): { limit: number; offset: number } {
  const v = new Violations();
  v.check(limit >= 0 && limit <= PAGE_MAX, "limit", `must be between 0 and ${PAGE_MAX}`);
  v.check(offset >= 0, "offset", "must be >= 0");
  v.throwIfAny();
  return { limit: limit === 0 ? PAGE_DEFAULT : limit, offset };
}
