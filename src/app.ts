import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Options } from "./config/options.js";
import { createLogger, type Logger } from "./logging/logger.js";
import { startGrpcServer, type GrpcServer } from "./server/grpc-server.js";
import type { GraphPace } from "./vector/graph.js";
import type { BlobStore } from "./blobs/blob-store.js";
import { openBlobStore } from "./blobs/open-blob-store.js";
import { pooledAnalyse } from "./catalogue/analyse.js";
import { CatalogueService } from "./catalogue/catalogue-service.js";
import { DecodePool } from "./catalogue/decode-pool.js";
import { startOrphanSweeping } from "./catalogue/orphan-sweep.js";
import { ListingService } from "./catalogue/listing.js";
import { SnowflakeGenerator } from "./catalogue/snowflake.js";
import { systemClock, type Clock } from "./clock.js";
import { imageHandlers } from "./server/handlers/image-handlers.js";
import { serviceRegistrations, type HandlerSet } from "./server/handlers/index.js";
import { AccountService } from "./accounts/account-service.js";
import { KeyCache } from "./accounts/key-cache.js";
import { RedisRateLimiter } from "./accounts/redis-buckets.js";
import { RateLimiter, type TokenBuckets } from "./accounts/token-bucket.js";
import { GenerationService } from "./generation/generation-service.js";
import { abandonedAfterMs, buildProviders } from "./generation/providers/index.js";
import { ReplicaLease } from "./generation/replica-lease.js";
import { accountHandlers } from "./server/handlers/account-handlers.js";
import { generationHandlers } from "./server/handlers/generation-handlers.js";
import { apiKeyResolver, Gatekeeper } from "./server/middleware/auth.js";
import { ByteBudget, HTTP_BODY_MEMORY_FACTOR } from "./server/byte-budget.js";
import { AccountsRepository } from "./store/accounts-repository.js";
import { GenerationsRepository } from "./store/generations-repository.js";
import { LedgerRepository } from "./store/ledger-repository.js";
import { connect, ping, type Sql } from "./store/db.js";
import { ImagesRepository, takeWorkerId, transaction } from "./store/images-repository.js";
import { startEmbeddedPostgres } from "./store/embedded.js";
import { migrate } from "./store/migrate.js";
import { startGateway, type Gateway } from "./gateway/gateway.js";
import { EmbeddingsRepository } from "./store/embeddings-repository.js";
import { ModelManager, stillStarting } from "./embedding/model-manager.js";
import type { ModelEntry } from "./embedding/registry.js";
import { IndexKeeper } from "./search/index-keeper.js";
import { startLogPruning } from "./search/log-pruning.js";
import { Indexer } from "./search/indexer.js";
import { IndexClaimsRepository } from "./store/index-claims-repository.js";
import { SearchService, type SearchEngine } from "./search/search-service.js";
import { searchHandlers } from "./server/handlers/search-handlers.js";
import { DomainError } from "./errors.js";
import { Metrics } from "./observability/metrics.js";
import { metricsRoute, startMetricsServer, type MetricsServer } from "./observability/metrics-server.js";
import { storeState } from "./observability/store-probe.js";
import { tracedSql } from "./observability/traced-sql.js";
import { startTracing } from "./observability/tracing.js";
import { observeMiddleware } from "./server/middleware/observe.js";
import { detached } from "./observability/call-scope.js";

/** Verified API keys held in memory at most (each well under a kilobyte). */
const KEY_CACHE_ENTRIES = 10_000;

const DESCRIPTORS = path.join(path.dirname(fileURLToPath(import.meta.url)), "gen", "descriptors.binpb");

/** Optional replacements for the composition root's parts; tests choose what is real. */
export interface AppDeps {
  logger?: Logger;
  /** Replaces individual RPC handlers, e.g. with one that blocks until a test releases it. */
  handlers?: HandlerSet;
  /** The embedding models known by id (tests pull their own from a local server). */
  modelRegistry?: readonly ModelEntry[];
  /** The time source (tests move it to place uploads in the past, and to refill rate limits). */
  clock?: Clock;
}

