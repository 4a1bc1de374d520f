import { randomBytes, timingSafeEqual } from "node:crypto";
import type { Metadata } from "nice-grpc-common";
import type { Caller } from "../../catalogue/types.js";
import type { AccountService } from "../../accounts/account-service.js";
import type { BucketLimit, TokenBuckets } from "../../accounts/token-bucket.js";
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
  /** The token buckets: in this process, or in Redis shared by every replica. */
  limiter: TokenBuckets;
  /** Whether calls without a key may use the anonymous read RPCs. */
  anonymousRead: boolean;
  /** Requests per minute for anonymous callers, per client address. */
  anonymousRateLimit: number;
  /** Told of each call refused for a spent rate limit (the metrics). */
  rateLimited?: (caller: "key" | "anonymous") => void;
}

/**
 * Metadata key of the HTTP bridge's admission ticket: a call carrying it was already admitted
 * (authenticated, and charged its rate-limit token) by the bridge before it read the request
 * body, so the gRPC side charges nothing more for it. Its value is a per-process random
 * secret, so no client can forge it; the bridge drops any header of this name a client sends.
 */
export const ADMISSION_TICKET_KEY = "x-glimpse-internal-admitted";

/**
 * Metadata key that marks a call made by this process's HTTP bridge (same secret as the
 * ticket): only such calls may name the client's address in `x-forwarded-for`.
 */
export const BRIDGE_KEY = "x-glimpse-internal-bridge";

/** Prefix of metadata keys only glimpse itself may set. */
export const INTERNAL_METADATA_PREFIX = "x-glimpse-internal-";

/**
 * The secret a call presents: `authorization: Bearer <key>` or `x-api-key: <key>`; undefined
 * when it sends neither. The same key sent several ways is one credential; two different
 * ones are refused, whatever their order.
 */
