import { readFile } from "node:fs/promises";
import { join } from "node:path";

/** Length of every text model input: CLIP's positional embedding has 77 slots. */
export const CONTEXT_LENGTH = 77;

const START_TEXT = "<|startoftext|>";
const END_TEXT = "<|endoftext|>";

/** Marks the last symbol of a word, so "cat" at a word's end and inside "category" differ. */
const END_OF_WORD = "</w>";

/**
 * CLIP's pre-tokenizer: the two special tokens, English contractions, runs of letters, single
 * digits, and runs of anything else that is neither space, letter nor digit. Whitespace
 * matches nothing and so disappears between words.
 */
const WORD_PATTERN =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;

/**
 * Words whose BPE result is remembered. Search prompts reuse a small vocabulary, so a few
 * thousand entries catch nearly every repeat; the bound keeps hostile input from growing
 * the cache without limit.
 */
const CACHE_LIMIT = 10_000;

/** Longest word (in bytes) worth caching; longer ones are rare and would pin their ids in memory. */
const CACHED_WORD_LENGTH = 64;

/**
 * GPT-2's reversible byte -> character table: printable Latin-1 bytes stand for themselves,
 * the rest are moved to U+0100 and up, so every UTF-8 byte is one visible vocabulary symbol.
 */
const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let shifted = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(printable(b) ? b : 256 + shifted++);
  return table;
})();

const utf8 = new TextEncoder();

/**
 * The CLIP byte-level BPE tokenizer, as OpenAI CLIP's `SimpleTokenizer` and Hugging Face's
 * `CLIPTokenizer` run it: NFC, whitespace collapsed and trimmed, lower-cased, split by the
 * CLIP pattern, each word's UTF-8 bytes mapped to symbols and merged by rank with a `</w>`
 * end-of-word marker. ftfy's mojibake repair and HTML unescaping are left out.
 *
 * Works with any vocab/merges pair that contains the two special tokens. Symbols missing
 * from the vocabulary map to `<|endoftext|>`, the real tokenizer's unknown token.
 */
export class ClipTokenizer {
  /** Id of `<|startoftext|>`, first in every encoding. */
  readonly startToken: number;
  /** Id of `<|endoftext|>`, last in every encoding; also the unknown token. */
  readonly endToken: number;
  /** Id that fills input_ids after the end token: `<|endoftext|>`, as tokenizer_config.json says. */
  readonly padToken: number;

  private readonly vocab: Map<string, number>;
  /** "first second" -> rank; lower ranks were learnt earlier and merge first. */
  private readonly ranks = new Map<string, number>();
  /** rank -> [first, second]. */
  private readonly pairs: [string, string][] = [];
  /** Word (in byte symbols) -> its token ids. */
  private readonly cache = new Map<string, number[]>();

  /** Reads `vocab.json` and `merges.txt` (with its optional "#version" header) from `dir`. */
  static async fromDirectory(dir: string): Promise<ClipTokenizer> {
    const [vocabText, mergesText] = await Promise.all([
      readFile(join(dir, "vocab.json"), "utf8"),
      readFile(join(dir, "merges.txt"), "utf8"),
    ]);
    const vocab = JSON.parse(vocabText) as Record<string, number>;
    const merges = mergesText.split(/\r?\n/).filter((line, i) => line !== "" && !(i === 0 && line.startsWith("#version")));
    return new ClipTokenizer(vocab, merges);
  }

  /**
   * @param vocab symbol -> id, as in vocab.json; must hold `<|startoftext|>` and `<|endoftext|>`.
   * @param merges merge rules in rank order, each "first second", without the "#version" header.
   */
  constructor(vocab: Record<string, number>, merges: string[]) {
    this.vocab = new Map(Object.entries(vocab));
    const start = this.vocab.get(START_TEXT);
    const end = this.vocab.get(END_TEXT);
    if (start === undefined || end === undefined) {
      throw new Error(`CLIP vocabulary lacks ${start === undefined ? START_TEXT : END_TEXT}`);
    }
    this.startToken = start;
    this.endToken = end;
    this.padToken = end;
    merges.forEach((line, rank) => {
      const pair = line.trim().split(/\s+/);
      if (pair.length !== 2) throw new Error(`merge rule ${rank + 1} is not two symbols: ${JSON.stringify(line)}`);
      const key = `${pair[0]} ${pair[1]}`;
      if (!this.ranks.has(key)) this.ranks.set(key, rank);
      this.pairs.push([pair[0], pair[1]]);
    });
    this.resetCache();
  }

  /** `[start, ...bpe ids, end]`, the BPE ids cut so that the whole is at most 77 ids long. */
  encode(text: string): number[] {
    const ids = [this.startToken];
    // Words are matched lazily and BPE stops at the limit: a long text costs little more.
    for (const [word] of normalise(text).matchAll(WORD_PATTERN)) {
      for (const id of this.wordIds(word)) ids.push(id);
      if (ids.length >= CONTEXT_LENGTH - 1) break;
    }
    ids.length = Math.min(ids.length, CONTEXT_LENGTH - 1);
    ids.push(this.endToken);
    return ids;
  }

