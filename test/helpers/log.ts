import type { LogLevel } from "../../src/config/options.js";
import { createLogger, type Logger } from "../../src/logging/logger.js";

/** Logger for code under test: silent unless GLIMPSE_TEST_LOG names a level. */
export function testLogger(): Logger {
  const level = (process.env.GLIMPSE_TEST_LOG ?? "silent") as LogLevel;
  return createLogger(level, (line) => process.stderr.write(line));
}

/** A logger that keeps every line as a parsed record, for tests that assert what was logged. */
export function captureLogger(level: LogLevel = "info"): { logger: Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const logger = createLogger(level, (line) => records.push(JSON.parse(line) as Record<string, unknown>));
  return { logger, records };
}
