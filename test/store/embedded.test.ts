import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { once } from "node:events";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer } from "node:net";
import { freePort, startEmbeddedPostgres } from "../../src/store/embedded.js";
import { captureLogger, testLogger } from "../helpers/log.js";

async function query(url: string): Promise<number> {
  const sql = postgres(url, { max: 1 });
  try {
    const [row] = await sql`select 41 + 1 as answer`;
    return row.answer;
  } finally {
    await sql.end();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("embedded PostgreSQL", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "glimpse-embedded-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("initialises once, keeps data across restarts and listens on loopback only", async () => {
    const first = await startEmbeddedPostgres(dir, testLogger());
    expect(new URL(first.url).hostname).toBe("127.0.0.1");
    const sql = postgres(first.url, { max: 1 });
    await sql`create table kept (v text)`;
    await sql`insert into kept values ('still here')`;
    const [{ setting }] = await sql`select setting from pg_settings where name = 'listen_addresses'`;
    expect(setting).toBe("127.0.0.1");
    await sql.end();
    await first.stop();

    const second = await startEmbeddedPostgres(dir, testLogger());
    const sql2 = postgres(second.url, { max: 1 });
    expect(await sql2`select v from kept`).toEqual([{ v: "still here" }]);
    await sql2.end();
    await second.stop();
  });

  it("starts on another port when the one it chose is taken before PostgreSQL binds it", async () => {
    // Something binds the chosen port between the choice and PostgreSQL's start.
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const taken = (holder.address() as { port: number }).port;
    const chosen = [taken];
    const { logger, records } = captureLogger();
    try {
      const server = await startEmbeddedPostgres(dir, logger, {
        choosePort: async () => chosen.shift() ?? freePort(),
      });
      try {
        expect(server.port).not.toBe(taken);
        expect(await query(server.url)).toBe(42);
        expect(records).toContainEqual(
          expect.objectContaining({ level: "warn", msg: "embedded PostgreSQL's port was taken before it bound it; starting on another", taken }),
        );
      } finally {
        await server.stop();
      }
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
  });

  it("recovers after the owning process was killed, stopping the orphaned server", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "test/fixtures/embedded-hold.ts", dir], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => (out += chunk));
    while (!out.includes("READY")) await once(child.stdout, "data");
    const orphan = Number((await readFile(path.join(dir, "postgres", "postmaster.pid"), "utf8")).split("\n")[0]);
    child.kill("SIGKILL");
    await once(child, "exit");
    expect(alive(orphan)).toBe(true);

    const server = await startEmbeddedPostgres(dir, testLogger());
    expect(alive(orphan)).toBe(false);
    expect(await query(server.url)).toBe(42);
    await server.stop();
  });

  it("starts over a stale postmaster.pid whose pid now belongs to another program", async () => {
    const stranger = spawn("sleep", ["30"]);
    try {
      const pidFile = path.join(dir, "postgres", "postmaster.pid");
      await writeFile(pidFile, `${stranger.pid}\n${path.join(dir, "postgres")}\n`);
      const server = await startEmbeddedPostgres(dir, testLogger());
      expect(await query(server.url)).toBe(42);
      await server.stop();
      expect(alive(stranger.pid!)).toBe(true);
    } finally {
      stranger.kill();
    }
  });

  it("refuses a data directory that a live glimpse process is using", async () => {
    const server = await startEmbeddedPostgres(dir, testLogger());
    try {
      // This test process is the owner; a second owner in another process must be refused.
      const child = spawn(process.execPath, ["--import", "tsx", "test/fixtures/embedded-hold.ts", dir], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let err = "";
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (c) => (err += c));
      const [code] = await once(child, "exit");
      expect(code).not.toBe(0);
      expect(err).toMatch(/in use by glimpse process \d+/);
      expect(await query(server.url)).toBe(42);
    } finally {
      await server.stop();
    }
  });

  it("refuses a second `glimpse serve` on a data directory in use in one line, without a stack trace", async () => {
    const server = await startEmbeddedPostgres(dir, testLogger());
    try {
      const child = spawn(process.execPath, ["bin/glimpse.js", "serve"], {
        stdio: ["ignore", "pipe", "pipe"],
        env: {
          ...process.env,
          DATABASE_URL: "",
          GLIMPSE_DATA_DIR: dir,
          GLIMPSE_GRPC_PORT: "0",
          GLIMPSE_HTTP_PORT: "0",
          GLIMPSE_MODEL_AUTO_PULL: "false",
          GLIMPSE_LOG_LEVEL: "silent",
        },
      });
      let err = "";
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (c) => (err += c));
      const [code] = await once(child, "exit");
      expect(code).not.toBe(0);
      const lines = err.trim().split("\n");
      expect(lines, err).toHaveLength(1);
      expect(lines[0]).toContain(`data directory ${dir} is in use by glimpse process ${process.pid}`);
      expect(lines[0]).toContain("GLIMPSE_DATA_DIR");
      expect(await query(server.url)).toBe(42);
    } finally {
      await server.stop();
    }
  });
});
