/**
 * The transport's own ceiling: a server that answers grpc.health.v1.Health/Check and nothing
 * else, with no middleware or database between the socket and the answer. Driven by the load
 * harness's grpc-noop scenario (`--address`), it says how many calls a second the server
 * framework alone answers on this machine: the bound no glimpse call can pass, and, set beside
 * glimpse's own Health/Check, what its call chain costs.
 *
 *   node --import tsx bench/load/transport-floor.ts [--port 50999] [--framework grpc-js|nice-grpc]
 *   npm run bench:load -- --scenario grpc-noop --address 127.0.0.1:50999 --concurrency 16 --duration 15s
 *
 * grpc-js: its own handler API, the request and answer as bytes. nice-grpc: the framework glimpse
 * serves with (over the same grpc-js), with nice-grpc-server-health's Check and no middleware.
 */
import * as grpc from "@grpc/grpc-js";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import { createServer } from "nice-grpc";
import { HealthDefinition, HealthServiceImpl } from "nice-grpc-server-health";
import { HealthCheckResponse, HealthCheckResponse_ServingStatus } from "nice-grpc-server-health/lib/proto/grpc/health/v1/health.js";

const { values } = parseArgs({
  options: { port: { type: "string", default: "50999" }, framework: { type: "string", default: "grpc-js" } },
});
const address = `127.0.0.1:${values.port}`;
const version = (name: string) => (createRequire(import.meta.url)(`${name}/package.json`) as { version: string }).version;

let stop: () => Promise<void>;
if (values.framework === "grpc-js") {
  const serving = Buffer.from(HealthCheckResponse.encode({ status: HealthCheckResponse_ServingStatus.SERVING }).finish());
  const identity = (bytes: Buffer) => bytes;
  const server = new grpc.Server();
  server.addService(
    {
      check: {
        path: "/grpc.health.v1.Health/Check",
        requestStream: false,
        responseStream: false,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      },
    },
    { check: (_call: unknown, callback: grpc.sendUnaryData<Buffer>) => callback(null, serving) },
  );
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  stop = () => new Promise((resolve) => server.tryShutdown(() => resolve()));
} else if (values.framework === "nice-grpc") {
  const server = createServer();
  server.add(HealthDefinition, HealthServiceImpl());
  await server.listen(address);
  stop = () => server.shutdown();
} else {
  throw new Error(`--framework is grpc-js or nice-grpc, not ${values.framework}`);
}
console.log(
  `transport floor: Health/Check on ${address} (${values.framework}; grpc-js ${version("@grpc/grpc-js")}, nice-grpc ${version("nice-grpc")}); Ctrl-C stops it`,
);
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => void stop().then(() => process.exit(0)));
