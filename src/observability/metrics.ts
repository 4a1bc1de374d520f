import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

/** Seconds buckets for call latencies: 1 ms to 30 s. */
const CALL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Seconds buckets for search stages and model runs: 0.1 ms to 5 s. */
const STAGE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/** gRPC status names by code, as the calls counter labels them. */
const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/** How a call reached the gRPC server: directly, or through the HTTP/JSON bridge. */
export type Transport = "grpc" | "http";

/** The search index as the metrics see it, read at each scrape. */
export interface IndexState {
  /** Live vectors. */
  size: number;
  /** Slots of removed vectors, not yet reused. */
  deleted: number;
  /** When the newest snapshot on disk was written (ms since the epoch), if any. */
  snapshotAt: number | undefined;
  /** Changes applied since that snapshot. */
  unsnapshotted: number;
  /** The last index_log sequence applied. */
  appliedSeq: bigint;
}

/** What PostgreSQL says at a scrape (one query for all of it). */
export interface StoreState {
  /** The newest index_log sequence. */
  newestLogSeq: bigint;
  /** Generations holding a credit reservation (running, all replicas). */
  openReservations: number;
}

/** Where the gauges read their values at each scrape; any may be absent (not started yet). */
export interface MetricSources {
  embedQueue?: () => number | undefined;
  index?: () => IndexState | undefined;
  store?: () => Promise<StoreState>;
  uploadBytes?: () => { inUse: number; limit: number };
}

/** A value read at scrape time, or nothing when its source is not ready. */
type Read<T> = () => T | undefined | Promise<T | undefined>;

/**
 * glimpse's Prometheus metrics, in a registry of their own (several apps in one process
 * never share counters), with Node's default process metrics (event-loop delay, GC pauses,
 * heap, CPU, handles) in the same registry.
 */
export class Metrics {
  readonly registry = new Registry();
  private sources: MetricSources = {};