  /**
   * Encodes `texts` into row-major `texts.length x 77` int64 `inputIds`, padded with
   * `padToken`, and the matching `attentionMask`: 1 for every real token (start and end
   * included), 0 for padding. The layout the ONNX text model takes as input.
   */
  encodeBatch(texts: string[]): { inputIds: BigInt64Array; attentionMask: BigInt64Array } {
    const inputIds = new BigInt64Array(texts.length * CONTEXT_LENGTH).fill(BigInt(this.padToken));
    const attentionMask = new BigInt64Array(texts.length * CONTEXT_LENGTH);
    texts.forEach((text, row) => {
      const ids = this.encode(text);
      const offset = row * CONTEXT_LENGTH;
      for (let i = 0; i < ids.length; i++) {
        inputIds[offset + i] = BigInt(ids[i]);
        attentionMask[offset + i] = 1n;
      }
    });
    return { inputIds, attentionMask };
  }

  /**
   * Empties the word cache but for the two special tokens: as in OpenAI's tokenizer, a text
   * that spells one out gets the special id, not the BPE of its characters.
   */
  private resetCache(): void {
    this.cache.clear();
    this.cache.set(START_TEXT, [this.startToken]);
    this.cache.set(END_TEXT, [this.endToken]);
  }

  /** Token ids of one pre-tokenized word, from the cache when it has been seen. */
  private wordIds(word: string): number[] {
    let symbols = "";
    for (const byte of utf8.encode(word)) symbols += BYTE_TO_CHAR[byte];
    const cached = this.cache.get(symbols);
    if (cached) return cached;
    const ids = this.bpe(symbols).map((symbol) => this.vocab.get(symbol) ?? this.endToken);
    if (symbols.length <= CACHED_WORD_LENGTH) {
      if (this.cache.size >= CACHE_LIMIT) this.resetCache();
      this.cache.set(symbols, ids);
    }
    return ids;
  }

  /**
   * Splits a word into its symbols, the last carrying `</w>`, then repeatedly merges every
   * occurrence of the adjacent pair with the lowest rank, left to right, until no pair has a
   * rank: the reference algorithm's result. A heap of (rank, position) keeps it O(n log n);
   * rescanning the word for each merge, as the reference does, took 2.6 s on a 16 KB word.
   */
  private bpe(symbols: string): string[] {
    // Byte symbols are all below U+0200, so one UTF-16 unit is one symbol.
    const sym = Array.from(symbols);
    const n = sym.length;
    sym[n - 1] += END_OF_WORD;
    // A doubly linked list over the symbols; a merged-away symbol becomes "" (no rule has it).
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new MinHeap();
    const push = (left: number) => {
      const right = next[left];
      const rank = right < 0 ? undefined : this.ranks.get(`${sym[left]} ${sym[right]}`);
      if (rank !== undefined) heap.push(rank * POSITIONS + left);
    };
    for (let i = 0; i < n - 1; i++) push(i);

    const positions: number[] = [];
    const merged: number[] = [];
    while (heap.size > 0) {
      // One pass per rank, as in the reference: every occurrence present now, leftmost first,
      // before any pair the pass itself creates (which may rank lower) is considered.
      const rank = Math.floor(heap.peek() / POSITIONS);
      positions.length = 0;
      while (heap.size > 0 && Math.floor(heap.peek() / POSITIONS) === rank) positions.push(heap.pop() % POSITIONS);
      const [first, second] = this.pairs[rank];
      merged.length = 0;
      for (const left of positions) {
        const right = next[left];
        // Stale entries (symbols since merged, or a duplicate) no longer show the pair.
        if (right < 0 || sym[left] !== first || sym[right] !== second) continue;
        sym[left] = first + second;
        sym[right] = "";
        next[left] = next[right];
        if (next[right] >= 0) prev[next[right]] = left;
        merged.push(left);
      }
      for (const left of merged) {
        if (prev[left] >= 0) push(prev[left]);
        push(left);
      }
    }
    const word: string[] = [];
    for (let i = 0; i >= 0; i = next[i]) word.push(sym[i]);
    return word;
  }
}

/** Heap keys are rank * POSITIONS + position: one number, ordered by rank, then position. */
const POSITIONS = 2 ** 32;

/** A binary min-heap of numbers. */
class MinHeap {
  private readonly items: number[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): number {
    return this.items[0];
  }

  push(value: number): void {
    const items = this.items;
    let i = items.push(value) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent] <= value) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = value;
  }

  pop(): number {
    const items = this.items;
    const top = items[0];
    const last = items.pop()!;
    if (items.length > 0) {
      let i = 0;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= items.length) break;
        if (child + 1 < items.length && items[child + 1] < items[child]) child++;
        if (items[child] >= last) break;
        items[i] = items[child];
        i = child;
      }
      items[i] = last;
    }
    return top;
  }
}

/** NFC, runs of whitespace to one space, trimmed, lower-cased: CLIP's text clean-up. */
function normalise(text: string): string {
  return text.normalize("NFC").replace(/\s+/g, " ").trim().toLowerCase();
}
