import type { ChannelOptions, ServerOptions } from "@grpc/grpc-js";
import { createServer, type Server } from "nice-grpc";
import { composeServerMiddleware, type ServerMiddleware, type Status } from "nice-grpc-common";
import { HealthDefinition, HealthServiceImpl, HealthState } from "nice-grpc-server-health";
import type { Logger } from "../logging/logger.js";
import type { AppCallContext } from "./context.js";
import { callChain } from "./middleware/call-chain.js";
import { Lifecycle } from "./middleware/lifecycle.js";
import { callLogging } from "./middleware/logging.js";
import type { CallerResolver } from "./middleware/caller.js";
import type { Gatekeeper } from "./middleware/auth.js";
import { uploadAdmission, uploadHolder } from "./middleware/uploads.js";
import { InProcessServer } from "./in-process.js";
import type { ByteBudget } from "./byte-budget.js";
import { textInputCheck } from "./middleware/text-input.js";
import type { ObservedContext } from "./middleware/observe.js";
import { loadContract } from "../gateway/descriptors.js";
import { UserFacingError } from "../errors.js";
import { addReflection } from "./reflection.js";

/** Adds one service to the server; built by the composition root for each service. */
export type ServiceRegistration = {
  fullName: string;
  register(server: Server<AppCallContext>): void;
};

/** Everything the gRPC transport needs from the composition root. */
export interface GrpcServerConfig {
  host: string;
  port: number;
  logger: Logger;
  services: ServiceRegistration[];
  /** Serialised FileDescriptorSet of the contract, for server reflection. */
  descriptorSet: Uint8Array;
  /** Largest request message accepted, in bytes. */
  maxReceiveMessageBytes?: number;
  /** Decides which account each call acts as (API-key authentication, admin checks, rate limits). */
  resolveCaller: CallerResolver;
  /** Lets upload calls in or out from their headers, before their message is read. */
  gatekeeper?: Gatekeeper;
  /** Bytes of uploads held at once in the whole process (shared with the HTTP bridge). */
  uploadBudget?: ByteBudget;
  /** A connection with no call in progress (or that never completes its handshake) is closed after this long. */
  idleTimeoutMs?: number;
  /** Interval of keepalive pings; a ping unanswered within 20 s closes the connection. */
  keepaliveMs?: number;
  /** A connection older than this is asked to go away (its calls get 5 minutes more); 0: never. */
  maxConnectionAgeMs?: number;
  /** Metrics, traces and slow-call lines (observe.ts), outermost of all; absent: calls are not observed. */
  observe?: ServerMiddleware<ObservedContext>;
  /**
   * Told of each in-process call (the HTTP bridge's) refused before the middleware chain (a
   * deadline already past, an upload refused from its headers), which the chain's observation
   * never sees: the metrics count it.
   */
  inProcessRefused?: (path: string, code: Status) => void;
}

/** A listening gRPC server with its health state and shutdown. */
export interface GrpcServer {
  /** The bound port (useful when asked for port 0). */
  port: number;
  health: HealthState;
  lifecycle: Lifecycle;
  /**
   * The same services behind the same middleware chain, called in-process (the HTTP bridge):
   * no loopback connection, and everything a gRPC call goes through.
   */
  inProcess: InProcessServer;
  /** Marks the server ready: calls are served and health reports SERVING. */
  markServing(): void;
  /**
   * Graceful stop: health NOT_SERVING, no new calls, in-flight calls get `graceMs` to finish
   * and are then aborted through their AbortSignal.
   */
  shutdown(graceMs: number): Promise<void>;
}

/**
 * Builds the nice-grpc server with the middleware chain (outermost first): observation
 * (metrics, traces, slow calls) when configured, logging with a
 * request id, lifecycle (readiness, draining, abort on shutdown), deadline, error mapping, and
 * the caller (authentication: which account the call acts as, admin checks, rate limits), and
 * the text check (no request string holds U+0000, which PostgreSQL cannot store).
 * It listens at once with health NOT_SERVING, so probes can watch start-up.
 */
