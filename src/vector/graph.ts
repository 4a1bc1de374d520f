import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from "node:worker_threads";
import type hnswlib from "hnswlib-node";
import { chooseBuild, loadHnswlib, type HnswBuild, type HnswBuildChoice } from "./hnsw-addon.mjs";

/** A graph search's answer: image ids, best first as hnswlib orders them, and their distances (1 - inner product). */
export interface GraphHits {
  ids: BigInt64Array;
  distances: Float32Array;
  /** How long hnswlib's walk itself took, in ms, timed on the thread that ran it. */
  walkMs: number;
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
 * What a graph on its own thread knows of the process around it, to spare a lone caller the
 * wake-up of the main thread a hand-off costs (a few tenths of a millisecond on a virtual
 * machine): when nothing else runs, the main thread polls for the walk's answer instead of
 * sleeping until it comes. With UNKNOWN_PACE the graph never polls.
 */
export interface GraphPace {
  /** Calls the server is running now, the caller's own included. */
  callsRunning(): number;
}

/** A process whose load is not known (tests, benchmarks): never quiet, so never polled for. */
export const UNKNOWN_PACE: GraphPace = { callsRunning: () => Number.POSITIVE_INFINITY };

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
  /** Searches and other requests whose answer has not been taken yet (always 0 inline). */
  readonly awaited: number;
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
export async function createGraph(thread: GraphThread, shape: GraphShape, pace: GraphPace): Promise<Graph> {
  return thread === "worker" ? WorkerGraph.create(shape, pace) : LocalGraph.create(shape);
}

/** Reads a graph written by `Graph.write`; `slotIds` is the slot table saved beside it. */
export async function readGraph(
  thread: GraphThread,
  dimension: number,
  file: string,
  slotIds: BigInt64Array,
  build: HnswBuildChoice,
  pace: GraphPace,
): Promise<Graph> {
  return thread === "worker"
    ? WorkerGraph.read(dimension, file, slotIds, build, pace)
    : LocalGraph.read(dimension, file, slotIds, build);
}

/** The graph on the calling thread. */
class LocalGraph implements Graph {
  readonly backlog = 0;
  readonly awaited = 0;
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
    const started = performance.now();
    const result = this.graph.searchKnn(Array.from(query), k, filter);
    const walkMs = performance.now() - started;
    const n = result.neighbors.length;
    const ids = new BigInt64Array(n);
    for (let i = 0; i < n; i++) ids[i] = this.ids[result.neighbors[i]];
    return { ids, distances: Float32Array.from(result.distances), walkMs };
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

/** How long the main thread waits for a lone walk's answer without sleeping, at most. */
const ANSWER_SPIN_MS = 3;
/** Event-loop idle time (ms) since the last walk's answer that marks the process as not busy. */
const QUIET_IDLE_MS = 0.2;

/** What the graph thread answers: `re` names the request (0: a change that failed). */
interface Reply {
  re: number;
  error?: string;
  ids?: BigInt64Array;
  distances?: Float32Array;
  walkMs?: number;
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
 * kernel's memory, say) would otherwise be cloned whole. Answers come back on a channel of
 * their own, with a shared counter bumped after each, so that the main thread can take one
 * without returning to the event loop (see GraphPace).
 */
class WorkerGraph implements Graph {
  private readonly pending = new Map<number, Pending>();
  private nextRe = 1;
  private posted = 0;
  private settledAt = 0;
  private stopped: Error | undefined;
  /** The event loop's idle time (ms, cumulative) when the last walk's answer was taken. */
  private idleAtAnswer = 0;

  private constructor(
    private readonly worker: Worker,
    /** Where the thread's answers arrive. */
    private readonly replies: MessagePort,
    /** Bumped by the thread after each answer it posts. */
    private readonly answered: Int32Array,
    public capacity: number,
    readonly build: HnswBuild,
    private readonly pace: GraphPace,
  ) {
    worker.unref();
    replies.unref();
    replies.on("message", (reply: Reply) => this.answer(reply));
    worker.on("error", (error) => this.stop(error));
    worker.on("exit", (code) => this.stop(new Error(`exited with code ${code}`)));
  }

  /** The thread loads the build chosen here. */
  private static start(
    dimension: number,
    capacity: number,
    wanted: HnswBuildChoice | undefined,
    pace: GraphPace,
  ): WorkerGraph {
    const build = chooseBuild(wanted);
    const channel = new MessageChannel();
    const answered = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(WORKER_ENTRY, {
      workerData: { dimension, build, replies: channel.port2, answered },
      transferList: [channel.port2],
      name: "hnsw-graph",
    });
    return new WorkerGraph(worker, channel.port1, answered, capacity, build, pace);
  }

  static async create(shape: GraphShape, pace: GraphPace): Promise<WorkerGraph> {
    const graph = WorkerGraph.start(shape.dimension, shape.capacity, shape.build, pace);
    graph.post({ op: "init", maxElements: shape.capacity, m: shape.m, efConstruction: shape.efConstruction });
    await graph.settled();
    return graph;
  }

  static async read(
    dimension: number,
    file: string,
    slotIds: BigInt64Array,
    wanted: HnswBuildChoice,
    pace: GraphPace,
  ): Promise<WorkerGraph> {
    const graph = WorkerGraph.start(dimension, 0, wanted, pace);
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

  get awaited(): number {
    return this.pending.size;
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
    const quiet = this.quiet();
    const seen = Atomics.load(this.answered, 0);
    const reply = this.request({ op: "search", query: copy, k, ef, allowed: mask }, transfer);
    if (quiet) this.takeAnswers(seen);
    const { ids, distances, walkMs } = await reply;
    return { ids: ids!, distances: distances!, walkMs: walkMs! };
  }

  /**
   * Nothing else waits for this thread: only one call runs, no walk is out, and the event loop
   * slept since the last walk was answered (under load it never does, though a call may for a
   * moment be the only one admitted while others wait unread in their sockets).
   */
  private quiet(): boolean {
    if (this.pending.size > 0 || this.pace.callsRunning() > 1) return false;
    return performance.eventLoopUtilization().idle - this.idleAtAnswer >= QUIET_IDLE_MS;
  }

  /**
   * Takes the thread's answers as they are posted, without returning to the event loop, until
   * none is awaited or ANSWER_SPIN_MS have passed (a long walk is then answered as usual).
   */
  private takeAnswers(seen: number): void {
    const until = performance.now() + ANSWER_SPIN_MS;
    while (this.pending.size > 0 && performance.now() < until) {
      const now = Atomics.load(this.answered, 0);
      if (now === seen) continue;
      seen = now;
      for (let got = receiveMessageOnPort(this.replies); got; got = receiveMessageOnPort(this.replies)) {
        this.answer(got.message as Reply);
      }
    }
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
      if (this.pending.size === 1) this.replies.ref(); // the process waits for an answer
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
    if (reply.ids) this.idleAtAnswer = performance.eventLoopUtilization().idle;
    if (this.pending.size === 0) this.replies.unref();
    if (reply.error) pending.reject(new Error(reply.error));
    else pending.resolve(reply);
  }

  private stop(cause: Error): void {
    if (this.stopped) return;
    this.stopped = cause;
    this.replies.close();
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const p of waiting) p.reject(this.stoppedError());
  }

  private stoppedError(): Error {
    return new Error(`the HNSW graph thread stopped (${this.stopped?.message})`, { cause: this.stopped });
  }
}
