import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TestProject } from "vitest/node";
import { createLogger } from "../src/logging/logger.js";
import { startEmbeddedPostgres } from "../src/store/embedded.js";
import { startS3Server } from "./helpers/s3.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** URL of a database on the server tests create their own databases on. */
    adminDatabaseUrl: string;
    /** "external" when DATABASE_URL was given, "embedded" otherwise. */
    storeKind: "external" | "embedded";
    /** Endpoint of the run's S3 server when GLIMPSE_TEST_BLOBS=s3; "" when blobs are files. */
    s3Endpoint: string;
    /** Where that server keeps its objects ("" when blobs are files). */
    s3Directory: string;
  }
}

/**
 * Decides which blob store apps under test use: files (GLIMPSE_TEST_BLOBS unset or `files`),
 * or `s3`: one real S3 server (s3rver) on loopback for the whole run, each app under a key
 * prefix of its own.
 */
async function setupBlobs(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  const kind = process.env.GLIMPSE_TEST_BLOBS ?? "files";
  if (kind === "files" || kind === "") {
    project.provide("s3Endpoint", "");
    project.provide("s3Directory", "");
    return undefined;
  }
  if (kind !== "s3") throw new Error(`GLIMPSE_TEST_BLOBS must be files or s3, got ${JSON.stringify(kind)}`);
  const server = await startS3Server();
  project.provide("s3Endpoint", server.endpoint);
  project.provide("s3Directory", server.directory);
  console.log(`tests store blobs in S3 (s3rver at ${server.endpoint})`);
  return () => server.stop();
}

/**
 * Decides which PostgreSQL the run uses: the server named by DATABASE_URL, or (unset) one
 * embedded server started for the whole run, exactly as `glimpse serve` would start it.
 */
export default async function setup(project: TestProject) {
  const stopBlobs = await setupBlobs(project);
  const postgres = await setupPostgres(project);
  return async () => {
    await postgres?.();
    await stopBlobs?.();
  };
}

async function setupPostgres(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  const external = process.env.DATABASE_URL;
  if (external) {
    project.provide("adminDatabaseUrl", external);
    project.provide("storeKind", "external");
    console.log(`tests use the PostgreSQL server at DATABASE_URL`);
    return undefined;
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
