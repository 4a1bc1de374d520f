import { inject } from "vitest";
import { createScratchDatabase, type ScratchDatabase } from "../../src/store/scratch-database.js";

/** A database of its own for one test file, dropped afterwards. */
export type TestDatabase = ScratchDatabase;

/**
 * Creates a uniquely named database on the run's server (external or embedded), so runs and
 * test files never see each other's rows.
 */
export function createTestDatabase(): Promise<TestDatabase> {
  return createScratchDatabase(inject("adminDatabaseUrl"), "glimpse_test");
}
