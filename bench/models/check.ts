/**
 * Opens the CLIP ONNX towers of a model directory with onnxruntime-node, checks their
 * inputs, outputs and (for a directory from make-clip-b32.sh) their embeddings against the
 * ones torch computed, and times image and text batches on 2 intra-op threads.
 *
 *   node --import tsx bench/models/check.ts bench/models/clip-b32-random [--seconds 5]
 *
 * Throughput of random weights is what real weights of the same layout cost; the embeddings
 * themselves mean nothing.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";

const THREADS = 2;
const IMAGE_BATCHES = [1, 4, 16];
const TEXT_BATCHES = [1, 16];
const CONTEXT = 77;
const EMBED_DIM = 512;
const REFERENCE_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]; // "a photo of a cat"

// Kept apart from ../lib.ts, which loads the whole app: this check needs only onnxruntime.
function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function startTimer(): () => number {
  const start = process.hrtime.bigint();
  return () => Number(process.hrtime.bigint() - start) / 1e6;
}

/** What make-clip-b32.py records beside the models (random-model.json). */
interface RandomModelInfo {
  vision_parameters: number;
  text_parameters: number;
  reference: {
    image_embeds_head: number[];
    image_embeds_norm: number;
    text_embeds_head: number[];
    text_embeds_norm: number;
  };
}

type Tower = "vision" | "text";

interface ModelFile {
  tower: Tower;
  file: string;
  quantized: boolean;
}

const MODEL_FILES: ModelFile[] = [
  { tower: "vision", file: "vision_model.onnx", quantized: false },
  { tower: "vision", file: "vision_model_quantized.onnx", quantized: true },
  { tower: "text", file: "text_model.onnx", quantized: false },
  { tower: "text", file: "text_model_quantized.onnx", quantized: true },
];

/** pixel_values of the reference image: ((c*224*224 + y*224 + x) mod 251) / 125 - 1. */
function referencePixels(): ort.Tensor {
  const data = new Float32Array(3 * 224 * 224);
  for (let i = 0; i < data.length; i++) data[i] = (i % 251) / 125 - 1;
  return new ort.Tensor("float32", data, [1, 3, 224, 224]);
}

/** input_ids and attention_mask for `batch` captions of the given token counts (BOS..EOT). */
function textInputs(lengths: readonly number[]): Record<string, ort.Tensor> {
  const batch = lengths.length;
  const ids = new BigInt64Array(batch * CONTEXT);
  const mask = new BigInt64Array(batch * CONTEXT);
  lengths.forEach((length, b) => {
    for (let t = 0; t < length; t++) {
      // Reference caption tokens, repeated to fill longer captions; EOT last.
      const id = t === 0 ? 49406 : t === length - 1 ? 49407 : REFERENCE_IDS[1 + ((t - 1) % 5)];
      ids[b * CONTEXT + t] = BigInt(id);
      mask[b * CONTEXT + t] = 1n;
    }
  });
  return {
    input_ids: new ort.Tensor("int64", ids, [batch, CONTEXT]),
    attention_mask: new ort.Tensor("int64", mask, [batch, CONTEXT]),
  };
}

/** Deterministic pseudo-random pixel values in [-2, 2], roughly what normalised photos span. */
function imageInputs(batch: number): Record<string, ort.Tensor> {
  const data = new Float32Array(batch * 3 * 224 * 224);
  let state = 12345;
  for (let i = 0; i < data.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    data[i] = (state / 2 ** 32) * 4 - 2;
  }
  return { pixel_values: new ort.Tensor("float32", data, [batch, 3, 224, 224]) };
}

function describe(metadata: readonly ort.InferenceSession.ValueMetadata[]): string {
  return metadata
    .map((m) => (m.isTensor ? `${m.name} ${m.type} [${m.shape.join(",")}]` : `${m.name} (not a tensor)`))
    .join(", ");
}

function mib(bytes: number): string {
  return `${round(bytes / 2 ** 20, 1)} MiB`;
}

/** Largest absolute difference between `got`'s first values and `want`, and the norms. */
function compare(got: Float32Array, wantHead: number[], wantNorm: number): string {
  const row = got.subarray(0, EMBED_DIM);
  const maxDiff = Math.max(...wantHead.map((w, i) => Math.abs(w - row[i])));
  const norm = Math.sqrt(row.reduce((s, v) => s + v * v, 0));
  const ok = maxDiff <= 1e-3 * Math.max(1, wantNorm) && Math.abs(norm - wantNorm) <= 1e-3 * wantNorm;
  return `${ok ? "matches" : "DIFFERS FROM"} torch (max |diff| ${maxDiff.toExponential(2)} over the first ${wantHead.length}, norm ${round(norm, 4)} vs ${wantNorm})`;
}

/**
 * Runs `feeds` until `seconds` have passed (at least 3 runs) after 2 warm-up runs.
 * `coresBusy` is the process's CPU time over the wall time: about THREADS on an idle machine,
 * well below it when other load held the threads back (and the figures are then low).
 */
