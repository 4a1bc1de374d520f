import { Worker } from "node:worker_threads";
import type hnswlib from "hnswlib-node";
import { chooseBuild, loadHnswlib, type HnswBuild, type HnswBuildChoice } from "./hnsw-addon.mjs";

/** A graph search's answer: image ids, best first as hnswlib orders them, and their distances (1 - inner product). */
export interface GraphHits {
  ids: BigInt64Array;
  distances: Float32Array;
}

/** HNSW build parameters of a new graph. */
export interface GraphShape {
  dimension: number;
  /** Which compiled hnswlib runs the graph (hnsw-addon.mjs); `auto` when unset. */
  build?: HnswBuildChoice;
  capacity: number;
  m: number;
  efConstruction: number;
}

/**
 * Where the HNSW graph lives: `inline` on the calling thread; `worker` on a thread of its own,
 * so that graph walks and inserts (up to a millisecond each) leave the event loop free and run
 * on another core. The server uses `worker`; tests and benchmarks that drive an index directly
 * may use either.
 */
export type GraphThread = "inline" | "worker";

/**
 * The HNSW graph of a VectorIndex (hnswlib, inner product), keyed by slot. Changes are applied
 * in the order they are made, and a search sees every change made before it was called, on
 * either thread. Each graph keeps its own slot -> id table, updated with its changes, so the
 * ids a search returns are those its slots held when it ran (a slot freed and reused while the
 * answer travels back cannot misname a result).
 */
export interface Graph {
  /** The compiled hnswlib the graph runs on. */
  readonly build: HnswBuild;
  /** Slots addressable now. */
  readonly capacity: number;
  /** Changes made but not yet known to be applied (always 0 inline). */
  readonly backlog: number;
  resize(capacity: number): void;
  /** Inserts a slot's vector, or replaces it (a deleted slot is un-deleted). */
  add(slot: number, id: bigint, vector: Float32Array): void;
  remove(slot: number): void;
  /** The k nearest (fewer when the filter passes fewer); `allowed`: one byte per slot, 1 to pass. */
  search(query: Float32Array, k: number, ef: number, allowed?: Uint8Array): Promise<GraphHits>;
  /** Writes the graph to `file` (hnswlib's format). */
  write(file: string): Promise<void>;
  /** Resolves once every change made before the call is applied. */
  settled(): Promise<void>;
  close(): void;
}

/** Opens a new, empty graph. */
export async function createGraph(thread: GraphThread, shape: GraphShape): Promise<Graph> {
  return thread === "worker" ? WorkerGraph.create(shape) : LocalGraph.create(shape);
}

/** Reads a graph written by `Graph.write`; `slotIds` is the slot table saved beside it. */
export async function readGraph(
  thread: GraphThread,
  dimension: number,
  file: string,
  slotIds: BigInt64Array,
  build: HnswBuildChoice,
): Promise<Graph> {
  return thread === "worker" ? WorkerGraph.read(dimension, file, slotIds, build) : LocalGraph.read(dimension, file, slotIds, build);
}

/** The graph on the calling thread. */
class LocalGraph implements Graph {
  readonly backlog = 0;
  private ids: BigInt64Array;

  private constructor(
    private readonly graph: hnswlib.HierarchicalNSW,
    readonly build: HnswBuild,
  ) {
    this.ids = new BigInt64Array(graph.getMaxElements());
  }

  static create(shape: GraphShape): LocalGraph {
    const { build, hnswlib } = loadHnswlib(shape.build);
    const graph = new hnswlib.HierarchicalNSW("ip", shape.dimension);
    graph.initIndex({ maxElements: shape.capacity, m: shape.m, efConstruction: shape.efConstruction });
    return new LocalGraph(graph, build);
  }

  static async read(dimension: number, file: string, slotIds: BigInt64Array, wanted: HnswBuildChoice): Promise<LocalGraph> {
    const { build, hnswlib } = loadHnswlib(wanted);
    const graph = new hnswlib.HierarchicalNSW("ip", dimension);
    await graph.readIndex(file);
    const local = new LocalGraph(graph, build);
    local.growIds(slotIds.length);
    local.ids.set(slotIds);
    return local;
  }

  get capacity(): number {
    return this.graph.getMaxElements();
  }

  resize(capacity: number): void {
    this.graph.resizeIndex(capacity);
    this.growIds(capacity);
  }

  add(slot: number, id: bigint, vector: Float32Array): void {
    this.graph.addPoint(Array.from(vector), slot);
    this.ids[slot] = id;
  }

  remove(slot: number): void {
    this.graph.markDelete(slot);
    this.ids[slot] = 0n;
  }

  async search(query: Float32Array, k: number, ef: number, allowed?: Uint8Array): Promise<GraphHits> {
    this.graph.setEf(ef);
    const filter = allowed ? (label: number) => allowed[label] === 1 : undefined;
    const result = this.graph.searchKnn(Array.from(query), k, filter);
    const n = result.neighbors.length;
    const ids = new BigInt64Array(n);
    for (let i = 0; i < n; i++) ids[i] = this.ids[result.neighbors[i]];
    return { ids, distances: Float32Array.from(result.distances) };
  }

  write(file: string): Promise<void> {
    return this.graph.writeIndex(file).then(() => undefined);
  }

  async settled(): Promise<void> {}

  close(): void {}

  private growIds(capacity: number): void {
    if (this.ids.length >= capacity) return;
    const grown = new BigInt64Array(capacity);
    grown.set(this.ids);
    this.ids = grown;
  }
}

