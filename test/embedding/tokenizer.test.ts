import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { CONTEXT_LENGTH, ClipTokenizer } from "../../src/embedding/tokenizer.js";

const REAL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../shared/models/clip-vit-b32-tokenizer");
const HAS_REAL = existsSync(path.join(REAL, "vocab.json")) && existsSync(path.join(REAL, "merges.txt"));
const NO_REAL = `needs the CLIP ViT-B/32 vocab.json and merges.txt under ${REAL}`;

const START = 49406;
const END = 49407;

describe.skipIf(!HAS_REAL)(`the real CLIP ViT-B/32 vocabulary (${NO_REAL})`, () => {
  let tokenizer: ClipTokenizer;
  beforeAll(async () => {
    tokenizer = await ClipTokenizer.fromDirectory(REAL);
  });

  it("takes its special tokens from the vocabulary", () => {
    expect(tokenizer.startToken).toBe(START);
    expect(tokenizer.endToken).toBe(END);
    expect(tokenizer.padToken).toBe(END);
  });

  it("encodes the reference prompt as OpenAI CLIP does", () => {
    expect(tokenizer.encode("a photo of a cat")).toEqual([START, 320, 1125, 539, 320, 2368, END]);
    expect(tokenizer.encode("Hello world")).toEqual([START, 3306, 1002, END]);
  });

  it("ignores case and extra whitespace", () => {
    const plain = tokenizer.encode("a photo of a cat");
    expect(tokenizer.encode("  A   PHOTO\tof a\n\nCat  ")).toEqual(plain);
  });

  it("splits punctuation, contractions and digits", () => {
    // "a", "dog", "'s", "toy", ",", "3", "cats", "&", "1", "2", "birds", "!"
    expect(tokenizer.encode("A dog's toy, 3 cats & 12 birds!")).toEqual([
      START, 320, 1929, 568, 5988, 267, 274, 3989, 261, 272, 273, 4337, 256, END,
    ]);
    // "!!" is one run of punctuation, one token.
    expect(tokenizer.encode("cat!!")).toEqual([START, 2368, 748, END]);
  });

  it("encodes non-ASCII words byte by byte", () => {
    // "café</w>" is one token; "naïve" falls apart into "na", "ï", "ve</w>".
    expect(tokenizer.encode("Café naïve")).toEqual([START, 15304, 1097, 35689, 563, END]);
    // Decomposed and composed accents are the same text.
    expect(tokenizer.encode("cafe\u0301")).toEqual(tokenizer.encode("caf\u00e9"));
    expect(tokenizer.encode("東京タワー")).toEqual([START, 48338, 21078, 105, 34941, 2429, 107, 30391, END]);
  });

  it("gives an empty or blank text just the start and end tokens", () => {
    expect(tokenizer.encode("")).toEqual([START, END]);
    expect(tokenizer.encode(" \t\n ")).toEqual([START, END]);
  });

  it("cuts an over-long text to 77 ids and keeps the end token last", () => {
    const ids = tokenizer.encode("cat ".repeat(200));
    expect(ids).toHaveLength(CONTEXT_LENGTH);
    expect(ids[0]).toBe(START);
    expect(ids.slice(1, -1)).toEqual(Array(CONTEXT_LENGTH - 2).fill(2368));
    expect(ids[CONTEXT_LENGTH - 1]).toBe(END);
    // A text exactly filling the context is not cut.
    expect(tokenizer.encode("cat ".repeat(75))).toHaveLength(CONTEXT_LENGTH);
    expect(tokenizer.encode("cat ".repeat(74))).toHaveLength(CONTEXT_LENGTH - 1);
  });

  it("cuts in the middle of a word that spans the limit", () => {
    // "naïve" is three tokens; starting it at id 75 leaves room for one.
    const ids = tokenizer.encode(`${"cat ".repeat(74)}naïve`);
    expect(ids).toHaveLength(CONTEXT_LENGTH);
    expect(ids.slice(-2)).toEqual([1097, END]);
  });

  it("encodes a 200 KB prompt with no spaces in it", () => {
    // One 200,000-letter word: BPE that rescans the word per merge would take minutes here.
    let seed = 1;
    const letters = Array.from({ length: 200_000 }, () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return "abcdefghijklmnopqrstuvwxyz"[seed % 26];
    }).join("");
    const ids = tokenizer.encode(letters);
    expect(ids).toHaveLength(CONTEXT_LENGTH);
    expect(ids[CONTEXT_LENGTH - 1]).toBe(END);
    // The first tokens are those of the word's first letters alone.
    expect(ids.slice(1, 3)).toEqual(tokenizer.encode(letters.slice(0, 40)).slice(1, 3));
  });

  it("pads a batch to 77 with the end token and masks the padding", () => {
    const { inputIds, attentionMask } = tokenizer.encodeBatch(["a photo of a cat", "", "cat ".repeat(100)]);
    expect(inputIds).toBeInstanceOf(BigInt64Array);
    expect(inputIds).toHaveLength(3 * CONTEXT_LENGTH);
    expect(attentionMask).toHaveLength(3 * CONTEXT_LENGTH);
    const row = (a: BigInt64Array, r: number) => Array.from(a.subarray(r * CONTEXT_LENGTH, (r + 1) * CONTEXT_LENGTH), Number);

    expect(row(inputIds, 0)).toEqual([START, 320, 1125, 539, 320, 2368, END, ...Array(70).fill(END)]);
    expect(row(attentionMask, 0)).toEqual([...Array(7).fill(1), ...Array(70).fill(0)]);
    expect(row(inputIds, 1)).toEqual([START, ...Array(76).fill(END)]);
    expect(row(attentionMask, 1)).toEqual([1, 1, ...Array(75).fill(0)]);
    expect(row(attentionMask, 2)).toEqual(Array(77).fill(1));
    expect(row(inputIds, 2)[76]).toBe(END);
  });

  it("gives the same ids for a repeated text (cache) as for the first time", () => {
    const first = tokenizer.encode("an unusual photograph of antidisestablishmentarianism");
    expect(tokenizer.encode("an unusual photograph of antidisestablishmentarianism")).toEqual(first);
  });
});

