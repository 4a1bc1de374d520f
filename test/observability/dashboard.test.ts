import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { Metrics } from "../../src/observability/metrics.js";

const DASHBOARD = new URL("../../deploy/grafana/glimpse-dashboard.json", import.meta.url);

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: { refId: string; expr: string; datasource: { uid: string } }[];
}

/** Metric family names and types glimpse exports (from a fresh registry: no app needed). */
async function exportedFamilies(): Promise<Map<string, string>> {
  const text = await new Metrics().registry.metrics();
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]));
}

/** The series names an expression reads (identifiers followed by a selector or a range). */
function seriesIn(expr: string): string[] {
  const names = [...expr.matchAll(/\b([a-z_:][a-z0-9_:]*)\s*\{/gi)].map((m) => m[1]);
  return names.filter((n) => !["by", "sum", "rate", "max", "histogram_quantile"].includes(n));
}

describe("the Grafana dashboard in deploy/grafana", () => {
  it("is a dashboard Grafana imports: a Prometheus data source variable, panels on its grid with unique ids", async () => {
    const dashboard = JSON.parse(await readFile(DASHBOARD, "utf8")) as {
      uid: string;
      title: string;
      schemaVersion: number;
      panels: Panel[];
      templating: { list: { name: string; type: string; query: unknown }[] };
    };
    expect(dashboard).toMatchObject({ uid: "glimpse-overview", title: "glimpse" });
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.templating.list).toContainEqual(expect.objectContaining({ name: "datasource", type: "datasource", query: "prometheus" }));
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const panel of dashboard.panels) {
      expect(panel.gridPos.x + panel.gridPos.w, panel.title).toBeLessThanOrEqual(24);
      if (panel.type === "row") continue;
      expect(panel.datasource, panel.title).toEqual({ type: "prometheus", uid: "${datasource}" });
      expect(panel.targets!.length, panel.title).toBeGreaterThan(0);
    }
  });

  it("reads only metrics glimpse exports", async () => {
    const dashboard = JSON.parse(await readFile(DASHBOARD, "utf8")) as { panels: Panel[] };
    const families = await exportedFamilies();
    const exported = (series: string) => {
      if (families.has(series)) return true;
      const base = series.replace(/_(bucket|sum|count)$/, "");
      return base !== series && ["histogram", "summary"].includes(families.get(base) ?? "");
    };
    const read = dashboard.panels.flatMap((p) => (p.targets ?? []).flatMap((t) => seriesIn(t.expr)));
    expect(read.length).toBeGreaterThan(20);
    expect(read.filter((series) => !exported(series))).toEqual([]);
  });
});
