// The worker thread behind one tower (vision or text) of the embedding runtime. It owns the ONNX
// session, because onnxruntime-node runs a session synchronously on the calling thread: here it
// blocks only this thread, never the service's event loop. Requests arrive with their tensors
// as transferred ArrayBuffers, run one at a time in arrival order, and go back L2-normalised.
import { parentPort, workerData } from "node:worker_threads";
import ort from "onnxruntime-node";

/** Which half of the dual encoder a worker runs. */
export type Tower = "vision" | "text";

/** What the main thread tells a worker at start. */
export interface TowerWorkerData {
  tower: Tower;
  modelPath: string;
  intraOpThreads: number;
  interOpThreads: number;
  executionProvider: "cpu" | "cuda";
}

/** The shape facts of an opened tower, read from its session (or found by a probe run). */
export interface TowerInfo {
  inputName: string;
  /** The attention-mask input, when the text model has one. */
  maskName: string | null;
  outputName: string;
  /** Embedding size: the output's last dim, or found by a probe run when that is symbolic. */
  dimension: number;
  /** Vision: the image side (…x3xHxW); text: the context length. Null when symbolic. */
  inputLength: number | null;
  executionProvider: "cpu" | "cuda";
}

/** A request: the tower's main input (and the mask for text), `count` items long. */
export interface RunRequest {
  id: number;
  count: number;
  /** Float32 NCHW pixels (vision) or int64 token ids (text). */
  input: ArrayBuffer;
  /** Int64 attention mask (text only). */
  mask?: ArrayBuffer;
  /** Per-item shape of the input: [3, H, W] for vision, [context length] for text. */
  itemShape: number[];
}

/**
 * Messages the main thread sends: a request to run, or "close": finish what is queued, release
 * the session and end the thread. (Worker.terminate() is never used on a thread that may be
 * inside onnxruntime: stopping it there aborts the whole process.)
 */
export type WorkerRequest = ({ kind: "run" } & RunRequest) | { kind: "close" };

/** Messages a worker posts to the main thread. */
export type WorkerReply =
  | { kind: "ready"; info: TowerInfo }
  | { kind: "result"; id: number; embeddings: ArrayBuffer; dimension: number }
  | { kind: "error"; id: number; message: string }
  | { kind: "log"; level: "warn" | "info"; msg: string; fields?: Record<string, unknown> };

const DEFAULT_IMAGE_SIZE = 224;
const DEFAULT_CONTEXT_LENGTH = 77;

/** Names the tower's main input: the Hugging Face name, else the only input (besides a mask). */
export function chooseNames(
  tower: Tower,
  inputNames: readonly string[],
  outputNames: readonly string[],
): { inputName: string; maskName: string | null; outputName: string } {
  const [preferredInput, preferredOutput] =
    tower === "vision" ? ["pixel_values", "image_embeds"] : ["input_ids", "text_embeds"];
  const maskName = tower === "text" && inputNames.includes("attention_mask") ? "attention_mask" : null;
  const others = inputNames.filter((n) => n !== maskName);
  const inputName = inputNames.includes(preferredInput) ? preferredInput : others.length === 1 ? others[0] : undefined;
  if (inputName === undefined) {
    throw new Error(`${tower} model: no input named ${preferredInput}, and several inputs (${inputNames.join(", ")})`);
  }
  const outputName = outputNames.includes(preferredOutput)
    ? preferredOutput
    : outputNames.length === 1
      ? outputNames[0]
      : undefined;
  if (outputName === undefined) {
    throw new Error(`${tower} model: no output named ${preferredOutput}, and several outputs (${outputNames.join(", ")})`);
  }
  return { inputName, maskName, outputName };
}

/** Scales each `dimension`-long row of `data` to unit length in place; zero rows stay zero. */
export function normaliseRows(data: Float32Array, dimension: number): void {
  for (let start = 0; start < data.length; start += dimension) {
    let sum = 0;
    for (let i = start; i < start + dimension; i++) sum += data[i] * data[i];
    if (!(sum > 0)) continue;
    const scale = 1 / Math.sqrt(sum);
    for (let i = start; i < start + dimension; i++) data[i] *= scale;
  }
}

function metadataOf(session: ort.InferenceSession, name: string, list: "input" | "output") {
  const all = list === "input" ? session.inputMetadata : session.outputMetadata;
  const meta = all.find((m) => m.name === name);
  if (!meta?.isTensor) throw new Error(`${list} ${name} is not a tensor`);
  return meta;
}

const staticDim = (d: number | string | undefined): number | null => (typeof d === "number" && d > 0 ? d : null);

function post(reply: WorkerReply, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(reply, transfer);
}