  readonly calls = new Counter({
    name: "glimpse_calls_total",
    help: "Finished RPCs by service, method, transport (grpc, or http through the bridge) and gRPC status code; for http, requests the bridge refused before any call too.",
    labelNames: ["service", "method", "transport", "code"] as const,
    registers: [this.registry],
  });
  readonly callSeconds = new Histogram({
    name: "glimpse_call_duration_seconds",
    help: "RPC latency inside the server (for http, the call the bridge makes in-process; the JSON conversion is outside).",
    labelNames: ["service", "method", "transport"] as const,
    buckets: CALL_BUCKETS,
    registers: [this.registry],
  });
  readonly callsInFlight = new Gauge({
    name: "glimpse_calls_in_flight",
    help: "RPCs being served now.",
    labelNames: ["service", "method", "transport"] as const,
    registers: [this.registry],
  });
  readonly uploadsInFlight = new Gauge({
    name: "glimpse_uploads_in_flight",
    help: "UploadImage and BatchUploadImages calls being served now (both transports).",
    registers: [this.registry],
  });
  readonly searchStageSeconds = new Histogram({
    name: "glimpse_search_stage_duration_seconds",
    help: "Time of each search stage: embed (query to vector), candidates (filter), rank (vector search), hydrate (result fields); walk: each HNSW graph walk itself, timed on the thread that runs it (part of rank).",
    labelNames: ["stage"] as const,
    buckets: STAGE_BUCKETS,
    registers: [this.registry],
  });
  readonly searchSeconds = new Histogram({
    name: "glimpse_search_duration_seconds",
    help: "Whole searches by planner path: exact (scan of the candidates), hnsw_filtered (walk with the filter), hnsw_overfetch (plain walk, filtered after), hnsw (unfiltered).",
    labelNames: ["plan"] as const,
    buckets: CALL_BUCKETS,
    registers: [this.registry],
  });
  readonly embedBatchSize = new Histogram({
    name: "glimpse_embed_batch_size",
    help: "Inputs per embedding model run.",
    buckets: BATCH_BUCKETS,
    registers: [this.registry],
  });
  readonly embedRunSeconds = new Histogram({
    name: "glimpse_embed_run_duration_seconds",
    help: "Time of one embedding model run (a whole batch).",
    buckets: STAGE_BUCKETS,
    registers: [this.registry],
  });
  readonly rateLimited = new Counter({
    name: "glimpse_rate_limit_refusals_total",
    help: "Calls refused for a spent rate limit, by caller kind (key or anonymous).",
    labelNames: ["caller"] as const,
    registers: [this.registry],
  });
  readonly rateLimitStoreUnavailable = new Counter({
    name: "glimpse_rate_limit_redis_unavailable_total",
    help: "Calls decided without Redis (GLIMPSE_REDIS_URL) because it did not answer, by GLIMPSE_REDIS_FAIL (open: admitted, closed: refused).",
    labelNames: ["fail"] as const,
    registers: [this.registry],
  });
  readonly logPruned = new Counter({
    name: "glimpse_index_log_pruned_entries_total",
    help: "index_log entries this replica deleted as older than GLIMPSE_INDEX_LOG_RETENTION_S.",
    registers: [this.registry],
  });
  readonly indexRebuilds = new Counter({
    name: "glimpse_index_rebuilds_total",
    help: "Times this replica rebuilt its running search index from the tables because index_log was pruned past entries it had not applied.",
    registers: [this.registry],
  });
  readonly slowCalls = new Counter({
    name: "glimpse_slow_calls_total",
    help: "Calls slower than GLIMPSE_SLOW_CALL_MS, by method and the stage that took most of their time.",
    labelNames: ["service", "method", "stage"] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    const gauge = (name: string, help: string, read: Read<number>) =>
      new Gauge({
        name,
        help,
        registers: [this.registry],
        async collect() {
          // NaN while the source is not there yet (the model loading, no snapshot written).
          this.set((await read()) ?? NaN);
        },
      });
    const index = () => this.sources.index?.();
    // One query per scrape answers both store gauges.
    let store: Promise<StoreState | undefined> | undefined;
    const storeState = () => {
      if (store === undefined) {
        store = (this.sources.store?.() ?? Promise.resolve(undefined)).catch(() => undefined);
        setTimeout(() => (store = undefined), 1000).unref();
      }
      return store;
    };
    gauge("glimpse_embed_queue_depth", "Inputs waiting for an embedding model run (both towers).", () =>
      this.sources.embedQueue?.(),
    );
    gauge("glimpse_index_vectors", "Vectors in this replica's search index.", () => index()?.size);
    gauge("glimpse_index_deleted_slots", "Slots of removed vectors in the index, not yet reused.", () => index()?.deleted);
    gauge("glimpse_index_unsnapshotted_changes", "Index changes not yet in a snapshot on disk.", () => index()?.unsnapshotted);
    gauge("glimpse_index_snapshot_age_seconds", "Seconds since the newest index snapshot was written.", () => {
      const at = index()?.snapshotAt;
      return at === undefined ? undefined : Math.max(0, (Date.now() - at) / 1000);
    });
    gauge(
      "glimpse_index_log_lag",
      "index_log entries committed but not yet applied to this replica's index (sequence numbers behind).",
      async () => {
        const applied = index()?.appliedSeq;
        const state = applied === undefined ? undefined : await storeState();
        return state === undefined || applied === undefined ? undefined : Math.max(0, Number(state.newestLogSeq - applied));
      },
    );
    gauge(
      "glimpse_credit_reservations_open",
      "Generations holding a credit reservation now (all replicas).",
      async () => (await storeState())?.openReservations,
    );
    gauge("glimpse_upload_bytes_in_flight", "Upload body memory reserved now (bodies count what holding them costs).", () =>
      this.sources.uploadBytes?.().inUse,
    );
    gauge("glimpse_upload_bytes_limit", "The upload memory bound (GLIMPSE_MAX_UPLOAD_BYTES_IN_FLIGHT).", () =>
      this.sources.uploadBytes?.().limit,
    );
  }

  /**
   * Counts a call refused before it reached the middleware chain (which counts every other
   * call): for http, a request the bridge answered with an error before making any call (a
   * body over the limit, admission, a busy server), with the gRPC code it stands for.
   */
  refused(path: string, transport: Transport, code: number): void {
    const [service = "", method = ""] = path.replace(/^\//, "").split("/");
    this.calls.inc({ service, method, transport, code: CODE_NAMES[code] ?? String(code) });
  }

  /** Adds sources for the gauges (those given replace earlier ones). */
  watch(sources: MetricSources): void {
    this.sources = { ...this.sources, ...sources };
  }

  /** The exposition text of every metric. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
