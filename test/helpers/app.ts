import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createChannel, type Channel } from "nice-grpc";
import { startApp, type App, type AppDeps } from "../../src/app.js";
import { loadOptions, type Options } from "../../src/config/options.js";
import { testLogger } from "./log.js";
import { createTestDatabase, type TestDatabase } from "./database.js";

/** A real glimpse on 127.0.0.1:0 over its own database, with a channel to it. */
export interface TestApp {
  app: App;
  channel: Channel;
  address: string;
  db: TestDatabase;
  dataDir: string;
  /** Stops the app, closes the channel, drops the database and the data directory. */
  close(): Promise<void>;
}

/**
 * Starts the real app the way `glimpse serve` does, on a free port with a fresh database
 * (and, when `db` is given, on that one instead).
 */
export async function startTestApp(
  overrides: Partial<Options> = {},
  deps: AppDeps = {},
  db?: TestDatabase,
): Promise<TestApp> {
  const database = db ?? (await createTestDatabase());
  const dataDir = await mkdtemp(path.join(tmpdir(), "glimpse-test-data-"));
  const options = loadOptions({}, [], {
    dataDir,
    databaseUrl: database.url,
    grpcHost: "127.0.0.1",
    grpcPort: 0,
    httpPort: 0,
    shutdownGraceMs: 2000,
    ...overrides,
  });
  const app = await startApp(options, { logger: testLogger(), ...deps });
  const address = `127.0.0.1:${app.grpcPort}`;
  const channel = createChannel(address);
  return {
    app,
    channel,
    address,
    db: database,
    dataDir,
    async close() {
      channel.close();
      await app.stop();
      if (!db) await database.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
