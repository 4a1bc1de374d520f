import { describe, expect, it } from "vitest";
import { LogGaps } from "../../src/search/log-gaps.js";

const runs = (g: LogGaps) => g.ranges().map((r) => `${r.from}-${r.to}`);

describe("LogGaps", () => {
  it("keeps a gap until its entries are read, splitting runs around what was found", () => {
    const g = new LogGaps();
    g.add(3n, 7n);
    g.add(10n, 10n);
    g.fence(100n);
    expect(g.lowest()).toBe(3n);
    expect(g.count).toBe(6n);
    // Transactions that may hold them still run (horizon below the fence): only found ones go.
    g.settle([4n, 6n, 10n], 10n, 90n);
    expect(runs(g)).toEqual(["3-3", "5-5", "7-7"]);
    g.settle([3n], 10n, 100n);
    expect(runs(g)).toEqual(["5-5", "7-7"]);
  });

  it("drops what was looked for after every transaction that could hold it ended, and nothing beyond the page", () => {
    const g = new LogGaps();
    g.add(1n, 2n);
    g.add(5n, 9n);
    g.fence(50n);
    // A full page ended at 6: 7..9 were not looked for yet.
    g.settle([6n], 6n, 51n);
    expect(runs(g)).toEqual(["7-9"]);
    g.settle([], 9n, 51n);
    expect(g.isEmpty).toBe(true);
    expect(g.lowest()).toBeUndefined();
  });

  it("never drops a gap that has no fence yet", () => {
    const g = new LogGaps();
    g.add(4n, 4n);
    expect(g.unfenced).toBe(true);
    g.settle([], 4n, 1_000_000n);
    expect(runs(g)).toEqual(["4-4"]);
    g.fence(20n);
    g.add(8n, 8n);
    g.fence(30n);
    // 4's transactions ended (horizon 25 > 20); 8's may not have (30).
    g.settle([], 8n, 25n);
    expect(runs(g)).toEqual(["8-8"]);
  });

  it("refuses a run below one already recorded", () => {
    const g = new LogGaps();
    g.add(5n, 6n);
    expect(() => g.add(6n, 8n)).toThrow(RangeError);
  });
});
