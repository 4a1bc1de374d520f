// The CLIP-shaped test model that the embedding tests stand on: its files are in CLIP's layout,
// the project's tokenizer reads its vocabulary, and its two graphs compute what it promises.
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClipTokenizer } from "../../src/embedding/tokenizer.js";
import {
  BIAS,
  COMMON_WORDS,
  TEST_COLOURS,
  colourDirection,
  solidPixels,
  writeClipTestModel,
} from "../fixtures/clip-test-model.js";

let root: string;
let dir: string;
let plainDir: string;

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "glimpse-test-model-"));
  dir = path.join(root, "full");
  plainDir = path.join(root, "plain");
  await writeClipTestModel(dir);
  await writeClipTestModel(plainDir, { plain: true });
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function readVocab(modelDir: string): Promise<Record<string, number>> {
  return JSON.parse(await readFile(path.join(modelDir, "vocab.json"), "utf8")) as Record<string, number>;
}

/** The expected raw (unnormalised) embedding of a colour. */
function expected(rgb: { r: number; g: number; b: number }, dimension = 8): number[] {
  const out = new Array<number>(dimension).fill(0);
  out.splice(0, 4, ...colourDirection(rgb), BIAS);
  return out;
}

describe("CLIP test model files", () => {
  it("lays out vocab.json and merges.txt as CLIP does", async () => {
    expect((await readdir(dir)).sort()).toEqual(["merges.txt", "text_model.onnx", "vision_model.onnx", "vocab.json"]);
    const vocab = await readVocab(dir);
    const merges = (await readFile(path.join(dir, "merges.txt"), "utf8")).trimEnd().split("\n");
    expect(merges[0]).toBe("#version: 0.2");
    const rules = merges.slice(1);
    const size = Object.keys(vocab).length;
    expect(size).toBe(256 + 256 + rules.length + 2);
    // Ids run 0..size-1, written in id order as in CLIP's own vocab.json.
    expect(Object.values(vocab).sort((a, b) => a - b)).toEqual([...Array(size).keys()]);
    expect(await readFile(path.join(dir, "vocab.json"), "utf8")).toMatch(/^\{"!":0,"\\"":1,"#":2,/);
    expect(vocab["!"]).toBe(0);
    expect(vocab["!</w>"]).toBe(256);
    rules.forEach((rule, i) => expect(vocab[rule.replace(" ", "")]).toBe(512 + i));
    expect(vocab["<|startoftext|>"]).toBe(size - 2);
    expect(vocab["<|endoftext|>"]).toBe(size - 1);
  });

  it("gives every colour word and the common prompt words a single token with the project's tokenizer", async () => {
    const tokenizer = await ClipTokenizer.fromDirectory(dir);
    const vocab = await readVocab(dir);
    for (const word of [...Object.keys(TEST_COLOURS), ...COMMON_WORDS, "a"]) {
      expect(tokenizer.encode(word), word).toEqual([tokenizer.startToken, vocab[`${word}</w>`], tokenizer.endToken]);
    }
    expect(tokenizer.encode("A photo of a RED square.")).toEqual([
      tokenizer.startToken,
      ...["a", "photo", "of", "a", "red", "square"].map((w) => vocab[`${w}</w>`]),
      vocab[".</w>"],
      tokenizer.endToken,
    ]);
  });

  it("writes the same files from the command line", async () => {
    const out = path.join(root, "cli");
    const script = path.resolve(import.meta.dirname, "../../scripts/make-test-model.ts");
    await promisify(execFile)(process.execPath, ["--import", "tsx", script, out, "--plain"]);
    for (const file of ["vision_model.onnx", "text_model.onnx", "vocab.json", "merges.txt"]) {
      expect(await readFile(path.join(out, file))).toEqual(await readFile(path.join(plainDir, file)));
    }
  });
});

describe("CLIP test model graphs", () => {
  it("embeds an image as its centred mean colour plus the bias component", async () => {
    const session = await ort.InferenceSession.create(path.join(dir, "vision_model.onnx"));
    expect(session.inputNames).toEqual(["pixel_values"]);
    expect(session.outputNames).toEqual(["image_embeds"]);
    const colours = [TEST_COLOURS.red, TEST_COLOURS.grey, TEST_COLOURS.orange];
    const pixels = solidPixels(colours);
    const { image_embeds } = await session.run({ pixel_values: new ort.Tensor("float32", pixels, [3, 3, 224, 224]) });
    expect(image_embeds.dims).toEqual([3, 8]);
    const rows = Array.from({ length: 3 }, (_, i) => Array.from((image_embeds.data as Float32Array).slice(i * 8, i * 8 + 8)));
    rows.forEach((row, i) => row.forEach((v, j) => expect(v).toBeCloseTo(expected(colours[i])[j], 4)));
    await session.release();
  });

  it("embeds a text as the sum of its colour words plus the bias component, honouring the mask", async () => {
    const session = await ort.InferenceSession.create(path.join(dir, "text_model.onnx"));
    expect(session.inputNames).toEqual(["input_ids", "attention_mask"]);
    expect(session.outputNames).toEqual(["text_embeds"]);
    const tokenizer = await ClipTokenizer.fromDirectory(dir);
    const texts = ["a photo of a red square", "red and blue", "a photo"];
    const { inputIds, attentionMask } = tokenizer.encodeBatch(texts);
    // Masking out the second row's "blue" leaves only "red".
    const blueAt = tokenizer.encode("red and blue").length - 2;
    attentionMask[77 + blueAt] = 0n;
    const { text_embeds } = await session.run({
      input_ids: new ort.Tensor("int64", inputIds, [3, 77]),
      attention_mask: new ort.Tensor("int64", attentionMask, [3, 77]),
    });
    const data = text_embeds.data as Float32Array;
    const biasOnly = [0, 0, 0, BIAS, 0, 0, 0, 0]; // no colour word
    [expected(TEST_COLOURS.red), expected(TEST_COLOURS.red), biasOnly].forEach((want, i) =>
      want.forEach((v, j) => expect(data[i * 8 + j]).toBeCloseTo(v, 5)),
    );
    await session.release();
  });

  it("plain variant: one input and one output each, no attention mask, symbolic sizes", async () => {
    const vision = await ort.InferenceSession.create(path.join(plainDir, "vision_model.onnx"));
    const text = await ort.InferenceSession.create(path.join(plainDir, "text_model.onnx"));
    expect([vision.inputNames, vision.outputNames, text.inputNames, text.outputNames]).toEqual([
      ["input"],
      ["output"],
      ["input"],
      ["output"],
    ]);
    const shape = (meta: readonly ort.InferenceSession.ValueMetadata[]) =>
      meta[0].isTensor ? meta[0].shape.map((d) => typeof d) : [];
    expect(shape(vision.inputMetadata)).toEqual(["string", "number", "string", "string"]);
    expect(shape(vision.outputMetadata)).toEqual(["string", "string"]);
    expect(shape(text.outputMetadata)).toEqual(["string", "string"]);
    await Promise.all([vision.release(), text.release()]);
  });

  it("writes the embedding size it is asked for", async () => {
    const wide = path.join(root, "wide");
    await writeClipTestModel(wide, { dimension: 16 });
    const session = await ort.InferenceSession.create(path.join(wide, "vision_model.onnx"));
    expect(session.outputMetadata[0]).toMatchObject({ shape: ["batch", 16] });
    await session.release();
    await expect(writeClipTestModel(path.join(root, "narrow"), { dimension: 3 })).rejects.toThrow(/dimension/);
  });
});
