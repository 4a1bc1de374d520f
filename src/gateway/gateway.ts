import type { Status } from "nice-grpc-common";
import type { Logger } from "../logging/logger.js";
import type { InProcessServer } from "../server/in-process.js";
import { BridgeRpc } from "./rpc.js";
import { civitaiRoutes } from "./compat/civitai.js";
import { getimagesRoutes } from "./compat/getimages.js";
import { mikiRoutes } from "./compat/miki.js";
import { rekaRoutes } from "./compat/reka.js";
import { roboflowRoutes } from "./compat/roboflow.js";
import type { ByteBudget } from "../server/byte-budget.js";
import { Router, sendJson, startHttpServer, type Admit, type Route } from "./http.js";
import type { BlobStore } from "../blobs/blob-store.js";
import { contentRoutes } from "./content.js";
import { nativeRoutes } from "./native.js";
import { openapiRoutes } from "./openapi.js";
import { webRoutes } from "./web.js";

/** What the bridge is built from. */
export interface GatewayDeps {
  host: string;
  port: number;
  /** glimpse's services as the gRPC server serves them, called in-process (same middleware chain). */
  calls: InProcessServer;
  /** The serialized FileDescriptorSet of the contract (with source info, for OpenAPI). */
  descriptors: Uint8Array;
  /** Absolute base URL of this bridge, for links in responses. */
  publicUrl: () => string;
  /** Whether the service is ready (store migrated); /readyz answers 503 until then. */
  ready: () => boolean;
  /** Largest request body, in bytes (uploads are base64 in JSON, so about 4/3 of the upload limit). */
  maxBodyBytes: number;
  /** Largest image upload, in bytes (named in the error for a body over the limit). */
  maxUploadBytes: number;
  /** Where image bytes are streamed from (after GetImage has checked the caller may read them). */
  blobs: BlobStore;
  /** Admits a request by its headers before its body is read (authentication, access, rate limit). */
  admit: Admit;
  /** The ticket that calls of an admitted request carry. */
  ticket: string;
  /** Bytes of request bodies held at once in the whole process (shared with the gRPC uploads). */
  budget: ByteBudget;
  bodyTimeoutMs: number;
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
  logger: Logger;
  /** Routes of the process itself rather than of the contract (GET /metrics). */
  extraRoutes?: Route[];
  /** Told of each request for an RPC refused before any call was made (the call metrics). */
  refused?: (rpc: string, code: Status) => void;
}

/** What every group of routes gets. */
export interface RouteDeps {
  /** Calls to glimpse's services, in-process: they pass through all the gRPC server's middleware. */
  rpc: BridgeRpc;
  descriptors: Uint8Array;
  publicUrl: () => string;
  maxBodyBytes: number;
  maxUploadBytes: number;
  blobs: BlobStore;
  logger: Logger;
}

/** A running bridge. */
export interface Gateway {
  port: number;
  close(): Promise<void>;
}

/**
 * The HTTP/JSON bridge: grpc-gateway-style routes for every RPC (from the contract's
 * google.api.http annotations), the seed APIs' own shapes under /compat/, /openapi.json, and
 * health endpoints. Every call is made in-process through the gRPC server's own middleware
 * chain and implementations (no loopback connection), so authentication, rate limits,
 * deadlines, logging, metrics and error mapping are exactly gRPC's.
 */
export async function startGateway(deps: GatewayDeps): Promise<Gateway> {
  const routeDeps: RouteDeps = {
    rpc: new BridgeRpc(deps.calls),
    descriptors: deps.descriptors,
    publicUrl: deps.publicUrl,
    maxBodyBytes: deps.maxBodyBytes,
    maxUploadBytes: deps.maxUploadBytes,
    blobs: deps.blobs,
    logger: deps.logger,
  };
  const router = new Router();
  router.add(...healthRoutes(deps.ready));
  router.add(...(deps.extraRoutes ?? []));
  // Before the generic routes: these answer some of the same paths with raw bytes.
  router.add(...contentRoutes(routeDeps));
  router.add(...openapiRoutes(routeDeps));
  router.add(...webRoutes());
  router.add(...nativeRoutes(routeDeps));
  router.add(...mikiRoutes(routeDeps));
  router.add(...civitaiRoutes(routeDeps));
  router.add(...roboflowRoutes(routeDeps));
  router.add(...rekaRoutes(routeDeps));
  router.add(...getimagesRoutes(routeDeps));
  const server = await startHttpServer({
    host: deps.host,
    port: deps.port,
    router,
    logger: deps.logger,
    maxBodyBytes: deps.maxBodyBytes,
    admit: deps.admit,
    ticket: deps.ticket,
    budget: deps.budget,
    bodyTimeoutMs: deps.bodyTimeoutMs,
    headersTimeoutMs: deps.headersTimeoutMs,
    keepAliveTimeoutMs: deps.keepAliveTimeoutMs,
    refused: deps.refused,
  });
  return {
    port: server.port,
    close: () => server.close(),
  };
}

/** Liveness (the process answers) and readiness (the store is migrated and answering). */
function healthRoutes(ready: () => boolean): Route[] {
  return [
    { method: "GET", pattern: "/healthz", handle: async ({ res }) => sendJson(res, 200, { status: "ok" }) },
    {
      method: "GET",
      pattern: "/readyz",
      handle: async ({ res }) =>
        ready() ? sendJson(res, 200, { status: "ready" }) : sendJson(res, 503, { status: "starting" }),
    },
  ];
}
