import { statSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";
import { MODELS } from "../embedding/registry.js";

/** Severity threshold for the structured log; `silent` turns logging off. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

/** Every runtime option of glimpse, after parsing and validation. */
export interface Options {
  /** Root of everything glimpse writes: blobs, index snapshots, the embedded database. */
  dataDir: string;
  /** External PostgreSQL URL; `undefined` starts the embedded server under `dataDir`. */
  databaseUrl: string | undefined;
  /** Connections in the postgres.js pool. */
  databasePoolMax: number;
  /** Interface the gRPC server and the HTTP bridge bind. */
  grpcHost: string;
  /** Port the gRPC server binds; 0 picks a free one. */
  grpcPort: number;
  /** Port of the HTTP/JSON bridge; 0 picks a free one. */
  httpPort: number;
  /** Minimum severity written to the log. */
  logLevel: LogLevel;
  /** How long shutdown lets in-flight calls run before aborting them, in milliseconds. */
  shutdownGraceMs: number;
  /** Base of the absolute image URLs glimpse hands out (the HTTP bridge's address). */
  publicUrl: string;
  /** Largest accepted upload, in bytes. */
  maxUploadBytes: number;
  /** Largest accepted image, in pixels (width x height x frames); larger is a decompression bomb. */
  maxImagePixels: number;
  /** Image decodes (upload analysis, search by image content) running at once. */
  decodeConcurrency: number;
  /** Decodes allowed to wait for a slot; beyond it, RESOURCE_EXHAUSTED. */
  decodeQueueMax: number;
  /** Seconds between sweeps for blob files no image references (and stale temp files); also swept at start. */
  blobSweepIntervalS: number;
  /** Seconds an unreferenced blob or temp file is left alone before a sweep may remove it. */
  blobOrphanGraceS: number;
  /** Where blobs live: files under a directory (`<dataDir>/blobs` by default), or an S3 bucket and key prefix. */
  blobs: BlobLocation;
  /** Endpoint of an S3-compatible server (MinIO, Ceph RGW); undefined: AWS S3 for the region. */
  s3Endpoint: string | undefined;
  /** S3 region (request signing; AWS picks the endpoint from it). */
  s3Region: string;
  /** Path-style S3 addressing (`endpoint/bucket/key`), which most self-hosted servers need. */
  s3ForcePathStyle: boolean;
  /** Redis holding the rate-limit buckets replicas share; undefined: buckets live in this process. */
  redisUrl: string | undefined;
  /** What a call meets while Redis does not answer: admitted unlimited (`open`) or refused UNAVAILABLE (`closed`). */
  redisFail: "open" | "closed";
  /** Prepended to every rate-limit key in Redis, so deployments sharing one Redis stay apart. */
  redisPrefix: string;
  /** Seconds a batch of pending images claimed by one replica's indexer stays its alone. */
  indexClaimLeaseS: number;
  /** Embedding model: a registry id (`clip-vit-b32`) or the absolute path of a model directory. */
  model: string;
  /** Where `glimpse model pull` installs registry models; `<dataDir>/models` by default. */
  modelCacheDir: string;
  /** Whether the service downloads a missing registry model at start (in the background). */
  modelAutoPull: boolean;
  /** Host registry models are downloaded from (a Hugging Face-style `/<repo>/resolve/<rev>/<path>`). */
  modelBaseUrl: string;
  /** Threads each embedding model run may use (onnxruntime intra-op threads). */
  embedThreads: number;
  /** Where model runs execute: cpu, or cuda when onnxruntime has it. */
  embedExecutionProvider: "cpu" | "cuda";
  /** Most inputs the dynamic batcher puts in one model run. */
  embedBatchSize: number;
  /** How long the batcher holds the first input of a batch waiting for more, in milliseconds. */
  embedBatchWaitMs: number;
  /** Inputs allowed to wait for the model; beyond it, RESOURCE_EXHAUSTED. */
  embedQueueMax: number;
  /** Default HNSW search breadth (ef) when a request does not set one. */
  searchEf: number;
  /** Filters matching at most this many images are answered by an exact scan instead of HNSW. */
  searchExactMax: number;
  /** What the exact scan reads: int8 rows plus a float32 re-rank of the best, or float32 rows. */
  scanQuantisation: "int8" | "float32";
  /** Where the HNSW graph lives: a thread of its own (worker) or the main thread (inline). */
  graphThread: "worker" | "inline";
  /** Which compiled hnswlib runs the graph: the AVX2 build where the CPU runs it (auto), or the package's. */
  hnswBuild: "auto" | "baseline";
  /** Index changes after which a snapshot is written. */
  snapshotEveryChanges: number;
  /** Seconds after which changes not yet in a snapshot are written to one. */
  snapshotIntervalS: number;
  indexLogRetentionS: number;
  /** An API key that is made sure to exist for the default admin account at start. */
  adminKey: string | undefined;
  /** Whether calls without a key may read public images (GetImage, GetImageContent, ListImages, ListComments). */
  anonymousRead: boolean;
  /** Requests per minute of keys created without their own limit (and of anonymous callers, per address). */
  rateLimitPerMinute: number;
  /** Seconds a verified API key is trusted from memory without a change notification; 0 reads every call's key from PostgreSQL. */
  keyCacheTtlS: number;
  /** API keys (not revoked) a non-admin account may hold at once. */
  maxKeysPerAccount: number;
  /** Memory for upload bodies across the whole process (bodies count what holding them costs). */
  maxUploadBytesInFlight: number;
  /** Seconds an HTTP client has to send a whole request body (each message, for streamed bodies). */
  httpBodyTimeoutS: number;
  /** Seconds an HTTP client has to send its request headers. */
  httpHeadersTimeoutS: number;
  /** Seconds an HTTP connection may sit idle between requests. */
  httpKeepAliveTimeoutS: number;
  /** Seconds a gRPC connection without calls stays open (also a client that never sends the HTTP/2 preface). */
  grpcIdleTimeoutS: number;
  /** Seconds between keepalive pings the gRPC server sends; an unanswered ping closes the connection. */
  grpcKeepaliveS: number;
  /** Seconds after which a gRPC connection is asked to go away (its calls get a grace period); 0: never. */
  grpcMaxConnectionAgeS: number;
  /** Root of the OpenAI API. */
  openaiBaseUrl: string;
  /** OpenAI API key; unset makes OpenAI models unavailable. */
  openaiApiKey: string | undefined;
  /** Root of the Gemini API. */
  googleBaseUrl: string;
  /** Gemini API key; unset makes Google models unavailable. */
  googleApiKey: string | undefined;
  /** Limit on one provider HTTP request, in milliseconds. */
  providerTimeoutMs: number;
  /** Further attempts after a provider's 429, 5xx, timeout or connection failure. */
  providerRetries: number;
  /** Whether Prometheus metrics are collected and served at /metrics. */
  metrics: boolean;
  /** Serve /metrics on this address of its own instead of the HTTP bridge's port; undefined: the bridge's port. */
  metricsAddress: { host: string; port: number } | undefined;
  /** Calls slower than this many milliseconds get a log line naming their slowest stage; 0: none. */
  slowCallMs: number;
  /** OTLP/HTTP base URL for traces (`<url>/v1/traces`); with the traces endpoint unset too, tracing is off. */
  otlpEndpoint: string | undefined;
  /** OTLP/HTTP URL spans are posted to (wins over otlpEndpoint). */
  otlpTracesEndpoint: string | undefined;
  /** The service name on exported spans. */
  serviceName: string;
}

/** Where blobs are stored; a files location with an empty `dir` means `<dataDir>/blobs`. */
export type BlobLocation = { kind: "files"; dir: string } | { kind: "s3"; bucket: string; prefix: string };

/** One documented option: where it comes from and how its text becomes a value. */
interface OptionSpec<K extends keyof Options> {
  key: K;
  env: string;
  flag?: string;
  doc: string;
  /** The default as a user would write it in the environment; `undefined` means unset. */
  default: string | undefined;
  parse: (raw: string | undefined, env: string) => Options[K];
}

/** A configuration that cannot be used; the message names every offending variable. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

function integer(min: number, max: number) {
  return (raw: string | undefined, env: string): number => {
    const text = (raw ?? "").trim();
    if (!/^-?\d+$/.test(text)) throw new Error(`${env} must be an integer, got ${JSON.stringify(raw)}`);
    const value = Number(text);
    if (value < min || value > max) throw new Error(`${env} must be between ${min} and ${max}, got ${value}`);
    return value;
  };
}

/** 0 (off), or a value `inner` accepts; the error names both. */
function zeroOr(inner: (raw: string | undefined, env: string) => number) {
  return (raw: string | undefined, env: string): number => {
    if ((raw ?? "").trim() === "0") return 0;
    try {
      return inner(raw, env);
    } catch (error) {
      throw new Error(`${(error as Error).message} (or 0)`);
    }
  };
}

/** A count of CPU-heavy workers; 0 means one fewer than the cores, at most 3 (libuv has 4 threads, blob reads need one). */
function workers(raw: string | undefined, env: string): number {
  const value = integer(0, 256)(raw, env);
  return value > 0 ? value : Math.max(1, Math.min(availableParallelism() - 1, 3));
}

function oneOf<T extends string>(values: readonly T[]) {
  return (raw: string | undefined, env: string): T => {
    const text = (raw ?? "").trim().toLowerCase();
    if (!(values as readonly string[]).includes(text)) {
      throw new Error(`${env} must be one of ${values.join(", ")}, got ${JSON.stringify(raw)}`);
    }
    return text as T;
  };
}

function postgresUrl(raw: string | undefined, env: string): string | undefined {
  if (raw === undefined || raw.trim() === "") return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`${env} must be a URL such as postgres://user@host:5432/db`);
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new Error(`${env} must use the postgres:// scheme, got ${url.protocol}`);
  }
  return raw;
}

