import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { once } from "node:events";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ClientError, createChannel, createClient, Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { GenerationServiceDefinition } from "../../src/gen/glimpse/generation/v1/generation_service.js";
import { GenerationsRepository } from "../../src/store/generations-repository.js";
import { startTestApp, testSecret, withKey, type TestAccount, type TestApp } from "../helpers/app.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";
import { solidImage } from "../helpers/images.js";
import { openaiImage, startFakeProvider, type FakeProvider } from "./fake-provider.js";

const MODEL = "openai:gpt-image-1.5";
const COST = 4;

/** An account's credits and generations, as the store holds them. */
async function books(t: TestApp, accountId: string) {
  const [a] = await t.app.sql`select credit_balance, reserved_credits from accounts where id = ${accountId}`;
  const [l] = await t.app.sql`
    select coalesce(-sum(amount) filter (where kind = 2), 0)::bigint as charges from ledger where account_id = ${accountId}`;
  const [g] = await t.app.sql`
    select count(*) filter (where status = 1)::int as done, count(*) filter (where status = 0)::int as running
    from generations where account_id = ${accountId}`;
  return {
    balance: Number(a.credit_balance),
    reserved: Number(a.reserved_credits),
    charges: Number(l.charges),
    generations: g.done as number,
    running: g.running as number,
  };
}

/**
 * `glimpse serve` as its own process on `db`, calling `provider` for OpenAI models, until
 * killed; resolves once it serves, with its gRPC port.
 */
async function spawnServer(db: TestDatabase, provider: FakeProvider, dataDir: string) {
  // The parent's own GLIMPSE_* settings must not leak into the server under test.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("GLIMPSE_")));
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "serve"], {
    env: {
      ...inherited,
      DATABASE_URL: db.url,
      GLIMPSE_DATA_DIR: dataDir,
      GLIMPSE_GRPC_PORT: "0",
      GLIMPSE_HTTP_PORT: "0",
      GLIMPSE_ADMIN_KEY: testSecret(),
      GLIMPSE_MODEL_AUTO_PULL: "false",
      GLIMPSE_OPENAI_BASE_URL: provider.url,
      GLIMPSE_OPENAI_API_KEY: "sk-test",
      GLIMPSE_PROVIDER_RETRIES: "0",
      GLIMPSE_LOG_LEVEL: "info",
    },
    stdio: ["ignore", "pipe", "inherit"],
  }) as unknown as ChildProcessWithoutNullStreams;
  let out = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => (out += chunk));
  while (!out.includes('"msg":"glimpse serving"')) {
    const [chunk] = await Promise.race([once(child.stdout, "data"), once(child, "exit").then(() => [null])]);
    if (chunk === null) throw new Error(`glimpse serve exited before serving:\n${out}`);
  }
  const port = JSON.parse(out.split("\n").find((l) => l.includes('"msg":"glimpse serving"'))!).grpcPort as number;
  return { child, port };
}

