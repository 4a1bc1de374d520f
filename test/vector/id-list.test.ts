import { describe, expect, it } from "vitest";
import { IdList, IdSlotMap } from "../../src/vector/id-list.js";

describe("id lists and the id -> slot table", () => {
  const big = (i: number) => 7_301_234_567_890_123_456n + BigInt(i) * 4_194_304n + BigInt(i % 7);

  it("keeps ids above 2^53 exact through packing", () => {
    const ids = [1n, 2n ** 53n + 1n, 9_223_372_036_854_775_807n, big(5)];
    const list = IdList.fromBigInts(ids);
    expect(Array.from({ length: list.length }, (_, i) => list.at(i))).toEqual(ids);
    expect(list.includes(2n ** 53n + 1n)).toBe(true);
    expect(list.includes(2n ** 53n)).toBe(false);

    const bytes = new Uint8Array(ids.length * 8);
    const view = new DataView(bytes.buffer);
    ids.forEach((id, i) => view.setBigInt64(i * 8, id, false));
    const fromDb = IdList.fromBigEndian(bytes);
    expect(fromDb.words).toEqual(list.words);
    expect(IdList.fromBigEndian(null).length).toBe(0);
  });

  it("maps, overwrites, deletes and survives growth and churn like a Map", () => {
    const table = new IdSlotMap(4);
    const reference = new Map<bigint, number>();
    for (let i = 0; i < 50_000; i++) {
      table.set(big(i), i);
      reference.set(big(i), i);
      if (i % 3 === 0) {
        table.delete(big(i - 1));
        reference.delete(big(i - 1));
      }
    }
    table.set(big(10), 99);
    reference.set(big(10), 99);
    expect(table.size).toBe(reference.size);
    for (let i = -1; i < 50_001; i++) expect(table.get(big(i))).toBe(reference.get(big(i)));
    expect(new Set(table.ids())).toEqual(new Set(reference.keys()));
    expect(table.delete(big(-5))).toBe(false);
  });
});