function host(raw: string | undefined, env: string): string {
  const text = (raw ?? "").trim();
  if (text === "" || /\s/.test(text)) throw new Error(`${env} must be a host name or IP address`);
  return text;
}

function directory(raw: string | undefined, env: string): string {
  const text = (raw ?? "").trim();
  if (text === "") throw new Error(`${env} must be a directory path`);
  return path.resolve(text);
}

function publicUrl(raw: string | undefined, env: string): string {
  // Empty here means "derive from the HTTP port"; loadOptions fills it in.
  if (raw === undefined || raw.trim() === "") return "";
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw new Error(`${env} must be an absolute http(s) URL such as https://images.example.com`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`${env} must be an http(s) URL`);
  return url.toString().replace(/\/+$/, "");
}

function boolean(raw: string | undefined, env: string): boolean {
  const text = (raw ?? "").trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(text)) return true;
  if (["false", "0", "no", "off"].includes(text)) return false;
  throw new Error(`${env} must be true or false, got ${JSON.stringify(raw)}`);
}

function optionalDirectory(raw: string | undefined, env: string): string {
  // Empty here means "derive from the data directory"; loadOptions fills it in.
  if (raw === undefined || raw.trim() === "") return "";
  return directory(raw, env);
}

function baseUrl(raw: string | undefined, env: string): string {
  let url: URL;
  try {
    url = new URL((raw ?? "").trim());
  } catch {
    throw new Error(`${env} must be an absolute http(s) URL such as https://huggingface.co`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`${env} must be an http(s) URL`);
  return url.toString().replace(/\/+$/, "");
}

/** A registry id stays as it is; anything else must be an existing directory, made absolute. */
function modelReference(raw: string | undefined, env: string): string {
  const text = (raw ?? "").trim();
  if (MODELS.some((m) => m.id === text)) return text;
  const dir = path.resolve(text);
  if (text === "" || !statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
    throw new Error(
      `${env} must be a model id (${MODELS.map((m) => m.id).join(", ")}) or an existing model directory, got ${JSON.stringify(raw)}`,
    );
  }
  return dir;
}

/** An http(s) API root, without a trailing slash. */
function apiRoot(raw: string | undefined, env: string): string {
  let url: URL;
  try {
    url = new URL((raw ?? "").trim());
  } catch {
    throw new Error(`${env} must be an absolute http(s) URL such as https://api.example.com`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`${env} must be an http(s) URL`);
  return url.toString().replace(/\/+$/, "");
}

/** An optional secret: unset or empty is undefined; otherwise printable ASCII without spaces. */
function optionalSecret(minLength: number) {
  return (raw: string | undefined, env: string): string | undefined => {
    const text = (raw ?? "").trim();
    if (text === "") return undefined;
    if (!/^[\x21-\x7e]+$/.test(text) || text.length < minLength || text.length > 200) {
      throw new Error(`${env} must be ${minLength} to 200 printable characters without spaces`);
    }
    return text;
  };
}

/** An optional `host:port` to listen on (`:port` or a bare port: every interface). */
function optionalListenAddress(raw: string | undefined, env: string): { host: string; port: number } | undefined {
  const text = (raw ?? "").trim();
  if (text === "") return undefined;
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[^\s:[\]]*):)?(\d{1,5})$/.exec(text);
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535) throw new Error(`${env} must be host:port (or :port), got ${JSON.stringify(raw)}`);
  const host = match[1] ? match[1].replace(/^\[(.*)\]$/, "$1") : "0.0.0.0";
  return { host, port };
}

