// A glimpse killed with SIGKILL in the middle of uploads, deletes and generations, then started
// again on the same database and data directory. What a client was told must still hold:
// every acknowledged upload that was not deleted is there with its bytes; no image is listed
// whose bytes are gone; a generation retried with its request id answers within seconds and
// is charged once; no credits are lost or left reserved.
import { spawn, type ChildProcessByStdio } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { once } from "node:events";
import { watch, type FSWatcher } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Readable } from "node:stream";
import { ClientError, createChannel, createClient, Status, type Channel, type Client } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccountServiceDefinition, TransactionType } from "../../src/gen/glimpse/account/v1/account_service.js";
import { GenerationServiceDefinition } from "../../src/gen/glimpse/generation/v1/generation_service.js";
import { ImageServiceDefinition, type UploadImageResponse } from "../../src/gen/glimpse/image/v1/image_service.js";
import { withKey, testSecret } from "../helpers/app.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";
import { solidImage } from "../helpers/images.js";
import { openaiImage, startFakeProvider, type FakeProvider } from "../generation/fake-provider.js";

/** Credits granted to the account that generates. */
const GRANTED = 500n;
/** Generations held by the provider when the server dies (OpenAI model, 4 credits each). */
const HELD_GENERATIONS = 6;
/** Most generations with the local model, made one after another up to the kill (1 credit each). */
const LOCAL_GENERATIONS = 40;
/** Images uploaded before the kill, to be deleted while it happens. */
const DELETABLE = 90;
/** How long a retry of a generation may take to answer once the server is back. */
const RETRY_MS = 20_000;

/** GLIMPSE_CRASH_TRACE=1 prints the phases with their times and what was in flight. */
const TRACE = process.env.GLIMPSE_CRASH_TRACE === "1";
const t0 = Date.now();
const trace = (what: string) => TRACE && console.log(`${Date.now() - t0} ms: ${what}`);

/** A glimpse server running as a child process. */
interface Server {
  child: ChildProcessByStdio<null, Readable, Readable>;
  grpcPort: number;
  httpPort: number;
  channel: Channel;
  /** The last lines it logged, for failure messages. */
  log: string[];
}

let db: TestDatabase;
let dataDir: string;
let provider: FakeProvider;
const adminKey = testSecret();
let server: Server | undefined;

/** Starts `glimpse serve` on the test database and data directory; resolves once it serves. */
async function startServer(): Promise<Server> {
  const env: NodeJS.ProcessEnv = {};
  // The parent's own GLIMPSE_* settings must not leak into the server under test.
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith("GLIMPSE_")) env[name] = value;
  Object.assign(env, {
    DATABASE_URL: db.url,
    GLIMPSE_DATA_DIR: dataDir,
    GLIMPSE_ADMIN_KEY: adminKey,
    GLIMPSE_GRPC_HOST: "127.0.0.1",
    GLIMPSE_GRPC_PORT: "0",
    GLIMPSE_HTTP_PORT: "0",
    GLIMPSE_LOG_LEVEL: "info",
    GLIMPSE_MODEL_AUTO_PULL: "false",
    GLIMPSE_RATE_LIMIT_PER_MINUTE: "100000",
    GLIMPSE_OPENAI_BASE_URL: provider.url,
    GLIMPSE_OPENAI_API_KEY: "sk-test-crash",
    GLIMPSE_PROVIDER_RETRIES: "0",
  });
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "serve"], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const log: string[] = [];
  const keep = (chunk: string) => {
    for (const line of chunk.split("\n")) if (line) log.push(line);
    if (log.length > 400) log.splice(0, log.length - 400);
  };
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", keep);
  const serving = new Promise<{ grpcPort: number; httpPort: number }>((resolve, reject) => {
    let pending = "";
    child.stdout.on("data", (chunk: string) => {
      keep(chunk);
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop()!;
      for (const line of lines) {
        if (!line.includes('"msg":"glimpse serving"')) continue;
        const { grpcPort, httpPort } = JSON.parse(line) as { grpcPort: number; httpPort: number };
        resolve({ grpcPort, httpPort });
      }
    });
    child.once("exit", (code, signal) => reject(new Error(`glimpse exited (${code ?? signal}) before serving:\n${log.join("\n")}`)));
  });
  const { grpcPort, httpPort } = await serving;
  return { child, grpcPort, httpPort, channel: createChannel(`127.0.0.1:${grpcPort}`), log };
}

