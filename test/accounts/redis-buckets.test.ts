import { randomBytes } from "node:crypto";
import { ClientError, Status } from "nice-grpc";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { RedisRateLimiter } from "../../src/accounts/redis-buckets.js";
import { DomainError } from "../../src/errors.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { startTestApp, type TestApp } from "../helpers/app.js";
import { captureLogger, testLogger } from "../helpers/log.js";

/** The machine's Redis (`.ci/run` starts it); every test uses a key prefix of its own. */
const REDIS_URL = "redis://127.0.0.1:6379";
/** Nothing listens here: a Redis that does not answer. */
const DEAD_REDIS_URL = "redis://127.0.0.1:1";

const freshPrefix = () => `glimpse:test:${process.pid}:${randomBytes(4).toString("hex")}:`;

describe("rate-limit buckets in Redis", () => {
  const open: RedisRateLimiter[] = [];
  const limiter = (options: Partial<ConstructorParameters<typeof RedisRateLimiter>[0]> = {}) => {
    const made = new RedisRateLimiter({ url: REDIS_URL, fail: "open", logger: testLogger(), ...options });
    open.push(made);
    return made;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((l) => l.close()));
  });

  it("gives a key exactly its limit across replicas, however the calls interleave", async () => {
    const prefix = freshPrefix();
    const replicas = [limiter({ prefix }), limiter({ prefix }), limiter({ prefix })];
    const limits = [{ key: "key 1", perMinute: 10 }];
    // 60 takes at once, spread over three replicas: one script per take makes them atomic.
    const answers = await Promise.all(Array.from({ length: 60 }, (_, i) => replicas[i % 3].takeAll(limits)));
    expect(answers.filter((a) => a.allowed)).toHaveLength(10);
    const refused = answers.find((a) => !a.allowed);
    // 10 per minute: the next token is about 6 s away.
    expect(refused).toMatchObject({ allowed: false });
    expect(refused!.allowed === false && refused!.retryAfterMs).toBeGreaterThan(5000);
    expect(refused!.allowed === false && refused!.retryAfterMs).toBeLessThanOrEqual(6000);
  });

  it("takes from a key's and its account's buckets together, or from neither; a peek takes nothing", async () => {
    const prefix = freshPrefix();
    const [a, b] = [limiter({ prefix }), limiter({ prefix })];
    const firstKey = [
      { key: "key 1", perMinute: 100 },
      { key: "account 7", perMinute: 3 },
    ];
    const secondKey = [
      { key: "key 2", perMinute: 100 },
      { key: "account 7", perMinute: 3 },
    ];
    expect(await a.wouldAdmit(firstKey)).toEqual({ allowed: true });
    expect(await a.takeAll(firstKey)).toEqual({ allowed: true });
    expect(await b.takeAll(secondKey)).toEqual({ allowed: true });
    expect(await a.takeAll(firstKey)).toEqual({ allowed: true });
    // The account's three are spent, whichever key and replica spent them.
    expect((await b.takeAll(secondKey)).allowed).toBe(false);
    expect((await b.wouldAdmit(secondKey)).allowed).toBe(false);
    // A key of another account is untouched.
    expect(await b.takeAll([{ key: "key 3", perMinute: 1 }, { key: "account 8", perMinute: 3 }])).toEqual({ allowed: true });
  });

  it("fails open when Redis does not answer: calls are admitted, logged once per outage, counted each", async () => {
    const { logger, records } = captureLogger("info");
    const counted: string[] = [];
    const dead = limiter({ url: DEAD_REDIS_URL, fail: "open", logger, unavailable: (mode) => counted.push(mode) });
    for (let i = 0; i < 5; i++) expect(await dead.takeAll([{ key: "key 1", perMinute: 1 }])).toEqual({ allowed: true });
    expect(records.filter((r) => String(r.msg ?? r.message).includes("Redis does not answer"))).toHaveLength(1);
    expect(counted).toEqual(["open", "open", "open", "open", "open"]);
  });

  it("fails closed when so configured: UNAVAILABLE with a retry delay", async () => {
    const dead = limiter({ url: DEAD_REDIS_URL, fail: "closed" });
    const error = await Promise.resolve(dead.takeAll([{ key: "key 1", perMinute: 100 }])).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DomainError);
    expect((error as DomainError).code).toBe("UNAVAILABLE");
  });
});

describe("two glimpse replicas sharing one Redis", () => {
  let first: TestApp;
  let second: TestApp;
  const prefix = freshPrefix();

  beforeAll(async () => {
    const shared = { rateLimitPerMinute: 6, redisUrl: REDIS_URL, redisPrefix: prefix };
    first = await startTestApp(shared);
    second = await startTestApp(shared, {}, first.db);
  });
  afterAll(async () => {
    await second?.close();
    await first?.close();
  });

  it("cap a key's calls at its limit across both, over gRPC and over HTTP", async () => {
    const account = await first.newAccount();
    const outcomes: string[] = [];
    for (let i = 0; i < 12; i++) {
      const app = i % 2 === 0 ? first : second;
      if (i % 3 === 2) {
        const res = await fetch(`http://127.0.0.1:${app.app.httpPort}/v1/images`, {
          headers: { authorization: `Bearer ${account.key}` },
        });
        await res.arrayBuffer();
        outcomes.push(res.status === 200 ? "ok" : String(res.status));
      } else {
        outcomes.push(
          await app
            .client(ImageServiceDefinition, account.key)
            .listImages({})
            .then(
              () => "ok",
              (e: ClientError) => (e.code === Status.RESOURCE_EXHAUSTED ? "429" : String(e.code)),
            ),
        );
      }
    }
    expect(outcomes.filter((o) => o === "ok")).toHaveLength(6);
    expect(outcomes.slice(6)).toEqual(["429", "429", "429", "429", "429", "429"]);
  });
});

describe("a replica whose Redis does not answer", () => {
  for (const fail of ["open", "closed"] as const) {
    it(`${fail === "open" ? "admits calls past the limit" : "refuses calls UNAVAILABLE"} with GLIMPSE_REDIS_FAIL=${fail}`, async () => {
      const t = await startTestApp({ rateLimitPerMinute: 2, redisUrl: DEAD_REDIS_URL, redisFail: fail });
      try {
        const images = t.client(ImageServiceDefinition);
        const codes: string[] = [];
        for (let i = 0; i < 4; i++) {
          codes.push(await images.listImages({}).then(() => "ok", (e: ClientError) => Status[e.code]));
        }
        expect(codes).toEqual(fail === "open" ? ["ok", "ok", "ok", "ok"] : ["UNAVAILABLE", "UNAVAILABLE", "UNAVAILABLE", "UNAVAILABLE"]);
        const res = await fetch(`http://127.0.0.1:${t.app.httpPort}/v1/images`, { headers: { authorization: `Bearer ${t.adminKey}` } });
        await res.arrayBuffer();
        expect(res.status).toBe(fail === "open" ? 200 : 503);
      } finally {
        await t.close();
      }
    });
  }
});
