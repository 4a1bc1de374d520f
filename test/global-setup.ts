import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TestProject } from "vitest/node";
import { createLogger } from "../src/logging/logger.js";
import { startEmbeddedPostgres } from "../src/store/embedded.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** URL of a database on the server tests create their own databases on. */
    adminDatabaseUrl: string;
    /** "external" when DATABASE_URL was given, "embedded" otherwise. */
    storeKind: "external" | "embedded";
  }
}

/**
 * Decides which PostgreSQL the run uses: the server named by DATABASE_URL, or (unset) one
 * embedded server started for the whole run, exactly as `glimpse serve` would start it.
 */
export default async function setup(project: TestProject) {
  const external = process.env.DATABASE_URL;
  if (external) {
    project.provide("adminDatabaseUrl", external);
    project.provide("storeKind", "external");
    console.log(`tests use the PostgreSQL server at DATABASE_URL`);
    return;
  }
  const dir = await mkdtemp(path.join(tmpdir(), "glimpse-test-pg-"));
  const server = await startEmbeddedPostgres(dir, createLogger("warn"));
  project.provide("adminDatabaseUrl", server.url);
  project.provide("storeKind", "embedded");
  console.log(`tests use an embedded PostgreSQL server (DATABASE_URL unset)`);
  return async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  };
}
