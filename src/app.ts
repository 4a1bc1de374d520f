import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Options } from "./config/options.js";
import { createLogger, type Logger } from "./logging/logger.js";
import { startGrpcServer, type GrpcServer } from "./server/grpc-server.js";
import { FileBlobStore, type BlobStore } from "./blobs/blob-store.js";
import { analyseImage } from "./catalogue/analyse.js";
import { CatalogueService } from "./catalogue/catalogue-service.js";
import { ListingService } from "./catalogue/listing.js";
import { SnowflakeGenerator } from "./catalogue/snowflake.js";
import { systemClock, type Clock } from "./clock.js";
import { imageHandlers } from "./server/handlers/image-handlers.js";
import { serviceRegistrations, type HandlerSet } from "./server/handlers/index.js";
import { defaultCaller, type CallerResolver } from "./server/middleware/caller.js";
import { connect, ping, type Sql } from "./store/db.js";
import { ImagesRepository, takeWorkerId, transaction } from "./store/images-repository.js";
import { startEmbeddedPostgres, type EmbeddedServer } from "./store/embedded.js";
import { migrate } from "./store/migrate.js";

const DESCRIPTORS = path.join(path.dirname(fileURLToPath(import.meta.url)), "gen", "descriptors.binpb");

/** Optional replacements for the composition root's parts; tests choose what is real. */
export interface AppDeps {
  logger?: Logger;
  /** Replaces individual RPC handlers, e.g. with one that blocks until a test releases it. */
  handlers?: HandlerSet;
  /** The time source (tests move it to place uploads in the past). */
  clock?: Clock;
  /** Which account a call acts as; until API keys exist, the default account. */
  resolveCaller?: CallerResolver;
}

/** A running glimpse: its addresses and the one way to stop it. */
export interface App {
  options: Options;
  grpcPort: number;
  sql: Sql;
  logger: Logger;
  blobs: BlobStore;
  /** Graceful stop: drain calls, stop transports, close the store (and the embedded server). */
  stop(): Promise<void>;
}

/**
 * The composition root: starts the transports, opens the store (embedded when no
 * DATABASE_URL), migrates, and only then reports SERVING. Anything that fails on the way
 * undoes what was started before it.
 */
export async function startApp(options: Options, deps: AppDeps = {}): Promise<App> {
  const logger = deps.logger ?? createLogger(options.logLevel);
  // Store-side resources, closed in reverse order of opening.
  const closers: (() => Promise<void>)[] = [];
  const closeStore = async () => {
    while (closers.length > 0) {
      await closers.pop()!().catch((error) => logger.error("close failed", { error }));
    }
  };

  const clock = deps.clock ?? systemClock;
  let handlers: HandlerSet = {};
  let grpc: GrpcServer | undefined;
  try {
    grpc = await startGrpcServer({
      host: options.grpcHost,
      port: options.grpcPort,
      logger,
      services: serviceRegistrations(() => handlers),
      descriptorSet: await readFile(DESCRIPTORS),
      // Room for the largest upload plus protobuf framing; the catalogue names the real limit.
      maxReceiveMessageBytes: Math.max(64 * 1024 * 1024, options.maxUploadBytes * 2),
      resolveCaller: deps.resolveCaller ?? defaultCaller,
    });

    let url = options.databaseUrl;
    if (url === undefined) {
      const embedded = await startEmbeddedPostgres(options.dataDir, logger);
      closers.push(() => embedded.stop());
      url = embedded.url;
    }
    const sql = connect({ url, max: options.databasePoolMax, logger });
    closers.push(() => sql.end({ timeout: 5 }));
    await migrate(sql, logger);
    await ping(sql);

    const blobs = new FileBlobStore(path.join(options.dataDir, "blobs"));
    const images = new ImagesRepository(sql);
    const ids = new SnowflakeGenerator(await takeWorkerId(sql), clock);
    const catalogue = new CatalogueService({
      images,
      transaction: (fn) => transaction(sql, fn),
      blobs,
      clock,
      ids,
      limits: { maxBytes: options.maxUploadBytes, maxPixels: options.maxImagePixels },
      analyse: analyseImage,
    });
    const listing = new ListingService(images, clock);
    const overrides = deps.handlers ?? {};
    handlers = {
      image: { ...imageHandlers({ catalogue, listing, publicUrl: options.publicUrl }), ...overrides.image },
      generation: { ...overrides.generation },
      account: { ...overrides.account },
    };
    grpc.markServing();
    logger.info("glimpse serving", {
      grpcPort: grpc.port,
      store: options.databaseUrl === undefined ? "embedded" : "external",
    });

    const server = grpc;
    let stopping: Promise<void> | undefined;
    return {
      options,
      grpcPort: grpc.port,
      sql,
      logger,
      blobs,
      stop() {
        stopping ??= (async () => {
          logger.info("shutting down", { graceMs: options.shutdownGraceMs });
          await server.shutdown(options.shutdownGraceMs);
          await closeStore();
        })();
        return stopping;
      },
    };
  } catch (err) {
    await grpc?.shutdown(0);
    await closeStore();
    throw err;
  }
}