describe("a hand-made vocabulary", () => {
  /** Symbols of "cat" and "at", two special tokens at ids other than CLIP's. */
  const vocab: Record<string, number> = {
    "<|endoftext|>": 0,
    "<|startoftext|>": 1,
    c: 2,
    a: 3,
    t: 4,
    "c</w>": 5,
    "a</w>": 6,
    "t</w>": 7,
    ca: 8,
    "at</w>": 9,
    "cat</w>": 10,
    "ca</w>": 11,
    "!</w>": 12,
  };

  it("takes the special ids from the vocabulary, not CLIP's numbers", () => {
    const tokenizer = new ClipTokenizer(vocab, []);
    expect([tokenizer.startToken, tokenizer.endToken, tokenizer.padToken]).toEqual([1, 0, 0]);
    expect(tokenizer.encode("")).toEqual([1, 0]);
  });

  it("applies merges by rank, lowest first", () => {
    // "c a" first: c a t</w> -> ca t</w> -> cat</w>.
    expect(new ClipTokenizer(vocab, ["c a", "ca t</w>", "a t</w>"]).encode("cat")).toEqual([1, 10, 0]);
    // "a t</w>" first: c a t</w> -> c at</w>, and no rule joins c with at</w>.
    expect(new ClipTokenizer(vocab, ["a t</w>", "c a", "ca t</w>"]).encode("cat")).toEqual([1, 2, 9, 0]);
  });

  it("marks the end of each word, so the same letters differ at a word's end", () => {
    const tokenizer = new ClipTokenizer(vocab, ["c a", "ca t</w>"]);
    // "ca" inside "cat" is ca; "ca" as a whole word ends in ca</w>, which no rule makes: c a</w>.
    expect(tokenizer.encode("cat ca")).toEqual([1, 10, 2, 6, 0]);
    expect(tokenizer.encode("cat!")).toEqual([1, 10, 12, 0]);
  });

  it("maps symbols missing from the vocabulary to the end token", () => {
    const tokenizer = new ClipTokenizer(vocab, ["c a"]);
    // "dog" has no symbols at all; "x" neither.
    expect(tokenizer.encode("dog x")).toEqual([1, 0, 0, 0, 0, 0]);
  });

  it("keeps a spelt-out special token whole", () => {
    const tokenizer = new ClipTokenizer(vocab, ["c a", "ca t</w>"]);
    expect(tokenizer.encode("cat <|endoftext|>")).toEqual([1, 10, 0, 0]);
  });

  it("refuses a vocabulary without the special tokens", () => {
    expect(() => new ClipTokenizer({ a: 0 }, [])).toThrow(/<\|startoftext\|>/);
  });
});
