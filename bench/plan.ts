/**
 * Reading PostgreSQL plans for benchmarks: the shape and indexes of an EXPLAIN (FORMAT JSON)
 * plan, and the plan a prepared statement really runs after repeated execution.
 */
import postgres from "postgres";
import type { Db } from "./seed-images.js";

/** A node of EXPLAIN's JSON plan (the fields read here). */
export interface PlanNode {
  "Node Type": string;
  "Index Name"?: string;
  "Relation Name"?: string;
  "Plan Rows"?: number;
  "Actual Rows"?: number;
  "Actual Loops"?: number;
  "Shared Hit Blocks"?: number;
  "Shared Read Blocks"?: number;
  "Index Cond"?: string;
  Filter?: string;
  "Rows Removed by Filter"?: number;
  "Recheck Cond"?: string;
  "Sort Key"?: string[];
  Plans?: PlanNode[];
}

/** What the result file keeps of a plan: its shape, the indexes used and what it cost. */
export function planSummary(root: { Plan: PlanNode; "Planning Time"?: number; "Execution Time"?: number }) {
  const nodeTypes: string[] = [];
  const indexes = new Set<string>();
  const nodes: Record<string, unknown>[] = [];
  const walk = (node: PlanNode, depth: number): string => {
    nodeTypes.push(node["Node Type"]);
    if (node["Index Name"]) indexes.add(node["Index Name"]);
    nodes.push({
      depth,
      node: node["Node Type"],
      index: node["Index Name"],
      index_cond: node["Index Cond"],
      recheck_cond: node["Recheck Cond"],
      filter: node.Filter,
      sort_key: node["Sort Key"],
      estimated_rows: node["Plan Rows"],
      actual_rows: node["Actual Rows"],
      loops: node["Actual Loops"],
      rows_removed_by_filter: node["Rows Removed by Filter"],
    });
    const label = node["Index Name"] ? `${node["Node Type"]} (${node["Index Name"]})` : node["Node Type"];
    const children = (node.Plans ?? []).map((child) => walk(child, depth + 1));
    return children.length === 0 ? label : `${label} <- ${children.length > 1 ? `[${children.join(", ")}]` : children[0]}`;
  };
  const tree = walk(root.Plan, 0);
  return {
    tree,
    node_types: nodeTypes,
    indexes: [...indexes],
    planning_ms: root["Planning Time"] ?? null,
    execution_ms: root["Execution Time"] ?? null,
    shared_hit_blocks: root.Plan["Shared Hit Blocks"] ?? null,
    shared_read_blocks: root.Plan["Shared Read Blocks"] ?? null,
    nodes,
  };
}

/** The plan one execution of a prepared statement ran. */
export interface PreparedPlan {
  execution: number;
  /** True when its conditions still hold $n parameters: a generic plan (custom plans fold values in). */
  generic: boolean;
  tree: string;
  indexes: string[];
}

/**
 * The plan a repeatedly executed prepared statement really runs. postgres.js prepares every
 * query; after five executions PostgreSQL may switch a statement to a generic plan, planned
 * without the parameter values. auto_explain (log level NOTICE) reports each execution's plan
 * to this connection. Null when auto_explain cannot be loaded.
 */
export async function preparedPlans(
  url: string,
  query: (sql: Db) => postgres.PendingQuery<postgres.Row[]>,
  executions: number,
): Promise<PreparedPlan[] | null> {
  const notices: string[] = [];
  const sql: Db = postgres(url, {
    max: 1,
    types: { bigint: postgres.BigInt },
    onnotice: (n) => notices.push(n.message),
  });
  try {
    try {
      await sql`load 'auto_explain'`;
    } catch {
      return null;
    }
    await sql`set auto_explain.log_min_duration = 0`;
    await sql`set auto_explain.log_analyze = on`;
    await sql`set auto_explain.log_format = json`;
    await sql`set auto_explain.log_level = notice`;
    const plans: PreparedPlan[] = [];
    for (let i = 0; i < executions; i++) {
      notices.length = 0;
      await query(sql);
      const json = notices.map((m) => m.slice(m.indexOf("{"))).find((m) => m.startsWith("{"));
      if (!json) continue;
      const parsed = JSON.parse(json) as { "Query Text": string; Plan: PlanNode };
      const summary = planSummary({ Plan: parsed.Plan });
      // A generic plan keeps $n in its conditions; a custom plan has the values folded in.
      const conditions = summary.nodes.map((n) => `${n.index_cond ?? ""} ${n.recheck_cond ?? ""} ${n.filter ?? ""}`).join(" ");
      plans.push({ execution: i + 1, generic: /\$\d/.test(conditions), tree: summary.tree, indexes: summary.indexes });
    }
    return plans;
  } finally {
    await sql.end();
  }
}
