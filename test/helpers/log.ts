import type { LogLevel } from "../../src/config/options.js";
import { createLogger, type Logger } from "../../src/logging/logger.js";

/** Logger for code under test: silent unless GLIMPSE_TEST_LOG names a level. */
export function testLogger(): Logger {
  const level = (process.env.GLIMPSE_TEST_LOG ?? "silent") as LogLevel;
  return createLogger(level, (line) => process.stderr.write(line));
}