/** What the graph thread answers: `re` names the request (0: a change that failed). */
interface Reply {
  re: number;
  error?: string;
  ids?: BigInt64Array;
  distances?: Float32Array;
  capacity?: number;
}

interface Pending {
  resolve(reply: Reply): void;
  reject(error: Error): void;
}

const WORKER_ENTRY = new URL("./graph-worker.mjs", import.meta.url);

/**
 * The graph on a thread of its own (graph-worker.mjs). Changes are posted without waiting
 * (postMessage keeps their order, and a search posted after them runs after them); `settled`
 * waits for them, which is how a rebuild or a long replay keeps the queue of posted vectors
 * short. Every array sent is a copy in a buffer of its own: a view into a larger buffer (the
 * kernel's memory, say) would otherwise be cloned whole.
 */
class WorkerGraph implements Graph {
  private readonly pending = new Map<number, Pending>();
  private nextRe = 1;
  private posted = 0;
  private settledAt = 0;
  private stopped: Error | undefined;

  private constructor(
    private readonly worker: Worker,
    public capacity: number,
    readonly build: HnswBuild,
  ) {
    worker.unref();
    worker.on("message", (reply: Reply) => this.answer(reply));
    worker.on("error", (error) => this.stop(error));
    worker.on("exit", (code) => this.stop(new Error(`exited with code ${code}`)));
  }

  /** The thread loads the build chosen here. */
  private static start(dimension: number, capacity: number, wanted: HnswBuildChoice | undefined): WorkerGraph {
    const build = chooseBuild(wanted);
    const worker = new Worker(WORKER_ENTRY, { workerData: { dimension, build }, name: "hnsw-graph" });
    return new WorkerGraph(worker, capacity, build);
  }

  static async create(shape: GraphShape): Promise<WorkerGraph> {
    const graph = WorkerGraph.start(shape.dimension, shape.capacity, shape.build);
    graph.post({ op: "init", maxElements: shape.capacity, m: shape.m, efConstruction: shape.efConstruction });
    await graph.settled();
    return graph;
  }

  static async read(dimension: number, file: string, slotIds: BigInt64Array, wanted: HnswBuildChoice): Promise<WorkerGraph> {
    const graph = WorkerGraph.start(dimension, 0, wanted);
    try {
      const reply = await graph.request({ op: "read", file, slotIds });
      graph.capacity = reply.capacity!;
      return graph;
    } catch (error) {
      graph.close();
      throw error;
    }
  }

  get backlog(): number {
    return this.posted - this.settledAt;
  }

  resize(capacity: number): void {
    this.post({ op: "resize", capacity });
    this.capacity = capacity;
  }

  add(slot: number, id: bigint, vector: Float32Array): void {
    const copy = new Float32Array(vector);
    this.post({ op: "add", slot, id, vector: copy }, [copy.buffer]);
  }

  remove(slot: number): void {
    this.post({ op: "delete", slot });
  }

  async search(query: Float32Array, k: number, ef: number, allowed?: Uint8Array): Promise<GraphHits> {
    const copy = new Float32Array(query);
    const mask = allowed?.slice();
    const transfer: ArrayBuffer[] = mask ? [copy.buffer, mask.buffer as ArrayBuffer] : [copy.buffer];
    const reply = await this.request({ op: "search", query: copy, k, ef, allowed: mask }, transfer);
    return { ids: reply.ids!, distances: reply.distances! };
  }

  async write(file: string): Promise<void> {
    await this.request({ op: "write", file });
  }

  async settled(): Promise<void> {
    const upTo = this.posted;
    await this.request({ op: "barrier" });
    this.settledAt = Math.max(this.settledAt, upTo);
  }

  /**
   * Stops the thread once it has applied what was posted before. Not `worker.terminate()`:
   * terminating the thread in the middle of an hnswlib call makes the addon throw into a
   * JavaScript engine that is shutting down, which Node answers with a fatal error that ends
   * the whole process. Searches fail from now on; the process does not wait for the thread.
   */
  close(): void {
    if (this.stopped) return;
    this.stop(new Error("closed"));
    this.worker.postMessage({ op: "close" });
    this.worker.unref();
  }

  private post(message: object, transfer?: ArrayBuffer[]): void {
    if (this.stopped) throw this.stoppedError();
    this.worker.postMessage(message, transfer);
    this.posted++;
  }

  private request(message: object, transfer?: ArrayBuffer[]): Promise<Reply> {
    if (this.stopped) return Promise.reject(this.stoppedError());
    const re = this.nextRe++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(re, { resolve, reject });
      if (this.pending.size === 1) this.worker.ref(); // the process waits for an answer
      this.worker.postMessage({ ...message, re }, transfer);
    });
  }

  private answer(reply: Reply): void {
    const pending = this.pending.get(reply.re);
    if (pending === undefined) {
      // A change that failed: nobody waits for it. It is skipped; the graph goes on.
      if (reply.error) process.emitWarning(`HNSW graph thread: ${reply.error}`, { code: "GLIMPSE_GRAPH_CHANGE" });
      return;
    }
    this.pending.delete(reply.re);
    if (this.pending.size === 0) this.worker.unref();
    if (reply.error) pending.reject(new Error(reply.error));
    else pending.resolve(reply);
  }

  private stop(cause: Error): void {
    if (this.stopped) return;
    this.stopped = cause;
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const p of waiting) p.reject(this.stoppedError());
  }

  private stoppedError(): Error {
    return new Error(`the HNSW graph thread stopped (${this.stopped?.message})`, { cause: this.stopped });
  }
}