async function openSession(data: TowerWorkerData): Promise<{ session: ort.InferenceSession; provider: "cpu" | "cuda" }> {
  const base: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: data.intraOpThreads,
    interOpNumThreads: data.interOpThreads,
    graphOptimizationLevel: "all",
    executionMode: "sequential",
  };
  if (data.executionProvider === "cuda") {
    try {
      const session = await ort.InferenceSession.create(data.modelPath, { ...base, executionProviders: ["cuda", "cpu"] });
      return { session, provider: "cuda" };
    } catch (error) {
      post({
        kind: "log",
        level: "warn",
        msg: "CUDA execution provider failed to start; running on CPU",
        fields: { tower: data.tower, error: String(error) },
      });
    }
  }
  const session = await ort.InferenceSession.create(data.modelPath, { ...base, executionProviders: ["cpu"] });
  return { session, provider: "cpu" };
}

/** Builds the feeds of one request, converting token ids when the model takes int32. */
function feedsOf(
  session: ort.InferenceSession,
  tower: Tower,
  info: TowerInfo,
  request: RunRequest,
): Record<string, ort.Tensor> {
  const dims = [request.count, ...request.itemShape];
  const ids = (name: string, buffer: ArrayBuffer) => {
    const values = new BigInt64Array(buffer);
    const wanted = (metadataOf(session, name, "input") as ort.InferenceSession.TensorValueMetadata).type;
    if (wanted === "int32") return new ort.Tensor("int32", Int32Array.from(values, Number), dims);
    return new ort.Tensor("int64", values, dims);
  };
  if (tower === "vision") {
    return { [info.inputName]: new ort.Tensor("float32", new Float32Array(request.input), dims) };
  }
  const feeds = { [info.inputName]: ids(info.inputName, request.input) };
  if (info.maskName !== null && request.mask !== undefined) feeds[info.maskName] = ids(info.maskName, request.mask);
  return feeds;
}

/** Runs one request and returns its embeddings, normalised, as one [count, dimension] array. */
async function embed(session: ort.InferenceSession, tower: Tower, info: TowerInfo, request: RunRequest): Promise<Float32Array> {
  const outputs = await session.run(feedsOf(session, tower, info, request), [info.outputName]);
  const output = outputs[info.outputName];
  if (output.type !== "float32") throw new Error(`output ${info.outputName} is ${output.type}, expected float32`);
  // Copy: the output may be a view of memory the session owns, and this buffer is transferred.
  const data = new Float32Array(output.data as Float32Array);
  if (data.length !== request.count * info.dimension) {
    throw new Error(`output ${info.outputName} has shape [${output.dims.join(",")}], expected ${request.count} x ${info.dimension}`);
  }
  normaliseRows(data, info.dimension);
  return data;
}

/** Finds the embedding size by running one all-zero item (used when the output shape is symbolic). */
async function probeDimension(session: ort.InferenceSession, info: TowerInfo, tower: Tower): Promise<number> {
  const length = info.inputLength ?? (tower === "vision" ? DEFAULT_IMAGE_SIZE : DEFAULT_CONTEXT_LENGTH);
  const itemShape = tower === "vision" ? [3, length, length] : [length];
  const size = itemShape.reduce((a, b) => a * b, 1);
  const request: RunRequest =
    tower === "vision"
      ? { id: 0, count: 1, itemShape, input: new Float32Array(size).buffer }
      : { id: 0, count: 1, itemShape, input: new BigInt64Array(size).buffer, mask: new BigInt64Array(size).fill(1n).buffer };
  const outputs = await session.run(feedsOf(session, tower, info, request), [info.outputName]);
  return outputs[info.outputName].data.length;
}

async function main(): Promise<void> {
  const data = workerData as TowerWorkerData;
  ort.env.logLevel = "error";
  const { session, provider } = await openSession(data);
  const names = chooseNames(data.tower, session.inputNames, session.outputNames);
  const input = metadataOf(session, names.inputName, "input") as ort.InferenceSession.TensorValueMetadata;
  const output = metadataOf(session, names.outputName, "output") as ort.InferenceSession.TensorValueMetadata;
  const info: TowerInfo = {
    ...names,
    dimension: 0,
    // Vision: …x3xHxW, the side from the last dim; text: [batch, context].
    inputLength: staticDim(input.shape[input.shape.length - 1]),
    executionProvider: provider,
  };
  info.dimension = staticDim(output.shape[output.shape.length - 1]) ?? (await probeDimension(session, info, data.tower));

  // One request at a time, in arrival order: each waits for the one before it.
  let previous = Promise.resolve();
  parentPort!.on("message", (request: WorkerRequest) => {
    if (request.kind === "close") {
      previous = previous.then(async () => {
        await session.release();
        process.exit(0); // in a worker thread this ends the thread only
      });
      return;
    }
    previous = previous.then(async () => {
      try {
        const embeddings = await embed(session, data.tower, info, request);
        post({ kind: "result", id: request.id, embeddings: embeddings.buffer as ArrayBuffer, dimension: info.dimension }, [
          embeddings.buffer as ArrayBuffer,
        ]);
      } catch (error) {
        post({ kind: "error", id: request.id, message: error instanceof Error ? error.message : String(error) });
      }
    });
  });
  post({ kind: "ready", info });
}

// Only as a worker thread: imported anywhere else (tests of its pure functions) it does nothing.
if (parentPort !== null) await main();