export async function startGrpcServer(config: GrpcServerConfig): Promise<GrpcServer> {
  const lifecycle = new Lifecycle();
  const health = HealthState();
  const serviceNames = config.services.map((s) => s.fullName);
  const setHealth = (status: "healthy" | "unhealthy") => {
    health.setStatus(status);
    for (const name of serviceNames) health.setStatus(status, name);
  };
  setHealth("unhealthy");

  // One interceptor (nearest the transport) sees every call's end, hands its deadline to the
  // chain and refuses uploads from their headers: each intercepting layer costs every call.
  const admission = config.gatekeeper ? uploadAdmission(config.gatekeeper) : undefined;
  const logging = callLogging(config.logger, admission);
  const options: ServerOptions & ChannelOptions = {
    interceptors: [logging.interceptor],
    "grpc.max_receive_message_length": config.maxReceiveMessageBytes ?? 64 * 1024 * 1024,
    // Connections cannot be held open for free: an idle one (a client that never sends the
    // HTTP/2 preface included) is closed, a silent peer is found by keepalive pings, and
    // long-lived ones are recycled.
    "grpc.max_connection_idle_ms": config.idleTimeoutMs ?? 120_000,
    "grpc.keepalive_time_ms": config.keepaliveMs ?? 60_000,
    "grpc.keepalive_timeout_ms": 20_000,
    ...(config.maxConnectionAgeMs
      ? { "grpc.max_connection_age_ms": config.maxConnectionAgeMs, "grpc.max_connection_age_grace_ms": 300_000 }
      : {}),
  };
  // One chain, outermost first, for gRPC calls and in-process ones alike. Its steps share one
  // middleware layer (see call-chain.ts): each layer costs every call.
  const chain: ServerMiddleware<any, any>[] = [
    ...(config.observe ? [config.observe] : []),
    callChain({
      logging,
      lifecycle,
      resolveCaller: config.resolveCaller,
      holdUpload: config.uploadBudget && config.gatekeeper ? uploadHolder(config.uploadBudget, config.gatekeeper) : undefined,
      checkText: textInputCheck(loadContract(config.descriptorSet)),
    }),
  ];
  const middleware = chain.reduce((outer, inner) => composeServerMiddleware(outer, inner));
  const grpcServer = createServer(options).use(middleware) as unknown as Server<AppCallContext>;
  const maxReceiveMessageBytes = config.maxReceiveMessageBytes ?? 64 * 1024 * 1024;
  const inProcess = new InProcessServer({
    middleware,
    follow: logging.follow,
    admission,
    maxReceiveMessageBytes,
    refused: config.inProcessRefused,
  });
  // Every service is added to both: what gRPC serves, the bridge calls in-process.
  const server: Server<AppCallContext> = {
    ...grpcServer,
    add(definition, implementation) {
      grpcServer.add(definition, implementation);
      inProcess.add(definition, implementation as object);
    },
  };

  server.add(HealthDefinition, HealthServiceImpl(health));
  addReflection(server, config.descriptorSet, [...serviceNames, "grpc.health.v1.Health"]);
  for (const service of config.services) service.register(server);

  const port = await server.listen(`${config.host}:${config.port}`).catch((error: Error) => {
    // Another server on the port (a second glimpse, most often) is the operator's to sort out.
    if (/EADDRINUSE/.test(error.message)) {
      throw new UserFacingError(
        `gRPC port ${config.host}:${config.port} is already in use (another glimpse?); ` +
          `stop that process or set GLIMPSE_GRPC_PORT to a free port`,
      );
    }
    throw error;
  });
  config.logger.info("gRPC server listening", { host: config.host, port });

  return {
    port,
    health,
    lifecycle,
    inProcess,
    markServing() {
      lifecycle.phase = "serving";
      setHealth("healthy");
    },
    async shutdown(graceMs) {
      setHealth("unhealthy");
      const closing = server.shutdown();
      const { aborted } = await lifecycle.drain(graceMs);
      if (aborted > 0) config.logger.warn("aborted calls still running after the grace period", { aborted });
      // Calls that honoured their signal are done; anything else is cut at the transport.
      const forced = setTimeout(() => server.forceShutdown(), 2000);
      await closing;
      clearTimeout(forced);
      config.logger.info("gRPC server stopped");
    },
  };
}