/** A running glimpse: its addresses and the one way to stop it. */
export interface App {
  options: Options;
  grpcPort: number;
  /** Port of the HTTP/JSON bridge. */
  httpPort: number;
  /** Port of the metrics endpoint of its own (GLIMPSE_METRICS_ADDRESS); undefined: /metrics is on the bridge's port, or off. */
  metricsPort: number | undefined;
  sql: Sql;
  logger: Logger;
  blobs: BlobStore;
  /** Resolves once the embedding model is loaded and the vector index is caught up (never, if the model is unavailable). */
  searchReady: Promise<void>;
  /** Resolves once every index_log entry committed before the call is in this replica's search index. */
  searchCatchUp(): Promise<void>;
  /** Graceful stop: drain calls, stop transports, close the store (and the embedded server). */
  stop(): Promise<void>;
}

/**
 * The composition root: starts the transports, opens the store (embedded when no
 * DATABASE_URL), migrates, and only then reports SERVING. Anything that fails on the way
 * undoes what was started before it.
 */
export async function startApp(given: Options, deps: AppDeps = {}): Promise<App> {
  let options = given;
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
  // Authentication's view of the accounts, set once the store is ready (calls are refused before).
  let servingAccounts: AccountService | undefined;
  let grpc: GrpcServer | undefined;
  let gateway: Gateway | undefined;
  let metricsServer: MetricsServer | undefined;
  // Metrics (own registry), traces (only with an OTLP endpoint: no SDK loaded otherwise).
  const metrics = options.metrics ? new Metrics() : undefined;
  const tracing = await startTracing(options, logger);
  let serving = false;
  // Rate-limit buckets in Redis when replicas share them, else in this process.
  let limiter: TokenBuckets = new RateLimiter(clock);
  if (options.redisUrl !== undefined) {
    const shared = new RedisRateLimiter({
      url: options.redisUrl,
      prefix: options.redisPrefix,
      fail: options.redisFail,
      logger,
      unavailable: metrics ? (fail) => metrics.rateLimitStoreUnavailable.inc({ fail }) : undefined,
    });
    closers.push(() => shared.close());
    limiter = shared;
  }
  // One gatekeeper for both transports: the bridge admits a request by its headers before
  // reading its body, and the gRPC calls it then makes are not charged again.
  const gatekeeper = new Gatekeeper({
    accounts: () => servingAccounts,
    limiter,
    anonymousRead: options.anonymousRead,
    anonymousRateLimit: options.rateLimitPerMinute,
    rateLimited: metrics ? (caller) => metrics.rateLimited.inc({ caller }) : undefined,
  });
  // One bound on upload memory, for both transports; it must hold one largest request.
  const maxBodyBytes = Math.ceil((options.maxUploadBytes * 4) / 3) + 1024 * 1024;
  if (options.maxUploadBytesInFlight < maxBodyBytes * HTTP_BODY_MEMORY_FACTOR) {
    throw new Error(
      `GLIMPSE_MAX_UPLOAD_BYTES_IN_FLIGHT (${options.maxUploadBytesInFlight}) must hold one largest request body: ` +
        `${maxBodyBytes * HTTP_BODY_MEMORY_FACTOR} bytes (GLIMPSE_MAX_UPLOAD_BYTES as base64 in JSON, held ${HTTP_BODY_MEMORY_FACTOR} times over)`,
    );
  }
  const uploadBudget = new ByteBudget(options.maxUploadBytesInFlight);
  metrics?.watch({ uploadBytes: () => ({ inUse: uploadBudget.inUse, limit: uploadBudget.limit }) });
  try {
    // Opened before the bridge, which streams image bytes from it (it connects on first use).
    const blobs = openBlobStore(options);
    closers.push(() => blobs.close());
    const descriptors = await readFile(DESCRIPTORS);
    grpc = await startGrpcServer({
      host: options.grpcHost,
      port: options.grpcPort,
      logger,
      services: serviceRegistrations(() => handlers),
      descriptorSet: descriptors,
      // Room for the largest upload plus protobuf framing; the catalogue names the real limit.
      maxReceiveMessageBytes: Math.max(64 * 1024 * 1024, options.maxUploadBytes * 2),
      resolveCaller: apiKeyResolver(gatekeeper),
      gatekeeper,
      uploadBudget,
      idleTimeoutMs: options.grpcIdleTimeoutS * 1000,
      keepaliveMs: options.grpcKeepaliveS * 1000,
      maxConnectionAgeMs: options.grpcMaxConnectionAgeS * 1000,
      observe:
        metrics || tracing || options.slowCallMs > 0
          ? observeMiddleware({
              metrics,
              tracer: tracing?.tracer,
              slowCallMs: options.slowCallMs,
              logger,
              bridged: (metadata) => gatekeeper.bridged(metadata),
            })
          : undefined,
      // In-process calls are the HTTP bridge's.
      inProcessRefused: metrics ? (path, code) => metrics.refused(path, "http", code) : undefined,
    });
    gateway = await startGateway({
      host: options.grpcHost,
      port: options.httpPort,
      calls: grpc.inProcess,
      descriptors,
      publicUrl: () => options.publicUrl,
      ready: () => serving,
      maxBodyBytes,
      maxUploadBytes: options.maxUploadBytes,
      blobs,
      admit: (rpc, metadata, clientAddress) => gatekeeper.admit(rpc, metadata, clientAddress),
      ticket: gatekeeper.ticket,
      budget: uploadBudget,
      bodyTimeoutMs: options.httpBodyTimeoutS * 1000,
      headersTimeoutMs: options.httpHeadersTimeoutS * 1000,
      keepAliveTimeoutMs: options.httpKeepAliveTimeoutS * 1000,
      logger,
      extraRoutes: metrics && !options.metricsAddress ? [metricsRoute(metrics, logger)] : [],
      refused: metrics ? (rpc, code) => metrics.refused(rpc, "http", code) : undefined,
    });
    if (metrics && options.metricsAddress) metricsServer = await startMetricsServer(options.metricsAddress, metrics, logger);
    // The default public URL names the HTTP port; with port 0 it is known only now.
    if (options.publicUrl === `http://127.0.0.1:${options.httpPort}`) {
      options = { ...options, publicUrl: `http://127.0.0.1:${gateway.port}` };
    }

    let url = options.databaseUrl;
    if (url === undefined) {
      const embedded = await startEmbeddedPostgres(options.dataDir, logger);
      closers.push(() => embedded.stop());
      url = embedded.url;
    }
    const pool = connect({ url, max: options.databasePoolMax, logger });
    // Traced calls get a span per query; untraced, the repositories use the pool itself.
    const sql = tracing ? tracedSql(pool) : pool;
    closers.push(() => sql.end({ timeout: 5 }));
    await migrate(sql, logger);
    await ping(sql);

    const images = new ImagesRepository(sql);
    const ids = new SnowflakeGenerator(await takeWorkerId(sql), clock);
    // One pool for every full decode, uploads and search by image content alike.
    const analyse = pooledAnalyse(new DecodePool({ concurrency: options.decodeConcurrency, maxQueue: options.decodeQueueMax }));
    const search = startSearch(options, sql, blobs, logger, deps.modelRegistry, metrics, {
      callsRunning: () => grpc?.lifecycle.inFlight ?? Number.POSITIVE_INFINITY,
    });
    metrics?.watch({ store: () => storeState(sql) });
    closers.push(search.close);
    const catalogue = new CatalogueService({
      images,
      transaction: (fn) => transaction(sql, fn),
      blobs,
      clock,
      ids,
      limits: { maxBytes: options.maxUploadBytes, maxPixels: options.maxImagePixels },
      analyse,
      indexing: search.hooks,
      logger,
    });
    const blobSweep = { intervalMs: options.blobSweepIntervalS * 1000, graceMs: options.blobOrphanGraceS * 1000 };
    closers.push(startOrphanSweeping({ images, transaction: (fn) => transaction(sql, fn), blobs, logger }, blobSweep));
    const listing = new ListingService(images, clock);
    const searchService = new SearchService({
      embeddings: search.embeddings,
      catalogue,
      clock,
      engine: search.engine,
      analyse,
      limits: { maxBytes: options.maxUploadBytes, maxPixels: options.maxImagePixels },
      ef: options.searchEf,
      exactMax: options.searchExactMax,
    });
    const accounts = new AccountsRepository(sql);
    const ledger = new LedgerRepository(sql);
    const accountsService = new AccountService({
      accounts,
      ledger,
      transaction: (fn) => transaction(sql, fn),
      clock,
      logger,
      defaultRateLimit: options.rateLimitPerMinute,
      maxKeysPerAccount: options.maxKeysPerAccount,
      keyCache: new KeyCache({ ttlMs: options.keyCacheTtlS * 1000, maxEntries: KEY_CACHE_ENTRIES, clock }),
    });
    // Listening before the first call is served, so no revocation can slip past the cache.
    closers.push(await accountsService.followKeyChanges());
    if (options.adminKey !== undefined) await accountsService.ensureAdminKey(options.adminKey);
    const replica = await ReplicaLease.start({ url, logger });
    closers.push(() => replica.stop());
    const generation = new GenerationService({
      generations: new GenerationsRepository(sql),
      ledger,
      accounts,
      transaction: (fn) => transaction(sql, fn),
      catalogue,
      providers: buildProviders(options),
      clock,
      logger,
      replica,
    });
    const stopSweeping = generation.startSweeping(abandonedAfterMs(options));
    closers.push(async () => stopSweeping());
    servingAccounts = accountsService;
    const overrides = deps.handlers ?? {};
    handlers = {
      image: {
        ...imageHandlers({ catalogue, listing, publicUrl: options.publicUrl }),
        ...searchHandlers({ search: searchService, publicUrl: options.publicUrl }),
        ...overrides.image,
      },
      generation: { ...generationHandlers(generation), ...overrides.generation },
      account: {
        ...accountHandlers({ accounts: accountsService, defaultRateLimit: options.rateLimitPerMinute }),
        ...overrides.account,
      },
    };
    grpc.markServing();
    serving = true;
    logger.info("glimpse serving", {
      grpcPort: grpc.port,
      httpPort: gateway.port,
      store: options.databaseUrl === undefined ? "embedded" : "external",
    });

    const server = grpc;
    const bridge = gateway;
    const metricsEndpoint = metricsServer;
    let stopping: Promise<void> | undefined;
    return {
      options,
      grpcPort: grpc.port,
      httpPort: gateway.port,
      metricsPort: metricsServer?.port,
      sql,
      logger,
      blobs,
      searchReady: search.ready,
      searchCatchUp: () => search.hooks.changed(),
      stop() {
        stopping ??= (async () => {
          logger.info("shutting down", { graceMs: options.shutdownGraceMs });
          serving = false;
          await server.shutdown(options.shutdownGraceMs);
          await bridge.close();
          await metricsEndpoint?.close();
          await closeStore();
          // Spans still buffered (the last calls', the shutdown's) are exported before the end.
          await tracing?.shutdown().catch((error) => logger.warn("exporting the last spans failed", { error }));
        })();
        return stopping;
      },
    };
  } catch (err) {
    await grpc?.shutdown(0);
    await gateway?.close();
    await metricsServer?.close();
    await closeStore();
    await tracing?.shutdown().catch(() => undefined);
    throw err;
  }
}

