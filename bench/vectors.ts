/** Deterministic synthetic vectors shaped like image embeddings: tight clusters on the unit sphere. */

/** mulberry32: a small seeded PRNG, so runs and tests see the same data. */
export function makeRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(random: () => number): number {
  const u = Math.max(random(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

function normalise(v: Float32Array): Float32Array {
  let n = 0;
  for (const x of v) n += x * x;
  n = Math.sqrt(n) || 1;
  for (let i = 0; i < v.length; i++) v[i] /= n;
  return v;
}

export interface ClusteredOptions {
  count: number;
  dimension: number;
  clusters: number;
  queries: number;
  seed: number;
  /** Spread around each centre relative to the centre's length (default 0.5). */
  spread?: number;
}

/**
 * `count` unit vectors drawn around `clusters` random centres, and `queries` query vectors
 * drawn the same way (so queries land in populated regions, as real ones do).
 */
export function clusteredVectors(o: ClusteredOptions): { vectors: Float32Array[]; queries: Float32Array[] } {
  const random = makeRandom(o.seed);
  const spread = o.spread ?? 0.5;
  const centres = Array.from({ length: o.clusters }, () =>
    normalise(Float32Array.from({ length: o.dimension }, () => gaussian(random))),
  );
  const draw = () => {
    const c = centres[Math.floor(random() * centres.length)];
    const v = new Float32Array(o.dimension);
    const noise = spread / Math.sqrt(o.dimension);
    for (let d = 0; d < o.dimension; d++) v[d] = c[d] + gaussian(random) * noise;
    return normalise(v);
  };
  return {
    vectors: Array.from({ length: o.count }, draw),
    queries: Array.from({ length: o.queries }, draw),
  };
}

/**
 * Vectors shaped like CLIP image embeddings rather than points on a uniform sphere: every
 * vector shares a common direction (real CLIP embeddings of unrelated images have a cosine of
 * about 0.5 with each other), clusters sit around it, and a few dimensions carry components
 * several times larger than the rest (CLIP's "outlier" dimensions). The shared direction makes
 * scores crowd together; the outliers make a per-row int8 scale coarse for the other
 * dimensions: both are what makes quantised ranking hard.
 */
export function clipLikeVectors(o: ClusteredOptions & { outliers?: number }): {
  vectors: Float32Array[];
  queries: Float32Array[];
} {
  const random = makeRandom(o.seed ^ 0x5bd1e995);
  const outliers = o.outliers ?? 8;
  const shared = normalise(Float32Array.from({ length: o.dimension }, () => gaussian(random)));
  const boost = new Float32Array(o.dimension).fill(1);
  for (let i = 0; i < outliers; i++) boost[Math.floor(random() * o.dimension)] = 6 + 4 * random();
  const { vectors, queries } = clusteredVectors(o);
  const shape = (v: Float32Array) => {
    for (let d = 0; d < v.length; d++) v[d] = (v[d] + 0.9 * shared[d]) * boost[d];
    return normalise(v);
  };
  return { vectors: vectors.map(shape), queries: queries.map(shape) };
}