/** An optional absolute http(s) URL, kept as written. */
function optionalHttpUrl(raw: string | undefined, env: string): string | undefined {
  const text = (raw ?? "").trim();
  if (text === "") return undefined;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`${env} must be an absolute http(s) URL such as http://127.0.0.1:4318`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`${env} must be an http(s) URL`);
  return text;
}

function serviceName(raw: string | undefined, env: string): string {
  const text = (raw ?? "").trim();
  if (text === "" || text.length > 200) throw new Error(`${env} must be 1 to 200 characters`);
  return text;
}

/** `s3://bucket/prefix`, or a directory; unset: the data directory's `blobs/`. */
function blobLocation(raw: string | undefined, env: string): BlobLocation {
  const text = (raw ?? "").trim();
  if (text === "") return { kind: "files", dir: "" };
  if (!text.startsWith("s3://")) return { kind: "files", dir: directory(text, env) };
  const [bucket, ...rest] = text.slice("s3://".length).split("/");
  // S3's bucket naming rules: 3-63 of lower-case letters, digits, dots and hyphens.
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new Error(`${env} must be s3://bucket/prefix with a valid bucket name (3-63 of a-z, 0-9, '.', '-'), got ${JSON.stringify(raw)}`);
  }
  const prefix = rest.filter((part) => part !== "").join("/");
  if (/[^\x21-\x7e]/.test(prefix)) throw new Error(`${env} key prefix must be printable characters without spaces`);
  return { kind: "s3", bucket, prefix: prefix === "" ? "" : `${prefix}/` };
}

