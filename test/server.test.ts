import * as grpc from "@grpc/grpc-js";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { ClientError, createChannel, createClient, Metadata, Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DomainError, invalidArgument } from "../src/errors.js";
import { HealthCheckResponse_ServingStatus, HealthDefinition } from "../src/gen/grpc/health/v1/health.js";
import { GenerationServiceDefinition } from "../src/gen/glimpse/generation/v1/generation_service.js";
import { Image } from "../src/gen/glimpse/image/v1/image.js";
import {
  GetImageRequest,
  GetImageResponse,
  ImageServiceDefinition,
} from "../src/gen/glimpse/image/v1/image_service.js";
import { decodeStatusDetails } from "../src/server/status-details.js";
import { loadMigrations } from "../src/store/migrate.js";
import { startTestApp, testSecret, withKey, type TestApp } from "./helpers/app.js";
import { createTestDatabase } from "./helpers/database.js";

const run = promisify(execFile);

/**
 * A unary call through a plain grpc-js client, which sends `grpc-timeout` for a deadline as
 * other languages' clients do (nice-grpc's client enforces deadlines only on its side).
 */
function getImageWithDeadline(
  address: string,
  key: string,
  id: string,
  deadline: Date,
): Promise<{ code: number; id?: string }> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${key}`);
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      "/glimpse.image.v1.ImageService/GetImage",
      (req: GetImageRequest) => Buffer.from(GetImageRequest.encode(req).finish()),
      (buf: Buffer) => GetImageResponse.decode(buf),
      GetImageRequest.fromPartial({ id }),
      metadata,
      { deadline },
      (err, res) => {
        client.close();
        resolve(err ? { code: err.code } : { code: 0, id: res?.image?.id });
      },
    );
  });
}

/** Captures response trailers so a test can read grpc-status-details-bin. */
function trailerCapture() {
  let trailer: Metadata | undefined;
  return { onTrailer: (t: Metadata) => (trailer = t), get: () => trailer };
}

describe("gRPC server", () => {
  let t: TestApp;
  const seen: { deadline?: Date } = {};
  let releaseSlow: (() => void) | undefined;

  beforeAll(async () => {
    t = await startTestApp(
      {},
      {
        handlers: {
          image: {
            // Stand-ins that exercise the middleware: each behaves as a real handler could.
            async getImage(request, context) {
              seen.deadline = context.deadline;
              if (request.id === "0") throw invalidArgument({ field: "id", description: "must be > 0" });
              if (request.id === "13") throw new Error("secret database password in this message");
              if (request.id === "429") throw new DomainError("RESOURCE_EXHAUSTED", "slow down", { retryAfterMs: 1500 });
              if (request.id === "7") {
                await new Promise<void>((resolve) => (releaseSlow = resolve));
              }
              return { image: Image.fromPartial({ id: request.id }) };
            },
          },
          // No handler: stands for an RPC that is not built.
          generation: { listModels: undefined },
        },
      },
    );
  });
  afterAll(async () => {
    await t?.close();
  });

  it("reports SERVING once the store is migrated", async () => {
    const health = createClient(HealthDefinition, t.channel);
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const byService = await health.check({ service: "glimpse.image.v1.ImageService" });
    expect(byService.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const [{ n }] = await t.app.sql`select count(*)::int as n from schema_migrations`;
    expect(n).toBeGreaterThan(0);
  });

  it("lists all three services through reflection with buf curl", async () => {
    const { stdout } = await run("npx", [
      "buf",
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "--list-methods",
      `http://${t.address}`,
    ]);
    const methods = stdout.trim().split("\n");
    expect(methods).toContain("glimpse.image.v1.ImageService/UploadImage");
    expect(methods).toContain("glimpse.image.v1.ImageService/SearchImages");
    expect(methods).toContain("glimpse.generation.v1.GenerationService/GenerateImage");
    expect(methods).toContain("glimpse.account.v1.AccountService/CreateApiKey");
    expect(methods).toContain("grpc.health.v1.Health/Check");
    const health = await run("npx", [
      "buf",
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      `http://${t.address}/grpc.health.v1.Health/Check`,
    ]);
    expect(JSON.parse(health.stdout)).toEqual({ status: "SERVING" });
  });

  it("answers UNIMPLEMENTED, naming the RPC, for RPCs without a handler", async () => {
    const client = t.client(GenerationServiceDefinition);
    const err = await client.listModels({}).catch((e) => e);
    expect(err).toBeInstanceOf(ClientError);
    expect(err.code).toBe(Status.UNIMPLEMENTED);
    expect(err.details).toContain("glimpse.generation.v1.GenerationService/ListModels");
  });

  it("maps a domain INVALID_ARGUMENT to google.rpc.BadRequest field violations", async () => {
    const client = t.client(ImageServiceDefinition);
    const capture = trailerCapture();
    const err = await client.getImage({ id: "0" }, { onTrailer: capture.onTrailer }).catch((e) => e);
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(err.details).toBe("id: must be > 0");
    const details = decodeStatusDetails(capture.get()!.get("grpc-status-details-bin") as unknown as Uint8Array);
    expect(details.violations).toEqual([{ field: "id", description: "must be > 0" }]);
  });

  it("carries RetryInfo on RESOURCE_EXHAUSTED", async () => {
    const client = t.client(ImageServiceDefinition);
    const capture = trailerCapture();
    const err = await client.getImage({ id: "429" }, { onTrailer: capture.onTrailer }).catch((e) => e);
    expect(err.code).toBe(Status.RESOURCE_EXHAUSTED);
    const details = decodeStatusDetails(capture.get()!.get("grpc-status-details-bin") as unknown as Uint8Array);
    expect(details.retryAfterMs).toBe(1500);
  });

  it("turns unknown errors into INTERNAL without leaking the cause, with the request id", async () => {
    const client = t.client(ImageServiceDefinition);
    let header: Metadata | undefined;
    const err = await client
      .getImage({ id: "13" }, { metadata: Metadata({ "x-request-id": "req-abc" }), onHeader: (h) => (header = h) })
      .catch((e) => e);
    expect(err.code).toBe(Status.INTERNAL);
    expect(err.details).toBe("internal error (request id req-abc)");
    expect(err.details).not.toContain("password");
    expect(header?.get("x-request-id")).toBe("req-abc");
  });

  it("hands the caller's deadline to the handler", async () => {
    const client = t.client(ImageServiceDefinition);
    const deadline = new Date(Date.now() + 30_000);
    expect(await getImageWithDeadline(t.address, t.adminKey, "1", deadline)).toEqual({ code: 0, id: "1" });
    expect(seen.deadline).toBeInstanceOf(Date);
    expect(Math.abs(seen.deadline!.getTime() - deadline.getTime())).toBeLessThan(1000);
    await client.getImage({ id: "1" });
    expect(seen.deadline).toBeUndefined();
  });

  it("answers DEADLINE_EXCEEDED when the handler outlives the deadline", async () => {
    const result = await getImageWithDeadline(t.address, t.adminKey, "7", new Date(Date.now() + 200));
    releaseSlow?.();
    expect(result.code).toBe(Status.DEADLINE_EXCEEDED);
  });
});

