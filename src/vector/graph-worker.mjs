// The thread that owns an HNSW graph (src/vector/graph.ts, WorkerGraph): it applies the
// inserts and deletes it is sent, in the order sent, and answers searches between them, so a
// search sees exactly the changes posted before it. Plain JavaScript: a worker thread does not
// inherit the TypeScript loader of the thread that started it, and this file is small.
//
// A snapshot write runs on libuv's pool while this thread goes on answering searches (both only
// read the graph); changes that arrive meanwhile wait until the write is done.
import { parentPort, workerData } from "node:worker_threads";
import { loadBuild } from "./hnsw-addon.mjs";

/**
 * `replies`: where answers go; `answered`: a shared counter bumped after each answer, which the
 * main thread may poll instead of waiting for its event loop (WorkerGraph.takeAnswers).
 * @type {{ dimension: number, build: "avx2" | "baseline", replies: MessagePort, answered: Int32Array }}
 */
const { dimension, build, replies, answered } = workerData;
const hnswlib = loadBuild(build);
const graph = new hnswlib.HierarchicalNSW("ip", dimension);
/** slot -> image id, as of the changes applied so far; 0n marks a free slot. */
let ids = new BigInt64Array(0);
/** A snapshot write or read is running on libuv's pool. */
let busy = false;
/** Changes (and barriers) that arrived during a snapshot write or read, applied after it. */
const waiting = [];

function resizeIds(capacity) {
  if (ids.length >= capacity) return;
  const grown = new BigInt64Array(capacity);
  grown.set(ids);
  ids = grown;
}

function reply(message, transfer) {
  replies.postMessage(message, transfer);
  Atomics.add(answered, 0, 1);
}

function fail(re, error) {
  reply({ re, error: error instanceof Error ? error.message : String(error) });
}

/** Applies one change; a failure is reported to the owner (which logs it) and skipped. */
function change(message) {
  try {
    switch (message.op) {
      case "init":
        graph.initIndex({ maxElements: message.maxElements, m: message.m, efConstruction: message.efConstruction });
        resizeIds(message.maxElements);
        break;
      case "resize":
        graph.resizeIndex(message.capacity);
        resizeIds(message.capacity);
        break;
      case "add":
        // A deleted label is updated in place and un-deleted (how freed slots are reused).
        graph.addPoint(Array.from(message.vector), message.slot);
        ids[message.slot] = message.id;
        break;
      case "delete":
        graph.markDelete(message.slot);
        ids[message.slot] = 0n;
        break;
      case "barrier":
        reply({ re: message.re });
        break;
      case "close":
        // Between hnswlib calls, so nothing native is running: the thread ends once idle.
        parentPort.close();
        replies.close();
        break;
    }
  } catch (error) {
    reply({ re: message.re ?? 0, error: `${message.op} of slot ${message.slot ?? "-"} failed: ${error.message}` });
  }
}

function search({ re, query, k, ef, allowed }) {
  try {
    graph.setEf(ef);
    const filter = allowed ? (label) => allowed[label] === 1 : undefined;
    const started = performance.now();
    const result = graph.searchKnn(Array.from(query), k, filter);
    const walkMs = performance.now() - started;
    const n = result.neighbors.length;
    const found = new BigInt64Array(n);
    const distances = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      found[i] = ids[result.neighbors[i]];
      distances[i] = result.distances[i];
    }
    reply({ re, ids: found, distances, walkMs }, [found.buffer, distances.buffer]);
  } catch (error) {
    fail(re, error);
  }
}

/** Runs a snapshot write or read; what arrives meanwhile (but searches) waits for it. */
async function file(message) {
  busy = true;
  try {
    if (message.op === "write") {
      await graph.writeIndex(message.file);
      reply({ re: message.re });
    } else {
      await graph.readIndex(message.file);
      const capacity = graph.getMaxElements();
      ids = new BigInt64Array(Math.max(capacity, message.slotIds.length));
      ids.set(message.slotIds);
      reply({ re: message.re, capacity });
    }
  } catch (error) {
    fail(message.re, error);
  } finally {
    busy = false;
  }
  while (waiting.length > 0 && !busy) dispatch(waiting.shift());
}

function dispatch(message) {
  if (message.op === "search") return search(message);
  if (busy) return void waiting.push(message);
  if (message.op === "write" || message.op === "read") return void file(message);
  change(message);
}

parentPort.on("message", dispatch);
