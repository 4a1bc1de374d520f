import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  createChannel,
  createClientFactory,
  Metadata,
  type Channel,
  type Client,
  type CallOptions,
  type ClientMiddleware,
  type CompatServiceDefinition,
} from "nice-grpc";
import { startApp, type App, type AppDeps } from "../../src/app.js";
import { loadOptions, type Options } from "../../src/config/options.js";
import { AccountServiceDefinition } from "../../src/gen/glimpse/account/v1/account_service.js";
import { testBlobOptions } from "./blobs.js";
import { testLogger } from "./log.js";
import { createTestDatabase, type TestDatabase } from "./database.js";

/** A real glimpse on 127.0.0.1:0 over its own database, with a channel to it. */
export interface TestApp {
  app: App;
  /** A plain channel: calls on it carry no key unless the client adds one (see `client`). */
  channel: Channel;
  address: string;
  db: TestDatabase;
  dataDir: string;
  /** The admin key the app was started with (GLIMPSE_ADMIN_KEY); it acts as the default account. */
  adminKey: string;
  /** A client that sends `key` (the admin key by default) unless a call brings its own key. */
  client<D extends CompatServiceDefinition>(definition: D, key?: string): Client<D>;
  /** A new account (through CreateAccount) with a first API key, and optionally credits. */
  newAccount(fields?: { email?: string; username?: string; credits?: number; admin?: boolean }): Promise<TestAccount>;
  /** Stops the app, closes the channel, drops the database and the data directory. */
  close(): Promise<void>;
}

/** An account made for a test, with its key. */
export interface TestAccount {
  id: string;
  key: string;
}

/** Call options that send `key`, e.g. `client.getImage(req, withKey(key))`. */
export function withKey(key: string): CallOptions {
  return { metadata: Metadata({ authorization: `Bearer ${key}` }) };
}

/** Adds `authorization: Bearer <key>` to calls that do not already send a key. */
function keyMiddleware(key: string): ClientMiddleware {
  return async function* (call, options) {
    const metadata = Metadata(options.metadata);
    if (!metadata.has("authorization") && !metadata.has("x-api-key")) metadata.set("authorization", `Bearer ${key}`);
    return yield* call.next(call.request, { ...options, metadata });
  };
}

/** A random admin secret in the format glimpse generates. */
export function testSecret(): string {
  return `glk_test${randomBytes(24).toString("base64url")}`;
}

let accounts = 0;

/**
 * Starts the real app the way `glimpse serve` does, on a free port with a fresh database
 * (and, when `db` is given, on that one instead). It authenticates like production: the app
 * gets a random GLIMPSE_ADMIN_KEY, and `client()` sends it. Keys default to a rate limit high
 * enough for any test, unless `rateLimitPerMinute` is given. Blobs go where the run says
 * (GLIMPSE_TEST_BLOBS=s3: the run's S3 server, under a prefix of this app's own).
 */
export async function startTestApp(
  overrides: Partial<Options> = {},
  deps: AppDeps = {},
  db?: TestDatabase,
): Promise<TestApp> {
  const database = db ?? (await createTestDatabase());
  const dataDir = await mkdtemp(path.join(tmpdir(), "glimpse-test-data-"));
  const adminKey = overrides.adminKey ?? testSecret();
  const options = loadOptions({}, [], {
    dataDir,
    databaseUrl: database.url,
    grpcHost: "127.0.0.1",
    grpcPort: 0,
    httpPort: 0,
    shutdownGraceMs: 2000,
    rateLimitPerMinute: 100_000,
    ...testBlobOptions(),
    ...overrides,
    adminKey,
  });
  const app = await startApp(options, { logger: testLogger(), ...deps });
  const address = `127.0.0.1:${app.grpcPort}`;
  const channel = createChannel(address);
  const client = <D extends CompatServiceDefinition>(definition: D, key = adminKey): Client<D> =>
    createClientFactory().use(keyMiddleware(key)).create(definition, channel);
  return {
    app,
    channel,
    address,
    db: database,
    dataDir,
    adminKey,
    client,
    async newAccount(fields = {}) {
      const n = ++accounts;
      const tag = `${process.pid}-${n}-${randomBytes(3).toString("hex")}`;
      const { account, apiKeySecret } = await client(AccountServiceDefinition).createAccount({
        email: fields.email ?? `user-${tag}@example.com`,
        username: fields.username ?? "",
        isAdmin: fields.admin ?? false,
        initialCredits: String(fields.credits ?? 0),
        createApiKey: true,
      });
      return { id: account!.id, key: apiKeySecret };
    },
    async close() {
      channel.close();
      await app.stop();
      if (!db) await database.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
