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
 *
 * `--call get-image --database URL` answers glimpse.image.v1.ImageService/GetImage the same way on
 * grpc-js's handler API, with nothing between the socket and glimpse's own read of the row (the
 * images repository, reads of one tick batched into one query) and its mapping to the contract:
 * no authentication (every caller is the admin), no logging, metrics, traces or deadlines. It is
 * the most GetImage can answer on this stack with one database read per call. Point it at the
 * load harness's template database (the name `npm run bench:load -- seed` prints):
 *
 *   node --import tsx bench/load/transport-floor.ts --call get-image --database postgres://postgres@127.0.0.1:5432/<template>
 *   npm run bench:load -- --scenario get-image --address 127.0.0.1:50999 --key any --concurrency 16 --duration 15s
 */
import * as grpc from "@grpc/grpc-js";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import { createServer } from "nice-grpc";
import { HealthDefinition, HealthServiceImpl } from "nice-grpc-server-health";
import { HealthCheckResponse, HealthCheckResponse_ServingStatus } from "nice-grpc-server-health/lib/proto/grpc/health/v1/health.js";
import { DEFAULT_ACCOUNT_ID } from "../../src/accounts/account-service.js";
import { GetImageRequest, GetImageResponse } from "../../src/gen/glimpse/image/v1/image_service.js";
import { createLogger } from "../../src/logging/logger.js";
import { imageOut } from "../../src/server/handlers/image-mapping.js";
import { connect } from "../../src/store/db.js";
import { ImagesRepository } from "../../src/store/images-repository.js";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "50999" },
    framework: { type: "string", default: "grpc-js" },
    call: { type: "string", default: "health" },
    database: { type: "string" },
  },
});
const address = `127.0.0.1:${values.port}`;
const version = (name: string) => (createRequire(import.meta.url)(`${name}/package.json`) as { version: string }).version;

/** A grpc-js server answering one unary method on its own handler API, request and answer as bytes. */
async function serveRaw(method: string, handle: grpc.handleUnaryCall<Buffer, Buffer>): Promise<grpc.Server> {
  const identity = (bytes: Buffer) => bytes;
  const server = new grpc.Server();
  server.addService(
    {
      call: {
        path: method,
        requestStream: false,
        responseStream: false,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      },
    },
    { call: handle },
  );
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  return server;
}

if (values.call !== "health" && values.call !== "get-image") throw new Error(`--call is health or get-image, not ${values.call}`);
let stop: () => Promise<void>;
if (values.call === "get-image") {
  if (values.framework !== "grpc-js") throw new Error("--call get-image is served on grpc-js only");
  if (!values.database) throw new Error("--call get-image needs --database (the load harness's template database)");
  const sql = connect({ url: values.database, max: 10, logger: createLogger("warn", (line) => process.stderr.write(line)) });
  const images = new ImagesRepository(sql);
  const admin = { accountId: DEFAULT_ACCOUNT_ID, isAdmin: true };
  const server = await serveRaw("/glimpse.image.v1.ImageService/GetImage", (call, callback) => {
    const id = BigInt(GetImageRequest.decode(call.request).id);
    images.get(id, admin).then(
      (image) =>
        image
          ? callback(null, Buffer.from(GetImageResponse.encode({ image: imageOut(image, "http://127.0.0.1") }).finish()))
          : callback({ code: grpc.status.NOT_FOUND, details: `image ${id} not found` }),
      (err: Error) => callback({ code: grpc.status.INTERNAL, details: err.message }),
    );
  });
  stop = () => new Promise((resolve) => server.tryShutdown(() => void sql.end().then(() => resolve())));
} else if (values.framework === "grpc-js") {
  const serving = Buffer.from(HealthCheckResponse.encode({ status: HealthCheckResponse_ServingStatus.SERVING }).finish());
  const server = await serveRaw("/grpc.health.v1.Health/Check", (_call, callback) => callback(null, serving));
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
  `transport floor: ${values.call === "get-image" ? "GetImage" : "Health/Check"} on ${address} (${values.framework}; grpc-js ${version("@grpc/grpc-js")}, nice-grpc ${version("nice-grpc")}); Ctrl-C stops it`,
);
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => void stop().then(() => process.exit(0)));
