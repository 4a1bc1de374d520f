import type { CallContext } from "nice-grpc-common";
import type { AccountService } from "../../accounts/account-service.js";
import type { RateLimiter } from "../../accounts/token-bucket.js";
import { DomainError } from "../../errors.js";
import { anonymousCaller, type CallerResolver } from "./caller.js";

/** Methods answered without a key, whatever the configuration: probes and tooling. */
const OPEN_PREFIXES = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/** RPCs that need an admin key. */
export const ADMIN_METHODS: ReadonlySet<string> = new Set([
  "/glimpse.account.v1.AccountService/CreateAccount",
  "/glimpse.account.v1.AccountService/GrantCredits",
]);

/**
 * RPCs a caller without a key may make when anonymous reads are on: reading public images
 * (seed 1's get-by-id, seed 2's list) and their comments. Search is left out: it runs the
 * embedding model, which is too costly to offer without a key.
 */
export const ANONYMOUS_READ_METHODS: ReadonlySet<string> = new Set([
  "/glimpse.image.v1.ImageService/GetImage",
  "/glimpse.image.v1.ImageService/GetImageContent",
  "/glimpse.image.v1.ImageService/ListImages",
  "/glimpse.image.v1.ImageService/ListComments",
]);

/** What API-key authentication needs. */
export interface AuthConfig {
  /** The account service, once the store is ready (calls are refused before that anyway). */
  accounts: () => AccountService | undefined;
  limiter: RateLimiter;
  /** Whether calls without a key may use the anonymous read RPCs. */
  anonymousRead: boolean;
  /** Requests per minute for anonymous callers, per client address. */
  anonymousRateLimit: number;
}

/**
 * The secret a call presents: `authorization: Bearer <key>` or `x-api-key: <key>`; undefined
 * when it sends neither.
 */
export function presentedSecret(context: CallContext): string | undefined {
  const authorization = context.metadata.get("authorization");
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (!match) throw new DomainError("UNAUTHENTICATED", "the authorization header must be 'Bearer <API key>'");
    return match[1];
  }
  const key = context.metadata.get("x-api-key")?.trim();
  return key === undefined || key === "" ? undefined : key;
}

/** The client address of a gRPC peer (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`), without its port. */
function peerAddress(peer: string): string {
  return peer.replace(/:\d+$/, "");
}

const LOOPBACK = /^(ipv4:127\.|ipv6:\[::1\]|ipv6:\[::ffff:127\.)/;

/**
 * Who to rate-limit an anonymous call as: the peer, or, for calls the HTTP bridge makes over
 * loopback on a client's behalf, the client address it forwards in `x-forwarded-for`.
 */
function clientAddress(context: CallContext): string {
  const forwarded = context.metadata.get("x-forwarded-for")?.split(",")[0]?.trim();
  if (forwarded && LOOPBACK.test(context.peer)) return forwarded;
  return peerAddress(context.peer);
}

function admit(config: AuthConfig, bucket: string, perMinute: number, who: string): void {
  const admission = config.limiter.take(bucket, perMinute);
  if (!admission.allowed) {
    const seconds = Math.ceil(admission.retryAfterMs / 1000);
    throw new DomainError(
      "RESOURCE_EXHAUSTED",
      `rate limit of ${perMinute} requests per minute exceeded for ${who}; retry in ${seconds} s`,
      { retryAfterMs: admission.retryAfterMs },
    );
  }
}

/**
 * API-key authentication, admin checks and per-key rate limits, as a caller resolver for the
 * caller middleware. Health and reflection stay open. A call without a key is refused
 * UNAUTHENTICATED, unless anonymous reads are on and it is one of the read RPCs: it then acts
 * as an anonymous caller who sees public images only, limited per client address. A key that
 * is sent must be valid, even on an RPC that would allow no key.
 */
export function apiKeyResolver(config: AuthConfig): CallerResolver {
  return async (method, context) => {
    if (OPEN_PREFIXES.some((prefix) => method.startsWith(prefix))) return anonymousCaller;
    const accounts = config.accounts();
    if (!accounts) throw new DomainError("UNAVAILABLE", "glimpse is starting; retry shortly");
    const secret = presentedSecret(context);
    if (secret === undefined) {
      if (config.anonymousRead && ANONYMOUS_READ_METHODS.has(method)) {
        const address = clientAddress(context);
        admit(config, `anonymous ${address}`, config.anonymousRateLimit, "anonymous calls from this address");
        return anonymousCaller;
      }
      throw new DomainError(
        "UNAUTHENTICATED",
        "this call needs an API key: send 'authorization: Bearer <key>' or 'x-api-key: <key>'",
      );
    }
    const { caller, keyId, rateLimitPerMinute } = await accounts.authenticate(secret);
    admit(config, `key ${keyId}`, rateLimitPerMinute, "this API key");
    if (ADMIN_METHODS.has(method) && !caller.isAdmin) {
      throw new DomainError("PERMISSION_DENIED", `${method.split("/").pop()} needs an admin API key`);
    }
    return caller;
  };
}