/** An optional `redis://` or `rediss://` URL, kept as written. */
function optionalRedisUrl(raw: string | undefined, env: string): string | undefined {
  const text = (raw ?? "").trim();
  if (text === "") return undefined;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`${env} must be a URL such as redis://127.0.0.1:6379`);
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") throw new Error(`${env} must use redis:// or rediss://`);
  return text;
}

function redisPrefix(raw: string | undefined, env: string): string {
  const text = (raw ?? "").trim();
  if (!/^[\x21-\x7e]{1,100}$/.test(text)) throw new Error(`${env} must be 1 to 100 printable characters without spaces`);
  return text;
}

/** An optional absolute http(s) endpoint, without a trailing slash. */
function optionalEndpoint(raw: string | undefined, env: string): string | undefined {
  if (raw === undefined || raw.trim() === "") return undefined;
  return apiRoot(raw, env);
}

/** The option table: the single source for parsing, validation and the README's table. */
export const optionSpecs = [
  {
    key: "dataDir",
    env: "GLIMPSE_DATA_DIR",
    flag: "--data-dir",
    default: "./data",
    doc: "Directory for blobs, index snapshots and the embedded PostgreSQL cluster.",
    parse: directory,
  } satisfies OptionSpec<"dataDir">,
  {
    key: "databaseUrl",
    env: "DATABASE_URL",
    flag: "--database-url",
    default: undefined,
    doc: "PostgreSQL URL. Unset: glimpse runs its own embedded PostgreSQL under the data directory.",
    parse: postgresUrl,
  } satisfies OptionSpec<"databaseUrl">,
  {
    key: "databasePoolMax",
    env: "GLIMPSE_DB_POOL_MAX",
    default: "10",
    doc: "Maximum PostgreSQL connections (1-100).",
    parse: integer(1, 100),
  } satisfies OptionSpec<"databasePoolMax">,
  {
    key: "grpcHost",
    env: "GLIMPSE_GRPC_HOST",
    flag: "--grpc-host",
    default: "127.0.0.1",
    doc: "Interface the gRPC server and the HTTP bridge (and `/metrics`, unless `GLIMPSE_METRICS_ADDRESS` names its own) listen on.",
    parse: host,
  } satisfies OptionSpec<"grpcHost">,
  {
    key: "grpcPort",
    env: "GLIMPSE_GRPC_PORT",
    flag: "--grpc-port",
    default: "50051",
    doc: "gRPC port (0 picks a free port).",
    parse: integer(0, 65535),
  } satisfies OptionSpec<"grpcPort">,
  {
    key: "httpPort",
    env: "GLIMPSE_HTTP_PORT",
    flag: "--http-port",
    default: "8080",
    doc: "HTTP/JSON bridge port (0 picks a free port).",
    parse: integer(0, 65535),
  } satisfies OptionSpec<"httpPort">,
  {
    key: "logLevel",
    env: "GLIMPSE_LOG_LEVEL",
    flag: "--log-level",
    default: "info",
    doc: "Log threshold: debug, info, warn, error or silent.",
    parse: oneOf(["debug", "info", "warn", "error", "silent"] as const),
  } satisfies OptionSpec<"logLevel">,
  {
    key: "shutdownGraceMs",
    env: "GLIMPSE_SHUTDOWN_GRACE_MS",
    default: "10000",
    doc: "On SIGTERM/SIGINT, milliseconds in-flight calls may take before they are aborted.",
    parse: integer(0, 600_000),
  } satisfies OptionSpec<"shutdownGraceMs">,
  {
    key: "publicUrl",
    env: "GLIMPSE_PUBLIC_URL",
    flag: "--public-url",
    default: undefined,
    doc: "Base of the image URLs glimpse returns (default http://127.0.0.1:<GLIMPSE_HTTP_PORT>).",
    parse: publicUrl,
  } satisfies OptionSpec<"publicUrl">,
  {
    key: "maxUploadBytes",
    env: "GLIMPSE_MAX_UPLOAD_BYTES",
    default: String(25 * 1024 * 1024),
    doc: "Largest accepted upload in bytes (default 25 MiB).",
    parse: integer(1024, 1024 * 1024 * 1024),
  } satisfies OptionSpec<"maxUploadBytes">,
  {
    key: "maxImagePixels",
    env: "GLIMPSE_MAX_IMAGE_PIXELS",
    default: "100000000",
    doc: "Largest accepted image in pixels, all frames together (default 100 megapixels).",
    parse: integer(1, 2_000_000_000),
  } satisfies OptionSpec<"maxImagePixels">,
  {
    key: "decodeConcurrency",
    env: "GLIMPSE_DECODE_CONCURRENCY",
    default: "0",
    doc: "Image decodes (upload analysis, search by image content) running at once; 0: one fewer than the CPU cores, at most 3.",
    parse: workers,
  } satisfies OptionSpec<"decodeConcurrency">,
  {
    key: "decodeQueueMax",
    env: "GLIMPSE_DECODE_QUEUE_MAX",
    default: "16",
    doc: "Decodes allowed to wait for a slot; more get RESOURCE_EXHAUSTED with a retry delay.",
    parse: integer(0, 100_000),
  } satisfies OptionSpec<"decodeQueueMax">,
  {
    key: "blobSweepIntervalS",
    env: "GLIMPSE_BLOB_SWEEP_INTERVAL_S",
    default: "3600",
    doc: "Seconds between sweeps removing blob files no image references and partial writes (also swept at start).",
    parse: integer(1, 604_800),
  } satisfies OptionSpec<"blobSweepIntervalS">,
  {
    key: "blobOrphanGraceS",
    env: "GLIMPSE_BLOB_ORPHAN_GRACE_S",
    default: "3600",
    doc: "Seconds an unreferenced blob file or partial write is kept before a sweep may remove it.",
    parse: integer(60, 2_592_000),
  } satisfies OptionSpec<"blobOrphanGraceS">,
  {
    key: "blobs",
    env: "GLIMPSE_BLOBS",
    default: undefined,
    doc: "Where image bytes live: s3://bucket/prefix (shared by replicas), or a directory (default <GLIMPSE_DATA_DIR>/blobs).",
    parse: blobLocation,
  } satisfies OptionSpec<"blobs">,
  {
    key: "s3Endpoint",
    env: "GLIMPSE_S3_ENDPOINT",
    default: undefined,
    doc: "Endpoint of an S3-compatible server (e.g. http://minio:9000). Unset: AWS S3. Credentials: the AWS_* variables.",
    parse: optionalEndpoint,
  } satisfies OptionSpec<"s3Endpoint">,
  {
    key: "s3Region",
    env: "GLIMPSE_S3_REGION",
    default: "us-east-1",
    doc: "S3 region.",
    parse: host,
  } satisfies OptionSpec<"s3Region">,
  {
    key: "s3ForcePathStyle",
    env: "GLIMPSE_S3_FORCE_PATH_STYLE",
    default: "false",
    doc: "Path-style S3 addressing (endpoint/bucket/key), which MinIO and most self-hosted servers need.",
    parse: boolean,
  } satisfies OptionSpec<"s3ForcePathStyle">,
  {
    key: "redisUrl",
    env: "GLIMPSE_REDIS_URL",
    default: undefined,
    doc: "Redis holding the rate-limit buckets, so replicas share each key's limit. Unset: per process.",
    parse: optionalRedisUrl,
  } satisfies OptionSpec<"redisUrl">,
  {
    key: "redisFail",
    env: "GLIMPSE_REDIS_FAIL",
    default: "open",
    doc: "While Redis does not answer: open admits calls without a limit, closed refuses them UNAVAILABLE.",
    parse: oneOf(["open", "closed"] as const),
  } satisfies OptionSpec<"redisFail">,
  {
    key: "redisPrefix",
    env: "GLIMPSE_REDIS_PREFIX",
    default: "glimpse:rate:",
    doc: "Prefix of the rate-limit keys in Redis; deployments sharing one Redis need different ones.",
    parse: redisPrefix,
  } satisfies OptionSpec<"redisPrefix">,
  {
    key: "indexClaimLeaseS",
    env: "GLIMPSE_INDEX_CLAIM_LEASE_S",
    default: "120",
    doc: "Seconds a batch of pending images one replica claimed for embedding stays its alone; a replica that dies holds its batch this long.",
    parse: integer(5, 3600),
  } satisfies OptionSpec<"indexClaimLeaseS">,
  {
    key: "model",
    env: "GLIMPSE_MODEL",
    flag: "--model",
    default: "clip-vit-b32",
    doc: `Embedding model: a registry id (${MODELS.map((m) => m.id).join(", ")}) or the path of a model directory.`,
    parse: modelReference,
  } satisfies OptionSpec<"model">,
  {
    key: "modelCacheDir",
    env: "GLIMPSE_MODEL_CACHE",
    flag: "--model-cache",
    default: undefined,
    doc: "Directory registry models are downloaded to (default <GLIMPSE_DATA_DIR>/models).",
    parse: optionalDirectory,
  } satisfies OptionSpec<"modelCacheDir">,
  {
    key: "modelAutoPull",
    env: "GLIMPSE_MODEL_AUTO_PULL",
    default: "true",
    doc: "Download a missing registry model at start, in the background (true or false).",
    parse: boolean,
  } satisfies OptionSpec<"modelAutoPull">,
  {
    key: "modelBaseUrl",
    env: "GLIMPSE_MODEL_BASE_URL",
    default: "https://huggingface.co",
    doc: "Host registry models are downloaded from.",
    parse: baseUrl,
  } satisfies OptionSpec<"modelBaseUrl">,
  {
    key: "embedThreads",
    env: "GLIMPSE_EMBED_THREADS",
    default: "2",
    doc: "Threads per embedding model run (onnxruntime intra-op threads).",
    parse: integer(1, 256),
  } satisfies OptionSpec<"embedThreads">,
  {
    key: "embedExecutionProvider",
    env: "GLIMPSE_EMBED_EXECUTION_PROVIDER",
    default: "cpu",
    doc: "cpu, or cuda (used when onnxruntime's CUDA provider is installed; otherwise cpu with a warning).",
    parse: oneOf(["cpu", "cuda"] as const),
  } satisfies OptionSpec<"embedExecutionProvider">,
  {
    key: "embedBatchSize",
    env: "GLIMPSE_EMBED_BATCH_SIZE",
    default: "16",
    doc: "Most images or texts the dynamic batcher puts in one model run.",
    parse: integer(1, 256),
  } satisfies OptionSpec<"embedBatchSize">,
  {
    key: "embedBatchWaitMs",
    env: "GLIMPSE_EMBED_BATCH_WAIT_MS",
    default: "5",
    doc: "Milliseconds the first queued input waits for others before its batch runs.",
    parse: integer(0, 10_000),
  } satisfies OptionSpec<"embedBatchWaitMs">,
  {
    key: "embedQueueMax",
    env: "GLIMPSE_EMBED_QUEUE_MAX",
    default: "256",
    doc: "Inputs allowed to wait for the model; more get RESOURCE_EXHAUSTED with a retry delay.",
    parse: integer(1, 1_000_000),
  } satisfies OptionSpec<"embedQueueMax">,
  {
    key: "searchEf",
    env: "GLIMPSE_SEARCH_EF",
    default: "64",
    doc: "Default HNSW search breadth (ef); raised automatically for selective filters and deep pages.",
    parse: integer(1, 4096),
  } satisfies OptionSpec<"searchEf">,
  {
    key: "searchExactMax",
    env: "GLIMPSE_SEARCH_EXACT_MAX",
    default: "20000",
    doc: "Upper bound on the images a filtered search scans exactly (recall 1) instead of walking HNSW; below it, lists of up to 2,000 images or 6% of the index are scanned.",
    parse: integer(0, 100_000_000),
  } satisfies OptionSpec<"searchExactMax">,
  {
    key: "scanQuantisation",
    env: "GLIMPSE_SCAN_QUANTISATION",
    default: "float32",
    doc: "What the exact scan reads: float32 (the float32 rows: recall 1) or int8 (int8 rows beside them, 516 more bytes per 512-d image, scanned in about a third of the time, the best 4k candidates re-ranked by their float32 scores: recall@10 1.0 for filters that keep a random share, but 0.41-0.74 when a filter keeps the images farthest from the query).",
    parse: oneOf(["int8", "float32"] as const),
  } satisfies OptionSpec<"scanQuantisation">,
  {
    key: "graphThread",
    env: "GLIMPSE_GRAPH_THREAD",
    default: "worker",
    doc: "Where the HNSW graph lives: worker (a thread of its own: walks and inserts leave the event loop, more searches per second under concurrency) or inline (the main thread: one search at a time answers a few tenths of a millisecond sooner).",
    parse: oneOf(["worker", "inline"] as const),
  } satisfies OptionSpec<"graphThread">,
  {
    key: "hnswBuild",
    env: "GLIMPSE_HNSW_BUILD",
    default: "auto",
    doc: "Which compiled hnswlib runs the HNSW graph: auto (the AVX2/FMA build that npm start and npm test make where the CPU runs it, the package's baseline build elsewhere) or baseline (always the package's build).",
    parse: oneOf(["auto", "baseline"] as const),
  } satisfies OptionSpec<"hnswBuild">,
  {
    key: "snapshotEveryChanges",
    env: "GLIMPSE_SNAPSHOT_EVERY_CHANGES",
    default: "10000",
    doc: "Vector index changes after which an index snapshot is written.",
    parse: integer(1, 100_000_000),
  } satisfies OptionSpec<"snapshotEveryChanges">,
  {
    key: "snapshotIntervalS",
    env: "GLIMPSE_SNAPSHOT_INTERVAL_S",
    default: "300",
    doc: "Seconds after which index changes not yet in a snapshot are written to one (also written at shutdown).",
    parse: integer(1, 86_400),
  } satisfies OptionSpec<"snapshotIntervalS">,
  {
    key: "indexLogRetentionS",
    env: "GLIMPSE_INDEX_LOG_RETENTION_S",
    default: "86400",
    doc: "Seconds index_log entries are kept for replicas to replay; 0 keeps them forever. A replica whose snapshot, or running index, is older than the pruned log rebuilds its index from the tables.",
    parse: zeroOr(integer(60, 31_536_000)),
  } satisfies OptionSpec<"indexLogRetentionS">,
  {
    key: "adminKey",
    env: "GLIMPSE_ADMIN_KEY",
    default: undefined,
    doc: "An API key (24 to 200 printable characters) stored at start for the default admin account, to bootstrap access.",
    parse: optionalSecret(24),
  } satisfies OptionSpec<"adminKey">,
  {
    key: "anonymousRead",
    env: "GLIMPSE_ANONYMOUS_READ",
    default: "false",
    doc: "Let calls without an API key read public images (GetImage, GetImageContent, ListImages, ListComments).",
    parse: boolean,
  } satisfies OptionSpec<"anonymousRead">,
  {
    key: "rateLimitPerMinute",
    env: "GLIMPSE_RATE_LIMIT_PER_MINUTE",
    default: "60",
    doc: "Requests per minute per API key unless the key has its own limit (also per address for anonymous reads).",
    parse: integer(1, 100_000),
  } satisfies OptionSpec<"rateLimitPerMinute">,
  {
    key: "keyCacheTtlS",
    env: "GLIMPSE_KEY_CACHE_TTL_S",
    default: "30",
    doc: "Seconds a verified API key is trusted from memory; changes through glimpse reach every replica at once, this bounds staleness if a notification is lost. 0 looks every call's key up in PostgreSQL.",
    parse: integer(0, 3600),
  } satisfies OptionSpec<"keyCacheTtlS">,
  {
    key: "maxKeysPerAccount",
    env: "GLIMPSE_MAX_KEYS_PER_ACCOUNT",
    default: "20",
    doc: "API keys (not revoked) a non-admin account may hold at once; its keys share the account's rate limit.",
    parse: integer(1, 100_000),
  } satisfies OptionSpec<"maxKeysPerAccount">,
  {
    key: "maxUploadBytesInFlight",
    env: "GLIMPSE_MAX_UPLOAD_BYTES_IN_FLIGHT",
    default: String(512 * 1024 * 1024),
    doc: "Memory for upload bodies in the whole process (an HTTP body counts 4 times its size, a gRPC upload twice: what decoding and forwarding it holds); past it uploads get 503 / RESOURCE_EXHAUSTED with a retry delay.",
    parse: integer(1024, 64 * 1024 * 1024 * 1024),
  } satisfies OptionSpec<"maxUploadBytesInFlight">,
  {
    key: "httpBodyTimeoutS",
    env: "GLIMPSE_HTTP_BODY_TIMEOUT_S",
    default: "60",
    doc: "Seconds an HTTP client has to send a request body (each message of a streamed body); slower gets 408.",
    parse: integer(1, 3600),
  } satisfies OptionSpec<"httpBodyTimeoutS">,
  {
    key: "httpHeadersTimeoutS",
    env: "GLIMPSE_HTTP_HEADERS_TIMEOUT_S",
    default: "20",
    doc: "Seconds an HTTP client has to send its request headers.",
    parse: integer(1, 3600),
  } satisfies OptionSpec<"httpHeadersTimeoutS">,
  {
    key: "httpKeepAliveTimeoutS",
    env: "GLIMPSE_HTTP_KEEPALIVE_TIMEOUT_S",
    default: "5",
    doc: "Seconds an idle HTTP keep-alive connection stays open.",
    parse: integer(1, 3600),
  } satisfies OptionSpec<"httpKeepAliveTimeoutS">,
  {
    key: "grpcIdleTimeoutS",
    env: "GLIMPSE_GRPC_IDLE_TIMEOUT_S",
    default: "120",
    doc: "Seconds a gRPC connection with no call in progress stays open (also one that never completes the HTTP/2 handshake).",
    parse: integer(1, 86_400),
  } satisfies OptionSpec<"grpcIdleTimeoutS">,
  {
    key: "grpcKeepaliveS",
    env: "GLIMPSE_GRPC_KEEPALIVE_S",
    default: "60",
    doc: "Seconds between the gRPC server's keepalive pings; a ping unanswered for 20 s closes the connection.",
    parse: integer(1, 86_400),
  } satisfies OptionSpec<"grpcKeepaliveS">,
  {
    key: "grpcMaxConnectionAgeS",
    env: "GLIMPSE_GRPC_MAX_CONNECTION_AGE_S",
    default: "1800",
    doc: "Seconds after which a gRPC connection is asked to reconnect (its calls get 5 more minutes); 0 never.",
    parse: integer(0, 604_800),
  } satisfies OptionSpec<"grpcMaxConnectionAgeS">,
  {
    key: "openaiBaseUrl",
    env: "GLIMPSE_OPENAI_BASE_URL",
    default: "https://api.openai.com",
    doc: "Root of the OpenAI API (images are requested at <root>/v1/images/generations).",
    parse: apiRoot,
  } satisfies OptionSpec<"openaiBaseUrl">,
  {
    key: "openaiApiKey",
    env: "GLIMPSE_OPENAI_API_KEY",
    default: undefined,
    doc: "OpenAI API key. Unset: the openai: models are listed as unavailable.",
    parse: optionalSecret(1),
  } satisfies OptionSpec<"openaiApiKey">,
  {
    key: "googleBaseUrl",
    env: "GLIMPSE_GOOGLE_BASE_URL",
    default: "https://generativelanguage.googleapis.com",
    doc: "Root of the Gemini API (images are requested at <root>/v1beta/models/<model>:generateContent).",
    parse: apiRoot,
  } satisfies OptionSpec<"googleBaseUrl">,
  {
    key: "googleApiKey",
    env: "GLIMPSE_GOOGLE_API_KEY",
    default: undefined,
    doc: "Gemini API key. Unset: the google: models are listed as unavailable.",
    parse: optionalSecret(1),
  } satisfies OptionSpec<"googleApiKey">,
  {
    key: "providerTimeoutMs",
    env: "GLIMPSE_PROVIDER_TIMEOUT_MS",
    default: "120000",
    doc: "Milliseconds one image provider request may take before it is retried or fails UNAVAILABLE.",
    parse: integer(1000, 600_000),
  } satisfies OptionSpec<"providerTimeoutMs">,
  {
    key: "providerRetries",
    env: "GLIMPSE_PROVIDER_RETRIES",
    default: "2",
    doc: "Retries of an image provider request after a 429, 5xx, timeout or connection failure (0-10).",
    parse: integer(0, 10),
  } satisfies OptionSpec<"providerRetries">,
  {
    key: "metrics",
    env: "GLIMPSE_METRICS",
    default: "on",
    doc: "Collect Prometheus metrics and serve them at GET /metrics, without an API key (on or off).",
    parse: boolean,
  } satisfies OptionSpec<"metrics">,
  {
    key: "metricsAddress",
    env: "GLIMPSE_METRICS_ADDRESS",
    default: undefined,
    doc: "host:port to serve /metrics on instead of the HTTP bridge's port (e.g. 10.0.0.5:9464, a private interface).",
    parse: optionalListenAddress,
  } satisfies OptionSpec<"metricsAddress">,
  {
    key: "slowCallMs",
    env: "GLIMPSE_SLOW_CALL_MS",
    default: "1000",
    doc: "Calls taking at least this many milliseconds get a `slow call` warning naming their slowest stage; 0 turns it off.",
    parse: integer(0, 3_600_000),
  } satisfies OptionSpec<"slowCallMs">,
  {
    key: "otlpEndpoint",
    env: "OTEL_EXPORTER_OTLP_ENDPOINT",
    default: undefined,
    doc: "OTLP/HTTP collector base URL; spans go to <url>/v1/traces. Unset (and no traces endpoint): no tracing, no SDK loaded.",
    parse: optionalHttpUrl,
  } satisfies OptionSpec<"otlpEndpoint">,
  {
    key: "otlpTracesEndpoint",
    env: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    default: undefined,
    doc: "OTLP/HTTP URL spans are posted to, as is (wins over OTEL_EXPORTER_OTLP_ENDPOINT).",
    parse: optionalHttpUrl,
  } satisfies OptionSpec<"otlpTracesEndpoint">,
  {
    key: "serviceName",
    env: "OTEL_SERVICE_NAME",
    default: "glimpse",
    doc: "service.name on exported spans.",
    parse: serviceName,
  } satisfies OptionSpec<"serviceName">,
] as const;

