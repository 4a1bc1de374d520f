import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { effectiveOptions } from "../src/cli/config.js";
import { ConfigError, loadOptions } from "../src/config/options.js";

describe("options", () => {
  it("has documented defaults for an empty environment", () => {
    const options = loadOptions({});
    expect(options).toMatchObject({
      databaseUrl: undefined,
      grpcHost: "127.0.0.1",
      grpcPort: 50051,
      httpPort: 8080,
      logLevel: "info",
    });
    expect(options.dataDir).toBe(path.resolve("./data"));
  });

  it("reads the environment and lets flags win", () => {
    const options = loadOptions(
      { GLIMPSE_GRPC_PORT: "6000", GLIMPSE_LOG_LEVEL: "DEBUG", DATABASE_URL: "postgres://u@h:5432/d" },
      ["--grpc-port", "7000", "--data-dir=/tmp/x"],
    );
    expect(options.grpcPort).toBe(7000);
    expect(options.logLevel).toBe("debug");
    expect(options.databaseUrl).toBe("postgres://u@h:5432/d");
    expect(options.dataDir).toBe("/tmp/x");
  });

  it("puts the HNSW graph on a thread of its own unless told inline, and refuses anything else", () => {
    expect(loadOptions({}).graphThread).toBe("worker");
    expect(loadOptions({ GLIMPSE_GRAPH_THREAD: "inline" }).graphThread).toBe("inline");
    expect(() => loadOptions({ GLIMPSE_GRAPH_THREAD: "gpu" })).toThrow(/GLIMPSE_GRAPH_THREAD must be one of/);
  });

  it("names every bad variable at once", () => {
    let error: unknown;
    try {
      loadOptions({ GLIMPSE_GRPC_PORT: "70000", GLIMPSE_LOG_LEVEL: "loud", DATABASE_URL: "mysql://x", GLIMPSE_HTTP_PORT: "8o" });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join("\n");
    expect(problems).toContain("GLIMPSE_GRPC_PORT must be between 0 and 65535");
    expect(problems).toContain("GLIMPSE_LOG_LEVEL must be one of");
    expect(problems).toContain("DATABASE_URL must use the postgres:// scheme");
    expect(problems).toContain("GLIMPSE_HTTP_PORT must be an integer");
  });

  it("rejects unknown flags and flags without a value", () => {
    expect(() => loadOptions({}, ["--grpc-prot", "1"])).toThrow(/unknown argument "--grpc-prot"/);
    expect(() => loadOptions({}, ["--grpc-port"])).toThrow(/--grpc-port needs a value/);
  });

  it("stops `glimpse serve` before it binds anything, naming the variable", () => {
    const result = spawnSync(process.execPath, ["--import", "tsx", "src/cli/main.ts", "serve"], {
      env: { ...process.env, GLIMPSE_GRPC_PORT: "not-a-port", DATABASE_URL: "" },
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("GLIMPSE_GRPC_PORT must be an integer");
    expect(result.stdout).not.toContain("listening");
  });
});

describe("glimpse config", () => {
  it("shows blob locations as written and URLs without their passwords", () => {
    const shown = (env: NodeJS.ProcessEnv) => new Map(effectiveOptions(env, []).map((o) => [o.env, o]));
    const s3 = shown({ GLIMPSE_BLOBS: "s3://photos/glimpse", GLIMPSE_REDIS_URL: "redis://:hunter2@127.0.0.1:6379" });
    expect(s3.get("GLIMPSE_BLOBS")).toMatchObject({ value: "s3://photos/glimpse/", source: "environment" });
    expect(s3.get("GLIMPSE_REDIS_URL")?.value).toBe("redis://:***@127.0.0.1:6379");
    expect(shown({ GLIMPSE_DATA_DIR: "/srv/glimpse" }).get("GLIMPSE_BLOBS")).toMatchObject({ value: "/srv/glimpse/blobs", source: "default" });
  });
});