/** Kills the server with SIGKILL: no shutdown code runs. */
async function killServer(s: Server): Promise<void> {
  const exited = once(s.child, "exit");
  s.child.kill("SIGKILL");
  await exited;
  s.channel.close();
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** What the client was told before the kill. */
interface Acknowledged {
  /** Uploads answered OK: id -> sha256 of the bytes sent. */
  uploads: Map<string, string>;
  /** Images whose delete was sent: "done" once answered OK, "sent" while it had no answer. */
  deletes: Map<string, "sent" | "done">;
  /** Generations by request id: the generation id once answered OK, undefined while not. */
  generations: Map<string, { modelId: string; prompt: string; generationId?: string }>;
}

const acked: Acknowledged = { uploads: new Map(), deletes: new Map(), generations: new Map() };
let user: { id: string; key: string };
/** PNGs the fake provider answers with, by prompt (distinct, so no two generations share an image). */
const drawn = new Map<string, Buffer>();

describe("glimpse killed mid-flight", () => {
  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = await mkdtemp(path.join(tmpdir(), "glimpse-crash-"));
    // Until the kill the provider holds every request: those generations are in flight, their
    // credits reserved. After the restart it draws at once.
    provider = await startFakeProvider(() => ({ hang: true }));
    for (let i = 0; i < HELD_GENERATIONS; i++) drawn.set(`held generation ${i}`, await solidImage(40, 30, { r: 10 * i, g: 200, b: 90 }, "png", 5000 + i));
    trace("database and provider ready");
    server = await startServer();
    trace("server started");

    const accounts = createClient(AccountServiceDefinition, server.channel);
    const made = await accounts.createAccount(
      { email: `crash-${randomUUID()}@example.com`, initialCredits: String(GRANTED), createApiKey: true },
      withKey(adminKey),
    );
    user = { id: made.account!.id, key: made.apiKeySecret };
    const images = createClient(ImageServiceDefinition, server.channel);
    const generation = createClient(GenerationServiceDefinition, server.channel);
    const asUser = withKey(user.key);

    // Images to delete while the server dies, uploaded (and acknowledged) first.
    const deletable: string[] = [];
    let n = 0;
    const upload = async (): Promise<void> => {
      const bytes = await solidImage(96, 64, { r: n % 256, g: (n * 7) % 256, b: (n * 13) % 256 }, "png", ++n);
      const res: UploadImageResponse = await images.uploadImage({ content: bytes, index: false, tags: ["crash"] }, asUser);
      acked.uploads.set(res.image!.id, sha256(bytes));
      if (res.image!.sha256 !== sha256(bytes)) throw new Error(`upload ${res.image!.id} reports sha256 ${res.image!.sha256}`);
      deletable.push(res.image!.id);
    };
    await Promise.all(Array.from({ length: 6 }, async () => {
      while (deletable.length < DELETABLE) await upload();
    }));
    const toDelete = deletable.slice();
    trace(`${deletable.length} images to delete uploaded`);

    // From here on, work is in flight when the server is killed. The kill comes once the
    // provider holds every OpenAI generation (their credits are reserved) and deletes and
    // uploads have been answered, while more of each are on their way.
    let killed = false;
    const early: unknown[] = [];
    let underWay!: () => void;
    const ready = new Promise<void>((resolve) => (underWay = resolve));
    const progress = () => {
      const deleted = [...acked.deletes.values()].filter((state) => state === "done").length;
      if (provider.received.length >= HELD_GENERATIONS && deleted >= DELETABLE / 3 && acked.uploads.size >= DELETABLE + 10) underWay();
    };
    provider.otherwise = () => {
      queueMicrotask(progress);
      return { hang: true };
    };
    /** After the kill every call fails (UNAVAILABLE or cancelled); before it, a failure is a bug. */
    const gone = (err: unknown) => {
      if (!killed) {
        early.push(err);
        underWay();
      }
    };
    const uploading = Array.from({ length: 4 }, async () => {
      while (!killed) {
        const bytes = await solidImage(256, 192, { r: n % 256, g: 60, b: (n * 3) % 256 }, "png", ++n);
        try {
          const res = await images.uploadImage({ content: bytes, index: false, tags: ["crash", "late"] }, asUser);
          acked.uploads.set(res.image!.id, sha256(bytes));
          progress();
        } catch (err) {
          return gone(err);
        }
      }
    });
    const deleting = Array.from({ length: 6 }, async () => {
      while (!killed && toDelete.length > 0) {
        const id = toDelete.pop()!;
        acked.deletes.set(id, "sent");
        try {
          await images.deleteImage({ id }, asUser);
          acked.deletes.set(id, "done");
          progress();
        } catch (err) {
          return gone(err);
        }
      }
    });
    const generate = async (requestId: string, modelId: string, prompt: string) => {
      acked.generations.set(requestId, { modelId, prompt });
      try {
        const res = await generation.generateImage({ prompt, modelId, requestId }, asUser);
        acked.generations.get(requestId)!.generationId = res.generation!.id;
        return true;
      } catch (err) {
        gone(err);
        return false;
      }
    };
    let local = 0;
    const generating = [
      ...Array.from({ length: HELD_GENERATIONS }, (_, i) => generate(randomUUID(), "openai:gpt-image-1.5", `held generation ${i}`)),
      // Local generations one after another, so one is usually running at the kill.
      ...Array.from({ length: 2 }, async () => {
        while (!killed && local < LOCAL_GENERATIONS) {
          if (!(await generate(randomUUID(), "local:shapes", `local generation ${local++}`))) return;
        }
      }),
    ];

    // The moment that matters for deletes is right after a blob file is removed: kill then, and
    // a delete that removes the file before its row is committed leaves a row without bytes.
    // (Watching the blob directories is the one outside view of that moment.)
    let armed = false;
    let blobRemoved!: () => void;
    const removed = new Promise<void>((resolve) => (blobRemoved = resolve));
    const deletableBlobs = new Set(deletable.map((id) => acked.uploads.get(id)!));
    const blobDirs = new Set([...deletableBlobs].map((sha) => path.join(dataDir, "blobs", sha.slice(0, 2), sha.slice(2, 4))));
    const watchers: FSWatcher[] = [...blobDirs].map((dir) =>
      watch(dir, (_event, name) => {
        if (armed && name !== null && deletableBlobs.has(name.toString())) blobRemoved();
      }),
    );

    const within = <T>(ms: number, what: Promise<T>) => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), ms)));
      return Promise.race([what, late]).finally(() => clearTimeout(timer));
    };
    const started = await within(30_000, ready);
    if (early.length > 0) throw new Error(`a call failed before the kill: ${String(early[0])}`);
    if (started === "late") throw new Error(`the work never got under way:\n${server.log.slice(-30).join("\n")}`);
    armed = true;
    const moment = await within(5_000, removed);
    await killServer(server);
    killed = true;
    for (const watcher of watchers) watcher.close();
    trace(moment === "late" ? "killed with no blob removal in sight" : "killed right after a blob was removed");
    await Promise.all([...uploading, ...deleting, ...generating]);
    server = undefined;
    trace(
      `killed: ${acked.uploads.size} uploads acknowledged, deletes done ${[...acked.deletes.values()].filter((s) => s === "done").length} of ${acked.deletes.size}` +
        `, generations answered ${[...acked.generations.values()].filter((g) => g.generationId).length} of ${acked.generations.size}`,
    );

    provider.otherwise = (request) => openaiImage(drawn.get(request.body?.prompt) ?? drawn.values().next().value!);
    server = await startServer();
    trace("server restarted");
  }, 120_000);

  afterAll(async () => {
    if (server) await killServer(server);
    await provider?.close();
    await db?.drop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  const images = () => createClient(ImageServiceDefinition, server!.channel);
  const asAdmin = () => withKey(adminKey);

  it("keeps every acknowledged upload that was not deleted, with its bytes", async () => {
    const kept = [...acked.uploads].filter(([id]) => !acked.deletes.has(id));
    expect(kept.length).toBeGreaterThan(10);
    const missing: string[] = [];
    for (const [id, digest] of kept) {
      const content = await images()
        .getImageContent({ id }, asAdmin())
        .catch((err: unknown) => err as ClientError);
      if (content instanceof ClientError) missing.push(`${id}: ${Status[content.code]} ${content.details}`);
      else if (sha256(content.data) !== digest) missing.push(`${id}: bytes with sha256 ${sha256(content.data)}, uploaded ${digest}`);
    }
    expect(missing).toEqual([]);
  });

  it("has removed every image whose delete was acknowledged", async () => {
    const done = [...acked.deletes].filter(([, state]) => state === "done").map(([id]) => id);
    expect(done.length).toBeGreaterThan(0);
    const still: string[] = [];
    for (const id of done) {
      const found = await images()
        .getImage({ id }, asAdmin())
        .catch((err: unknown) => err as ClientError);
      if (!(found instanceof ClientError && found.code === Status.NOT_FOUND)) still.push(id);
    }
    expect(still).toEqual([]);
  });

  it("lists no image whose bytes are gone, over the whole catalogue", async () => {
    const broken: string[] = [];
    let listed = 0;
    let pageToken = "";
    do {
      const page = await images().listImages({ pageSize: 200, pageToken }, asAdmin());
      for (const image of page.images) {
        listed++;
        const content = await images()
          .getImageContent({ id: image.id }, asAdmin())
          .catch((err: unknown) => err as ClientError);
        if (content instanceof ClientError) broken.push(`${image.id}: ${Status[content.code]} ${content.details}`);
        else if (sha256(content.data) !== image.sha256) broken.push(`${image.id}: bytes do not match sha256 ${image.sha256}`);
      }
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(listed).toBeGreaterThan(10);
    expect(broken).toEqual([]);
  });

  it(
    "answers each generation retried with its request id within seconds, once per request",
    async () => {
      const generation = createClient(GenerationServiceDefinition, server!.channel);
      const slow: string[] = [];
      await Promise.all(
        [...acked.generations].map(async ([requestId, sent]) => {
          const started = Date.now();
          // The client gives up (cancels) after RETRY_MS.
          const again = () =>
            generation.generateImage(
              { prompt: sent.prompt, modelId: sent.modelId, requestId },
              { ...withKey(user.key), signal: AbortSignal.timeout(RETRY_MS) },
            );
          const first = await again().catch((err: unknown) => err as Error);
          if (first instanceof Error) {
            const why = first instanceof ClientError ? `${Status[first.code]}: ${first.details}` : `no answer (${first.name})`;
            slow.push(`${sent.modelId} request ${requestId}: ${why} after ${Date.now() - started} ms`);
            return;
          }
          // A generation answered before the kill is the one the retry returns.
          if (sent.generationId !== undefined) expect(first.generation!.id).toBe(sent.generationId);
          // And a second retry returns the same one again, charged once.
          const second = await again();
          expect(second.generation!.id).toBe(first.generation!.id);
          sent.generationId = first.generation!.id;
        }),
      );
      expect(slow).toEqual([]);
    },
    RETRY_MS * 3,
  );

  it("loses no credits and leaves none reserved", async () => {
    const accounts = createClient(AccountServiceDefinition, server!.channel);
    const { account } = await accounts.getAccount({ accountId: "" }, withKey(user.key));
    const ledger = [];
    for (let offset = 0; ; offset += 100) {
      const page = await accounts.listUsage({ limit: 100, offset }, withKey(user.key));
      ledger.push(...page.transactions);
      if (ledger.length >= Number(page.total) || page.transactions.length === 0) break;
    }
    const granted = ledger.filter((t) => t.type === TransactionType.TRANSACTION_TYPE_GRANT).reduce((sum, t) => sum + BigInt(t.amount), 0n);
    const charges = ledger.filter((t) => t.type === TransactionType.TRANSACTION_TYPE_DEDUCTION);
    const charged = charges.reduce((sum, t) => sum - BigInt(t.amount), 0n);
    expect(granted).toBe(GRANTED);
    // One charge per generation, never two.
    const perGeneration = new Map<string, number>();
    for (const t of charges) perGeneration.set(t.referenceId, (perGeneration.get(t.referenceId) ?? 0) + 1);
    expect([...perGeneration].filter(([, count]) => count > 1)).toEqual([]);
    // Every generation the client holds an id for is charged (the retries above gave one to each).
    const answered = [...acked.generations.values()].filter((g) => g.generationId !== undefined).map((g) => g.generationId!);
    expect(answered.filter((id) => !perGeneration.has(id))).toEqual([]);
    expect({ reserved: BigInt(account!.reservedCredits), balancePlusCharged: BigInt(account!.creditBalance) + charged }).toEqual({
      reserved: 0n,
      balancePlusCharged: GRANTED,
    });
  });
});