/** Splits `--flag value` and `--flag=value` arguments into a flag -> text map. */
function parseFlags(argv: readonly string[]): { flags: Map<string, string>; problems: string[] } {
  const flags = new Map<string, string>();
  const problems: string[] = [];
  const known = new Set(optionSpecs.map((spec) => ("flag" in spec ? spec.flag : undefined)).filter(Boolean));
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    if (!known.has(name)) {
      problems.push(`unknown argument ${JSON.stringify(arg)}`);
      continue;
    }
    if (eq >= 0) flags.set(name, arg.slice(eq + 1));
    else if (i + 1 < argv.length) flags.set(name, argv[++i]);
    else problems.push(`${name} needs a value`);
  }
  return { flags, problems };
}

/**
 * Builds the options from the environment and command-line flags (flags win).
 * Every bad value is collected, so one start reports all of them.
 * @throws ConfigError naming each bad variable or flag.
 */
export function loadOptions(
  env: NodeJS.ProcessEnv = process.env,
  argv: readonly string[] = [],
  overrides: Partial<Options> = {},
): Options {
  const { flags, problems } = parseFlags(argv);
  const options: Record<string, unknown> = {};
  for (const spec of optionSpecs) {
    const flag = "flag" in spec ? spec.flag : undefined;
    const fromFlag = flag ? flags.get(flag) : undefined;
    const source = fromFlag !== undefined ? `${flag} (${spec.env})` : spec.env;
    const raw = fromFlag ?? env[spec.env] ?? spec.default;
    try {
      options[spec.key] = spec.parse(raw, source);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const result = { ...(options as unknown as Options), ...overrides };
  if (result.publicUrl === "") result.publicUrl = `http://127.0.0.1:${result.httpPort}`;
  if (result.modelCacheDir === "") result.modelCacheDir = path.join(result.dataDir, "models");
  if (result.blobs.kind === "files" && result.blobs.dir === "") result.blobs = { kind: "files", dir: path.join(result.dataDir, "blobs") };
  return result;
}
