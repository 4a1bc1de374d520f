import { once } from "node:events";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Route } from "../gateway/http.js";
import type { Logger } from "../logging/logger.js";
import type { Metrics } from "./metrics.js";

/** Writes the exposition text, or a 500 naming nothing internal when a collector failed. */
async function answer(metrics: Metrics, res: ServerResponse, logger: Logger): Promise<void> {
  try {
    const { contentType, body } = await metrics.exposition();
    res.writeHead(200, { "content-type": contentType, "content-length": Buffer.byteLength(body) });
    res.end(body);
  } catch (error) {
    logger.error("metrics collection failed", { error });
    res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
    res.end("metrics collection failed; see the server log\n");
  }
}

/** `GET /metrics` on the HTTP bridge's port: Prometheus text, no API key (see the README). */
export function metricsRoute(metrics: Metrics, logger: Logger): Route {
  return { method: "GET", pattern: "/metrics", handle: ({ res }) => answer(metrics, res, logger) };
}

/** A listening metrics endpoint of its own. */
export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` alone on its own address (GLIMPSE_METRICS_ADDRESS), for operators
 * who scrape on a private interface while the bridge faces clients; anything else is a 404.
 */
export async function startMetricsServer(
  address: { host: string; port: number },
  metrics: Metrics,
  logger: Logger,
): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
      res.end("not found; metrics are at /metrics\n");
    } else if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      res.end("method not allowed\n");
    } else void answer(metrics, res, logger);
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.listen(address.port, address.host);
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  logger.info("metrics listening", { host: address.host, port });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
