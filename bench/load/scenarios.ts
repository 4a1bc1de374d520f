/**
 * What each scenario sends, over gRPC and (where the bridge has a route) HTTP/JSON. A scenario
 * turns a call number into one request; its outcome is "OK" or a status name (gRPC: the status
 * code's name; HTTP: the status code).
 */
import { ClientError, createChannel, createClient, Metadata, Status, type Channel } from "nice-grpc";
import { HealthDefinition } from "nice-grpc-server-health";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { empty, httpClient, makeMoreCall, MORE_SCENARIOS } from "./calls.js";

export type Target = "grpc" | "http";

/** Everything a worker needs to build requests; sent by the parent. */
export interface ScenarioSpec {
  scenario: string;
  target: Target;
  /** host:port of the chosen transport. */
  address: string;
  /** Several replicas' host:port: call number i goes to addresses[i mod n] (then `address` is unused). */
  addresses?: string[];
  /** grpc-js channel options (e.g. grpc.max_reconnect_backoff_ms), for every channel the calls open. */
  grpcOptions?: Record<string, number>;
  /** API key sent as `authorization: Bearer`. */
  key: string;
  /** Image ids to ask for / search like, used round-robin. */
  ids: string[];
  /** Tag filter of the search-*-tag scenarios. */
  tag?: string;
  /** Images with stored bytes (uploaded by the harness before the run), for get-image-content. */
  contentIds?: string[];
  k: number;
  /** Per-call deadline. */
  timeoutMs: number;
}

export const SCENARIOS: Record<string, { doc: string; key: "admin" | "user" | "none"; http: boolean }> = {
  "grpc-noop": { doc: "grpc.health.v1.Health/Check: a bare gRPC round trip (no auth, no database)", key: "none", http: false },
  "get-image": { doc: "GetImage (metadata view) of a public image, admin key", key: "admin", http: true },
  "search-admin": { doc: "SearchImages like_image_id, limit k, admin key, no filter", key: "admin", http: true },
  "search-user": { doc: "SearchImages like_image_id, limit k, ordinary account key, no filter", key: "user", http: true },
  "search-user-tag": {
    doc: "SearchImages like_image_id, limit k, ordinary key, filter tags [a tag on --share of the images]",
    key: "user",
    http: true,
  },
  "search-admin-tag": {
    doc: "SearchImages like_image_id, limit k, admin key, filter tags [a tag on --share of the images]",
    key: "admin",
    http: true,
  },
  ...MORE_SCENARIOS,
};

export type Call = (i: number, signal: AbortSignal) => Promise<void>;

/** Call outcome name of a thrown error. */
export function outcomeOf(err: unknown): string {
  if (err instanceof ClientError) return Status[err.code] ?? String(err.code);
  const e = err as { name?: string; code?: string | number; status?: number };
  if (e?.name === "AbortError") return "CLIENT_TIMEOUT";
  if (typeof e?.status === "number") return String(e.status);
  if (typeof e?.code === "string") return e.code;
  return "CLIENT_ERROR";
}

/** Builds the call function of a scenario, with what it holds open (channel, agent). */
export function makeCall(spec: ScenarioSpec): { call: Call; close(): void } {
  const def = SCENARIOS[spec.scenario];
  if (!def) throw new Error(`unknown scenario ${spec.scenario}`);
  const more = makeMoreCall(spec);
  if (more) return more;
  const id = (i: number) => spec.ids[i % spec.ids.length];
  const searchBody = (i: number) => ({
    likeImageId: id(i),
    limit: spec.k,
    ...(spec.tag !== undefined ? { filter: { tags: [spec.tag] } } : {}),
  });

  if (spec.target === "grpc") {
    const channel: Channel = createChannel(spec.address, undefined, spec.grpcOptions);
    const metadata = def.key === "none" ? Metadata() : Metadata({ authorization: `Bearer ${spec.key}` });
    const images = createClient(ImageServiceDefinition, channel, { "*": { metadata } });
    const health = createClient(HealthDefinition, channel);
    let call: Call;
    switch (spec.scenario) {
      case "grpc-noop":
        call = async (_i, signal) => {
          await health.check({ service: "" }, { signal });
        };
        break;
      case "get-image":
        call = async (i, signal) => {
          await images.getImage({ id: id(i), view: 0 }, { signal });
        };
        break;
      default:
        call = async (i, signal) => {
          const b = searchBody(i);
          const res = await images.searchImages(
            { query: { $case: "likeImageId", value: b.likeImageId }, limit: b.limit, filter: b.filter } as never,
            { signal },
          );
          if (res.results.length === 0) throw empty("results");
        };
    }
    return { call, close: () => channel.close() };
  }

  if (!def.http) throw new Error(`scenario ${spec.scenario} has no HTTP route`);
  const { request, close } = httpClient(spec.address, spec.key);
  const call: Call =
    spec.scenario === "get-image"
      ? async (i, signal) => {
          await request("GET", `/v1/images/${id(i)}`, undefined, signal);
        }
      : async (i, signal) => {
          const answer = await request("POST", "/v1/images:search", searchBody(i), signal);
          const parsed = JSON.parse(answer.toString("utf8")) as { results?: unknown[] };
          if (!parsed.results || parsed.results.length === 0) throw empty("results");
        };
  return { call, close };
}