/**
 * Starts semantic search beside the catalogue: the model loads (or is pulled) in the
 * background, then the vector index opens and the indexer starts embedding pending images.
 * Until then search answers FAILED_PRECONDITION and uploads stay pending.
 */
function startSearch(
  options: Options,
  sql: Sql,
  blobs: BlobStore,
  logger: Logger,
  registry: readonly ModelEntry[] | undefined,
  metrics: Metrics | undefined,
  pace: GraphPace,
) {
  const embeddings = new EmbeddingsRepository(sql);
  const models = new ModelManager({
    model: options.model,
    cacheDir: options.modelCacheDir,
    autoPull: options.modelAutoPull,
    baseUrl: options.modelBaseUrl,
    runtime: { intraOpThreads: options.embedThreads, executionProvider: options.embedExecutionProvider },
    registry,
    batching: {
      maxBatchSize: options.embedBatchSize,
      maxWaitMs: options.embedBatchWaitMs,
      maxQueue: options.embedQueueMax,
      observer: metrics && {
        ran(items, ms) {
          metrics.embedBatchSize.observe(items);
          metrics.embedRunSeconds.observe(ms / 1000);
        },
      },
    },
    logger,
  });
  let engine: SearchEngine | undefined;
  let stopped = false;
  let stopPruning: (() => Promise<void>) | undefined;
  metrics?.watch({ index: () => engine?.keeper.state, embedQueue: () => engine?.embedder.queued });
  const indexer = new Indexer({
    embeddings,
    claims: new IndexClaimsRepository(sql),
    claimLeaseMs: options.indexClaimLeaseS * 1000,
    blobs,
    logger,
    batchSize: options.embedBatchSize,
    afterStore: () => engine?.keeper.catchUp() ?? Promise.resolve(),
  });
  models.start();
  const ready = models.ready().then(async (embedder) => {
    const requeued = await embeddings.requeueOtherModels(embedder.modelId, embedder.dimension);
    if (requeued > 0) logger.info("embedding model changed; re-indexing", { images: requeued, model: embedder.modelId });
    const retried = await embeddings.requeueFailed();
    if (retried > 0) logger.info("retrying images that failed to index", { images: retried });
    const keeper = await IndexKeeper.open(embedder.modelId, embedder.dimension, {
      sql,
      embeddings,
      snapshotRoot: path.join(options.dataDir, "index"),
      policy: { everyChanges: options.snapshotEveryChanges, intervalMs: options.snapshotIntervalS * 1000 },
      logger,
      scanQuantisation: options.scanQuantisation,
      graphThread: options.graphThread,
      hnswBuild: options.hnswBuild,
      pace,
      rebuilt: () => metrics?.indexRebuilds.inc(),
    });
    if (stopped) return keeper.close();
    engine = { embedder, keeper };
    if (options.indexLogRetentionS > 0) {
      stopPruning = startLogPruning(
        { embeddings, logger, pruned: (entries) => metrics?.logPruned.inc(entries) },
        { retentionMs: options.indexLogRetentionS * 1000 },
      );
    }
    indexer.start(embedder);
  });
  let failure: string | undefined;
  ready.catch((error: Error) => {
    failure = error.message;
    logger.error("search could not start", { error });
  });

  const currentEngine = (): SearchEngine => {
    if (engine?.keeper.rebuilding) {
      throw stillStarting("the search index is being rebuilt from the database (index_log was pruned past it); retry shortly");
    }
    if (engine) return engine;
    models.embedder(); // throws the reason while the model is not ready
    if (failure !== undefined) {
      throw new DomainError("FAILED_PRECONDITION", `semantic search could not start: ${failure}; see the server log`);
    }
    throw stillStarting("the search index is still loading; retry shortly");
  };
  return {
    embeddings,
    engine: currentEngine,
    ready,
    hooks: {
      ensureAvailable: () => void currentEngine(),
      // Indexing rounds serve every pending image: they run outside the call that set them off.
      notify: () => detached(() => indexer.notify()),
      waitFor: (id: bigint, signal?: AbortSignal) => detached(() => indexer.waitFor(id, signal)),
      changed: () => engine?.keeper.catchUp() ?? Promise.resolve(),
    },
    async close() {
      stopped = true;
      await stopPruning?.();
      await indexer.close();
      await engine?.keeper.close();
      await models.close();
    },
  };
}
