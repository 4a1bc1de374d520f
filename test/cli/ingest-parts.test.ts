import { describe, expect, it } from "vitest";
import { uploadRequestId } from "../../src/cli/ingest-files.js";
import { Progress } from "../../src/cli/progress.js";

describe("ingest request ids", () => {
  it("are UUIDs fixed by the file's path and bytes", () => {
    const id = uploadRequestId("animals/dogs/x.jpg", "ab".repeat(32));
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(uploadRequestId("animals/dogs/x.jpg", "ab".repeat(32))).toBe(id);
    expect(uploadRequestId("animals/cats/x.jpg", "ab".repeat(32))).not.toBe(id);
    expect(uploadRequestId("animals/dogs/x.jpg", "cd".repeat(32))).not.toBe(id);
  });
});

describe("ingest progress", () => {
  it("redraws one line with a bar, counts, bytes, rate and ETA on a terminal", () => {
    let text = "";
    let now = 0;
    const progress = new Progress({ write: (t: string) => (text += t), isTTY: true }, 2, 4096, "ingest", () => now);
    now = 1000;
    progress.advance(2048);
    expect(text).toBe("\r[############------------] 1/2 files  2.0 KiB/4.0 KiB  2.0 KiB/s  ETA 1 s\x1b[K");
    now = 2000;
    progress.advance(2048);
    progress.end();
    expect(text).toMatch(/\r\[#{24}\] 2\/2 files {2}4\.0 KiB\/4\.0 KiB {2}2\.0 KiB\/s {2}in 2 s\x1b\[K\n$/);
  });

  it("writes a plain line per tenth of the files elsewhere", () => {
    const lines: string[] = [];
    const progress = new Progress({ write: (t: string) => lines.push(t) }, 20, 20_000, "ingest");
    for (let i = 0; i < 20; i++) progress.advance(1000);
    progress.end();
    expect(lines).toHaveLength(10);
    expect(lines[0]).toMatch(/^ingest: 2\/20 files, 2\.0 KiB\/19\.5 KiB, /);
    expect(lines.every((l) => l.endsWith("\n") && !l.includes("\r"))).toBe(true);
  });
});