describe("a generation whose server was killed mid-generation", () => {
  let db: TestDatabase;
  let provider: FakeProvider;
  let replica: TestApp;
  let dataDir: string;
  let png: Buffer;
  const children: ChildProcessWithoutNullStreams[] = [];

  beforeAll(async () => {
    png = await solidImage(40, 24, { r: 30, g: 140, b: 200 });
    provider = await startFakeProvider(() => openaiImage(png));
    db = await createTestDatabase();
    dataDir = await mkdtemp(path.join(tmpdir(), "glimpse-crash-"));
    // A replica already serving on the same database when the other one dies.
    replica = await startTestApp({ openaiBaseUrl: provider.url, openaiApiKey: "sk-test", providerRetries: 0 }, {}, db);
  });
  afterAll(async () => {
    for (const child of children) child.kill("SIGKILL");
    await replica?.close();
    await provider?.close();
    await db?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  /**
   * Starts a generation with `requestId` on a separate `glimpse serve`, and kills that process
   * with SIGKILL while the provider holds the call: its credits stay reserved, and no code of
   * the dead process runs again to release them.
   */
  async function killedMidGeneration(user: TestAccount, requestId: string): Promise<void> {
    const { child, port } = await spawnServer(db, provider, path.join(dataDir, randomUUID()));
    children.push(child);
    const arrived = new Promise<void>((resolve) => {
      provider.otherwise = () => {
        provider.otherwise = () => openaiImage(png);
        resolve();
        return { hang: true };
      };
    });
    const channel = createChannel(`127.0.0.1:${port}`);
    const call = createClient(GenerationServiceDefinition, channel)
      .generateImage({ prompt: "a harbour at night", modelId: MODEL, requestId } as never, withKey(user.key))
      .catch((e) => e);
    await arrived;
    expect(await books(replica, user.id)).toMatchObject({ reserved: COST, running: 1 });
    const exited = once(child, "exit");
    child.kill("SIGKILL");
    await exited;
    expect((await call).code).toBe(Status.UNAVAILABLE);
    channel.close();
  }

  it("answers a retry on another replica at once, charging once and leaving nothing reserved", async () => {
    const user = await replica.newAccount({ credits: 10 });
    const requestId = randomUUID();
    await killedMidGeneration(user, requestId);

    const gen = replica.client(GenerationServiceDefinition, user.key);
    const retried = await gen.generateImage({ prompt: "a harbour at night", modelId: MODEL, requestId } as never);
    expect(retried.credits).toEqual({ charged: String(COST), remaining: String(10 - COST) });
    expect(Buffer.compare(retried.generation!.content!, png)).toBe(0);
    expect(await books(replica, user.id)).toMatchObject({
      balance: 10 - COST,
      reserved: 0,
      charges: COST,
      generations: 1,
      running: 0,
    });
    // And a later retry is a replay of that result, not another charge.
    const again = await gen.generateImage({ prompt: "a harbour at night", modelId: MODEL, requestId } as never);
    expect(again.generation!.id).toBe(retried.generation!.id);
    expect(await books(replica, user.id)).toMatchObject({ balance: 10 - COST, charges: COST, generations: 1 });
  });

  it("returns the dead server's reservation without any retry", async () => {
    const user = await replica.newAccount({ credits: 10 });
    await killedMidGeneration(user, randomUUID());
    // The surviving replica's sweep finds the reservation's replica dead (no age involved).
    await vi.waitFor(async () => expect(await books(replica, user.id)).toMatchObject({ balance: 10, reserved: 0, running: 0 }), {
      timeout: 30_000,
      interval: 100,
    });
    expect((await books(replica, user.id)).charges).toBe(0);
  });

  it("lets 30 retries racing on two replicas after the crash share one new generation, charged once", async () => {
    const user = await replica.newAccount({ credits: 10 });
    const requestId = randomUUID();
    await killedMidGeneration(user, requestId);
    const other = await startTestApp({ openaiBaseUrl: provider.url, openaiApiKey: "sk-test", providerRetries: 0 }, {}, db);
    try {
      const clients = [replica, other].map((t) => t.client(GenerationServiceDefinition, user.key));
      const racing = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          clients[i % 2].generateImage({ prompt: "a harbour at night", modelId: MODEL, requestId } as never),
        ),
      );
      expect(new Set(racing.map((r) => r.generation!.id)).size).toBe(1);
      for (const r of racing) expect(r.credits!.charged).toBe(String(COST));
      expect(await books(replica, user.id)).toMatchObject({
        balance: 10 - COST,
        reserved: 0,
        charges: COST,
        generations: 1,
        running: 0,
      });
    } finally {
      await other.close();
    }
  });

  it("leaves the reservation of a live replica to it, and a retry waits for that replica", async () => {
    const user = await replica.newAccount({ credits: 10 });
    const requestId = randomUUID();
    const other = await startTestApp({ openaiBaseUrl: provider.url, openaiApiKey: "sk-test", providerRetries: 0 }, {}, db);
    try {
      const arrived = new Promise<void>((resolve) => {
        provider.otherwise = () => {
          provider.otherwise = () => openaiImage(png);
          resolve();
          return { hang: true };
        };
      });
      const ask = (t: TestApp) =>
        t.client(GenerationServiceDefinition, user.key).generateImage({ prompt: "a harbour at night", modelId: MODEL, requestId } as never);
      const first = ask(other).catch((e) => e);
      await arrived;
      const retry = ask(replica);
      const generations = new GenerationsRepository(replica.app.sql);
      expect(await generations.findByRequest(user.id, requestId)).toMatchObject({ state: "running", orphaned: false });
      expect(await generations.releaseOrphaned()).toBe(0);
      expect(await books(replica, user.id)).toMatchObject({ reserved: COST, running: 1 });

      // Stopping that replica aborts its call, which releases the reservation; the waiting
      // retry then runs afresh.
      await other.close();
      expect(await first).toBeInstanceOf(ClientError);
      const retried = await retry;
      expect(retried.credits!.charged).toBe(String(COST));
      expect(await books(replica, user.id)).toMatchObject({ balance: 10 - COST, reserved: 0, charges: COST, generations: 1 });
    } finally {
      await other.close();
    }
  });
});