export function presentedSecret(metadata: Metadata): string | undefined {
  // Every key sent, in order (no closure to collect them: this runs for every call).
  const keys: string[] = [];
  // HTTP/2 joins repeated headers with commas; no key contains one.
  for (const sent of metadata.getAll("authorization")) {
    const value = String(sent);
    for (const authorization of value.includes(",") ? value.split(/\s*,\s*/) : [value]) {
      const match = BEARER.exec(authorization);
      if (!match) throw new DomainError("UNAUTHENTICATED", "the authorization header must be 'Bearer <API key>'");
      keys.push(match[1]);
    }
  }
  for (const sent of metadata.getAll("x-api-key")) {
    for (const value of String(sent).split(",")) {
      const key = value.trim();
      if (key !== "") keys.push(key);
    }
  }
  const secret: string | undefined = keys[0];
  const conflict = keys.some((key) => key !== secret);
  if (conflict) {
    throw new DomainError(
      "UNAUTHENTICATED",
      "the request carries two different credentials (authorization / x-api-key); send one API key",
    );
  }
  return secret;
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/** The client address of a gRPC peer (`1.2.3.4:5678`, `[::1]:5678`, `ipv4:1.2.3.4:5678`), without its port. */
export function peerAddress(peer: string): string {
  const known = peerAddresses.get(peer);
  if (known !== undefined) return known;
  const address = peer.replace(/^ipv[46]:/, "").replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  // A connection's calls share its peer: remember a few hundred, forgetting them all when full.
  if (peerAddresses.size >= 512) peerAddresses.clear();
  peerAddresses.set(peer, address);
  return address;
}

const peerAddresses = new Map<string, string>();

/** The admission of a probe or tooling call: anonymous, and never charged. */
const OPEN_ADMISSION: Admission = Object.freeze({ caller: anonymousCaller, charge: async () => {} });

/** Decides who a call acts as and charges its rate limits; shared by gRPC and the HTTP bridge. */
export class Gatekeeper {
  /** The bridge's admission ticket (see {@link ADMISSION_TICKET_KEY}). */
  readonly ticket = randomBytes(32).toString("base64url");
  private readonly ticketBytes = Buffer.from(this.ticket);

  constructor(private readonly config: AuthConfig) {}

  /** Whether a call carries this process's admission ticket. */
  admitted(metadata: Metadata): boolean {
    return this.carries(metadata, ADMISSION_TICKET_KEY);
  }

  /** Whether a call comes from this process's HTTP bridge. */
  bridged(metadata: Metadata): boolean {
    return this.carries(metadata, BRIDGE_KEY);
  }

  private carries(metadata: Metadata, key: string): boolean {
    const value = metadata.get(key);
    if (typeof value !== "string") return false;
    const given = Buffer.from(value);
    return given.length === this.ticketBytes.length && timingSafeEqual(given, this.ticketBytes);
  }

  /**
   * Authenticates a call to `method` from its metadata, checks that the caller may make it,
   * and (unless `charge` is false) takes one token from each of its buckets: the key's and
   * its account's, or, without a key, the client address's. Health and reflection stay open.
   * A call without a key is refused UNAUTHENTICATED, unless anonymous reads are on and it is
   * one of the read RPCs. A key that is sent must be valid, even on an RPC that allows none.
   * The returned `charge` takes one more token for the same buckets (an item of a stream).
   */
  async admit(method: string, metadata: Metadata, clientAddress: string, charge = true): Promise<Admission> {
    return this.decide(method, metadata, clientAddress, charge ? "take" : "none");
  }

  /**
   * Whether {@link admit} would let the call in, taking nothing: for refusing a call from its
   * headers before its (large) request message is read.
   */
  async precheck(method: string, metadata: Metadata, clientAddress: string): Promise<void> {
    await this.decide(method, metadata, clientAddress, "peek");
  }

  private async decide(
    method: string,
    metadata: Metadata,
    clientAddress: string,
    tokens: "take" | "peek" | "none",
  ): Promise<Admission> {
    if (OPEN_PREFIXES.some((prefix) => method.startsWith(prefix))) return OPEN_ADMISSION;
    const { caller, buckets, who } = await this.identify(method, metadata, clientAddress);
    if (tokens !== "none") await this.take(buckets, who, tokens === "take");
    if (ADMIN_METHODS.has(method) && !caller.isAdmin) {
      throw new DomainError("PERMISSION_DENIED", `${method.split("/").pop()} needs an admin API key`);
    }
    // Bound rather than an arrow named by its property: tsx (esbuild's keepNames) would name
    // the arrow with Object.defineProperty on every call.
    return { caller, charge: this.take.bind(this, buckets, who, true) };
  }

  /** Who a call acts as, and the rate-limit buckets it is charged to. */
  private async identify(
    method: string,
    metadata: Metadata,
    clientAddress: string,
  ): Promise<{ caller: Caller; buckets: { key: string; perMinute: number }[]; who: string }> {
    const accounts = this.config.accounts();
    if (!accounts) throw new DomainError("UNAVAILABLE", "glimpse is starting; retry shortly");
    const secret = presentedSecret(metadata);
    if (secret === undefined) {
      if (this.config.anonymousRead && ANONYMOUS_READ_METHODS.has(method)) {
        const buckets = [{ key: `anonymous ${clientAddress}`, perMinute: this.config.anonymousRateLimit }];
        return { caller: anonymousCaller, buckets, who: "anonymous calls from this address" };
      }
      throw new DomainError(
        "UNAUTHENTICATED",
        "this call needs an API key: send 'authorization: Bearer <key>' or 'x-api-key: <key>'",
      );
    }
    const { caller, keyId, rateLimitPerMinute, accountRateLimitPerMinute } = await accounts.authenticate(secret);
    const buckets = [
      { key: `key ${keyId}`, perMinute: rateLimitPerMinute },
      { key: `account ${caller.accountId}`, perMinute: accountRateLimitPerMinute },
    ];
    return { caller, buckets, who: "this API key (an account's keys also share one budget)" };
  }

  private async take(buckets: BucketLimit[], who: string, take = true): Promise<void> {
    const admission = await (take ? this.config.limiter.takeAll(buckets) : this.config.limiter.wouldAdmit(buckets));
    if (!admission.allowed) {
      this.config.rateLimited?.(buckets[0].key.startsWith("anonymous") ? "anonymous" : "key");
      const seconds = Math.ceil(admission.retryAfterMs / 1000);
      throw new DomainError(
        "RESOURCE_EXHAUSTED",
        `rate limit of ${buckets[0].perMinute} requests per minute exceeded for ${who}; retry in ${seconds} s`,
        { retryAfterMs: admission.retryAfterMs },
      );
    }
  }
}

/** A call let in: who it acts as, and how to charge it for more work (each item of a stream). */
export interface Admission {
  caller: Caller;
  /** Takes one more token from the call's buckets; rejects RESOURCE_EXHAUSTED when empty. */
  charge: () => Promise<void>;
}

/**
 * The gatekeeper as the caller middleware's resolver. A call carrying the bridge's admission
 * ticket was charged by the bridge. A call from the bridge is limited by the client address
 * the bridge forwards (`x-forwarded-for`); any other call by its own peer address, so a
 * forwarded address from anyone else is ignored.
 */
export function apiKeyResolver(gatekeeper: Gatekeeper): CallerResolver {
  return async (method, context) => {
    const forwarded = gatekeeper.bridged(context.metadata)
      ? context.metadata.get("x-forwarded-for")?.split(",")[0]?.trim()
      : undefined;
    const address = forwarded || peerAddress(context.peer);
    return gatekeeper.admit(method, context.metadata, address, !gatekeeper.admitted(context.metadata));
  };
}