describe("start-up and shutdown", () => {
  it("brings up two servers started at once on one fresh database", async () => {
    const db = await createTestDatabase();
    try {
      const [a, b] = await Promise.all([startTestApp({}, {}, db), startTestApp({}, {}, db)]);
      try {
        for (const t of [a, b]) {
          const health = createClient(HealthDefinition, t.channel);
          expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
        }
        const rows = await a.app.sql`select version from schema_migrations order by version`;
        expect(rows.map((r) => r.version)).toEqual((await loadMigrations()).map((m) => m.version));
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    } finally {
      await db.drop();
    }
  });

  it("runs on the embedded PostgreSQL when no DATABASE_URL is given", async () => {
    const t = await startTestApp({ databaseUrl: undefined });
    try {
      const health = createClient(HealthDefinition, t.channel);
      expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      const [{ port }] = await t.app.sql`select inet_server_port() as port`;
      expect(Number(port)).not.toBe(5432);
    } finally {
      await t.close();
    }
  });

  it("aborts calls still running when the grace period ends, answering UNAVAILABLE", async () => {
    let started: () => void;
    const running = new Promise<void>((r) => (started = r));
    const t = await startTestApp(
      { shutdownGraceMs: 200 },
      {
        handlers: {
          image: {
            async getImage(_request, context) {
              started();
              await sleep(60_000, undefined, { signal: context.signal });
              return {};
            },
          },
        },
      },
    );
    const client = t.client(ImageServiceDefinition);
    const call = client.getImage({ id: "1" }).catch((e) => e);
    await running;
    const stopped = t.close();
    const err = await call;
    await stopped;
    expect(err.code).toBe(Status.UNAVAILABLE);
    expect(err.details).toContain("shut down");
  });

  it("on SIGTERM lets an in-flight call finish, refuses new ones, and exits 0", async () => {
    const db = await createTestDatabase();
    const key = testSecret();
    const child = spawn(process.execPath, ["--import", "tsx", "test/fixtures/slow-server.ts"], {
      env: { ...process.env, DATABASE_URL: db.url, GLIMPSE_GRPC_PORT: "0", GLIMPSE_HTTP_PORT: "0", SLOW_MS: "800", GLIMPSE_ADMIN_KEY: key },
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      let out = "";
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (chunk) => (out += chunk));
      while (!out.includes('"msg":"glimpse serving"')) await once(child.stdout, "data");
      const port = JSON.parse(out.split("\n").find((l) => l.includes("glimpse serving"))!).grpcPort;
      const channel = createChannel(`127.0.0.1:${port}`);
      const client = createClient(ImageServiceDefinition, channel);
      const inFlight = client.getImage({ id: "42" }, withKey(key));
      while (!out.includes("SLOW_CALL_STARTED")) await once(child.stdout, "data");
      child.kill("SIGTERM");
      const exited = once(child, "exit");
      expect((await inFlight).image?.id).toBe("42");
      const late = await createClient(ImageServiceDefinition, createChannel(`127.0.0.1:${port}`))
        .getImage({ id: "43" }, withKey(key))
        .catch((e) => e);
      expect(late).toBeInstanceOf(ClientError);
      expect(late.code).toBe(Status.UNAVAILABLE);
      const [code] = await exited;
      expect(code).toBe(0);
      expect(out).toContain('"msg":"signal received"');
      channel.close();
    } finally {
      child.kill("SIGKILL");
      await db.drop();
    }
  });
});
