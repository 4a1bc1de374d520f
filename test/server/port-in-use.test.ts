import { createServer, type Server } from "node:net";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserFacingError } from "../../src/errors.js";
import { startTestApp } from "../helpers/app.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";

describe("a port another process holds", () => {
  let db: TestDatabase;
  let holder: Server;
  let port: number;
  beforeAll(async () => {
    db = await createTestDatabase();
    holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    port = (holder.address() as AddressInfo).port;
  });
  afterAll(async () => {
    holder?.close();
    await db?.drop();
  });

  it.each([
    ["gRPC", "GLIMPSE_GRPC_PORT"],
    ["HTTP", "GLIMPSE_HTTP_PORT"],
  ] as const)("refuses to start on a %s port in use with one line naming the option, no stack", async (what, option) => {
    const ports = what === "gRPC" ? { grpcPort: port } : { httpPort: port };
    const error = await startTestApp(ports, {}, db).then(
      () => expect.fail("started on a port in use"),
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(UserFacingError);
    const message = (error as Error).message;
    expect(message).toContain(`127.0.0.1:${port} is already in use`);
    expect(message).toContain(option);
    // What the CLI prints of it: one line.
    expect((error as Error).stack).toBe(message);
    expect(message).not.toContain("\n");
  });
});