async function throughput(
  session: ort.InferenceSession,
  feeds: Record<string, ort.Tensor>,
  batch: number,
  seconds: number,
): Promise<{ perSecond: number; msPerBatch: number; coresBusy: number; runs: number }> {
  for (let i = 0; i < 2; i++) await session.run(feeds);
  const cpuBefore = process.cpuUsage();
  const elapsed = startTimer();
  let runs = 0;
  while (runs < 3 || elapsed() < seconds * 1000) {
    await session.run(feeds);
    runs++;
  }
  const ms = elapsed();
  const cpu = process.cpuUsage(cpuBefore);
  const coresBusy = (cpu.user + cpu.system) / 1000 / ms;
  return { perSecond: (runs * batch * 1000) / ms, msPerBatch: ms / runs, coresBusy, runs };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { seconds: { type: "string", default: "5" } },
  });
  const dir = positionals[0];
  const seconds = Number(values.seconds);
  if (!dir || !(seconds > 0)) {
    console.error("usage: node --import tsx bench/models/check.ts <model dir> [--seconds 5]");
    process.exit(2);
  }
  const infoPath = path.join(dir, "random-model.json");
  const info: RandomModelInfo | undefined = existsSync(infoPath)
    ? (JSON.parse(readFileSync(infoPath, "utf8")) as RandomModelInfo)
    : undefined;

  const options: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: THREADS,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
  };
  console.log(`${dir}: onnxruntime-node ${ort.env.versions.node}, ${THREADS} intra-op threads, ${seconds} s per series`);

  let failed = false;
  for (const model of MODEL_FILES) {
    const file = path.join(dir, model.file);
    if (!existsSync(file)) {
      if (!model.quantized) {
        console.error(`\n${model.file}: missing`);
        failed = true;
      } else {
        console.log(`\n${model.file}: not present, skipped`);
      }
      continue;
    }
    const bytes = statSync(file).size;
    const openTime = startTimer();
    const session = await ort.InferenceSession.create(file, options);
    console.log(`\n${model.file}: ${mib(bytes)}, opened in ${round(openTime() / 1000, 1)} s`);
    console.log(`  inputs:  ${describe(session.inputMetadata)}`);
    console.log(`  outputs: ${describe(session.outputMetadata)}`);
    const parameters = model.tower === "vision" ? info?.vision_parameters : info?.text_parameters;
    if (parameters !== undefined) {
      const perParameter = model.quantized ? 1 : 4;
      console.log(
        `  parameters: ${(parameters / 1e6).toFixed(2)}M; x ${perParameter} bytes = ${mib(parameters * perParameter)} ` +
          `(file is ${(bytes / (parameters * perParameter)).toFixed(3)}x that)`,
      );
    }

    const outputName = model.tower === "vision" ? "image_embeds" : "text_embeds";
    const referenceFeeds = model.tower === "vision" ? { pixel_values: referencePixels() } : textInputs([REFERENCE_IDS.length]);
    const reference = (await session.run(referenceFeeds))[outputName];
    if (!reference || reference.dims.join(",") !== `1,${EMBED_DIM}`) {
      console.error(`  ${outputName}: expected shape [1,${EMBED_DIM}], got [${reference?.dims.join(",")}]`);
      failed = true;
      continue;
    }
    if (info && !model.quantized) {
      const [head, norm] =
        model.tower === "vision"
          ? [info.reference.image_embeds_head, info.reference.image_embeds_norm]
          : [info.reference.text_embeds_head, info.reference.text_embeds_norm];
      const verdict = compare(reference.data as Float32Array, head, norm);
      console.log(`  reference ${outputName}: ${verdict}`);
      if (verdict.startsWith("DIFFERS")) failed = true;
    }

    const batches = model.tower === "vision" ? IMAGE_BATCHES : TEXT_BATCHES;
    for (const batch of batches) {
      // Caption lengths vary; the graph always runs over all 77 positions.
      const feeds =
        model.tower === "vision" ? imageInputs(batch) : textInputs(Array.from({ length: batch }, (_, i) => 5 + ((i * 7) % 20)));
      const out = (await session.run(feeds))[outputName];
      if (out.dims.join(",") !== `${batch},${EMBED_DIM}`) {
        console.error(`  batch ${batch}: ${outputName} has shape [${out.dims.join(",")}]`);
        failed = true;
        continue;
      }
      const t = await throughput(session, feeds, batch, seconds);
      const unit = model.tower === "vision" ? "images/s" : "texts/s";
      console.log(
        `  batch ${String(batch).padStart(2)}: ${round(t.perSecond, 1)} ${unit}, ${round(t.msPerBatch, 1)} ms/batch, ` +
          `${round(t.coresBusy, 2)} cores busy (${t.runs} runs)`,
      );
    }
    await session.release();
  }
  if (failed) process.exit(1);
}

await main();
