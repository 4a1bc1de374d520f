/**
 * What each scenario sends, over gRPC and (where the bridge has a route) HTTP/JSON. A scenario
 * turns a call number into one request; its outcome is "OK" or a status name (gRPC: the status
 * code's name; HTTP: the status code).
 */
import * as grpc from "@grpc/grpc-js";
import { ClientError, Status } from "nice-grpc";
import { HealthDefinition } from "nice-grpc-server-health";
import {
  GetImageRequest,
  GetImageResponse,
  ImageServiceDefinition,
  SearchImagesRequest,
  SearchImagesResponse,
} from "../../src/gen/glimpse/image/v1/image_service.js";
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

/** One call of a scenario: call number i, answered or failed within timeoutMs. */
export type Call = (i: number, timeoutMs: number) => Promise<void>;
/** A call that is cancelled through its signal. */
export type SignalCall = (i: number, signal: AbortSignal) => Promise<void>;

/** Call outcome name of a thrown error. */
export function outcomeOf(err: unknown): string {
  if (err instanceof ClientError) return Status[err.code] ?? String(err.code);
  // A grpc-js ServiceError (the lean client below): a numeric status code and its metadata.
  if (typeof (err as grpc.ServiceError)?.code === "number" && (err as grpc.ServiceError).metadata) {
    const code = (err as grpc.ServiceError).code;
    return Status[code] ?? String(code);
  }
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
    const client = new LeanClient(spec.address, def.key === "none" ? undefined : spec.key, spec.grpcOptions);
    let call: Call;
    switch (spec.scenario) {
      case "grpc-noop": {
        const path = methodPath(HealthDefinition, "check");
        const request = Buffer.from(HealthDefinition.methods.check.requestType.encode({ service: "" }).finish());
        call = async (_i, timeoutMs) => {
          await client.unary(path, request, timeoutMs);
        };
        break;
      }
      case "get-image": {
        const path = methodPath(ImageServiceDefinition, "getImage");
        call = async (i, timeoutMs) => {
          const answer = await client.unary(path, encode(GetImageRequest, { id: id(i), view: 0 }), timeoutMs);
          if (!GetImageResponse.decode(answer).image) throw empty("image");
        };
        break;
      }
      default: {
        const path = methodPath(ImageServiceDefinition, "searchImages");
        call = async (i, timeoutMs) => {
          const b = searchBody(i);
          const request = encode(SearchImagesRequest, {
            query: { $case: "likeImageId", value: b.likeImageId },
            limit: b.limit,
            filter: b.filter,
          } as never);
          const res = SearchImagesResponse.decode(await client.unary(path, request, timeoutMs));
          if (res.results.length === 0) throw empty("results");
        };
      }
    }
    return { call, close: () => client.close() };
  }

  if (!def.http) throw new Error(`scenario ${spec.scenario} has no HTTP route`);
  const { request, close } = httpClient(spec.address, spec.key);
  const call: Call =
    spec.scenario === "get-image"
      ? async (i, timeoutMs) => {
          await request("GET", `/v1/images/${id(i)}`, undefined, AbortSignal.timeout(timeoutMs));
        }
      : async (i, timeoutMs) => {
          const answer = await request("POST", "/v1/images:search", searchBody(i), AbortSignal.timeout(timeoutMs));
          const parsed = JSON.parse(answer.toString("utf8")) as { results?: unknown[] };
          if (!parsed.results || parsed.results.length === 0) throw empty("results");
        };
  return { call, close };
}

/**
 * The gRPC client of the hot scenarios (grpc-noop, get-image, search-*): grpc-js's own unary
 * call on bytes the scenario encodes and decodes with the generated code, with the per-call
 * timeout as the call's deadline. It spends a fraction of nice-grpc's client time per call (no
 * async-generator layers, no AbortSignal per call), which on a machine the load shares with the
 * server leaves more of the cores to the server. The answers are still decoded and checked.
 */
class LeanClient {
  private readonly client: grpc.Client;
  private readonly metadata = new grpc.Metadata();

  constructor(address: string, key: string | undefined, options?: Record<string, number>) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure(), options);
    if (key !== undefined) this.metadata.set("authorization", `Bearer ${key}`);
  }

  unary(path: string, request: Buffer, timeoutMs: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        path,
        identity,
        identity,
        request,
        this.metadata,
        { deadline: Date.now() + timeoutMs },
        (err: grpc.ServiceError | null, answer?: Buffer) => (err ? reject(err) : resolve(answer!)),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

const identity = (bytes: Buffer) => bytes;

function methodPath(service: { fullName: string; methods: Record<string, { name: string }> }, method: string): string {
  return `/${service.fullName}/${service.methods[method].name}`;
}

/** The request's bytes; unset fields take their defaults, as nice-grpc's fromPartial gives them. */
function encode<T>(type: { encode(message: T): { finish(): Uint8Array }; fromPartial(partial: never): T }, message: T): Buffer {
  const bytes = type.encode(type.fromPartial(message as never)).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
