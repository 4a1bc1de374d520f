import type { SearchHit, SearchInput, SearchOutcome, SearchService } from "../../search/search-service.js";
import type { SearchImagesRequest, ImageServiceImplementation } from "../../gen/glimpse/image/v1/image_service.js";
import type { SearchResult } from "../../gen/glimpse/image/v1/search.js";
import { invalidArgument } from "../../errors.js";
import type { AppCallContext } from "../context.js";
import { contentUrl, filterIn, idIn, imageOut } from "./image-mapping.js";

type Ctx = AppCallContext;

/** Results streamed per chunk: fields are loaded a chunk at a time, and cancellation is seen between chunks. */
const STREAM_CHUNK = 100;

export interface SearchHandlerDeps {
  search: SearchService;
  publicUrl: string;
}

function searchIn(r: SearchImagesRequest): SearchInput {
  const q = r.query;
  return {
    query:
      q === undefined
        ? { kind: "none" }
        : q.$case === "prompt"
          ? { kind: "prompt", text: q.value }
          : q.$case === "likeImageId"
            ? { kind: "like_image_id", id: idIn(q.value, "like_image_id") }
            : { kind: "like_image_content", content: q.value },
    threshold: r.threshold,
    offset: r.offset,
    limit: r.limit,
    filter: filterIn(r.filter),
    fields: r.fields,
    ef: r.ef,
    hybrid: r.hybrid,
  };
}

/** One hit with exactly the selected fields. */
function resultOut(hit: SearchHit, outcome: Pick<SearchOutcome, "fields">, publicUrl: string): SearchResult {
  const f = outcome.fields;
  const image = hit.image;
  const result: SearchResult = {
    id: hit.id.toString(),
    score: hit.score,
    name: "",
    labels: [],
    split: "",
    tags: [],
    owner: "",
    embedding: [],
    url: "",
  };
  if (f.has("embedding") && hit.embedding) result.embedding = Array.from(hit.embedding);
  // Fields the search index holds come without the image row.
  if (f.has("owner") && hit.owner !== undefined) result.owner = hit.owner;
  if (f.has("created") && hit.created !== undefined) result.created = hit.created;
  if (f.has("name") && hit.name !== undefined) result.name = hit.name;
  if (f.has("tags") && hit.tags !== undefined) result.tags = hit.tags;
  if (f.has("url")) result.url = contentUrl(publicUrl, hit.id);
  if (!image) return result;
  if (f.has("annotations") || f.has("image")) {
    const full = imageOut(image, publicUrl);
    if (f.has("annotations")) result.annotations = full.annotations;
    if (f.has("image")) result.image = full;
  }
  if (f.has("labels")) result.labels = Object.keys(image.annotations.classes).sort(byteOrder);
  if (f.has("split")) {
    const split = image.meta?.["split"];
    result.split = typeof split === "string" ? split : "";
  }
  if (f.has("owner")) result.owner = image.ownerId;
  if (f.has("created")) result.created = image.createdAt;
  return result;
}

const byteOrder = (a: string, b: string) => (Buffer.compare(Buffer.from(a), Buffer.from(b)) as number);

/** SearchImages, StreamSearchImages and FindDuplicates. */
export function searchHandlers(deps: SearchHandlerDeps): Partial<ImageServiceImplementation<Ctx>> {
  const { search, publicUrl } = deps;
  return {
    async searchImages(request, context) {
      const outcome = await search.search(context.caller, searchIn(request), context.signal);
      return {
        offset: outcome.offset,
        total: String(outcome.total),
        totalIsLowerBound: outcome.totalIsLowerBound,
        results: outcome.hits.map((hit) => resultOut(hit, outcome, publicUrl)),
        embeddingModel: outcome.modelId,
      };
    },

    async *streamSearchImages(request, context) {
      if (!request.search) throw invalidArgument({ field: "search", description: "is required" });
      // Rank once, then load the selected fields a chunk at a time as results go out; a
      // cancelled call stops at the next chunk.
      const outcome = await search.search(context.caller, searchIn(request.search), context.signal, {
        stream: true,
        hydrate: false,
      });
      let rank = outcome.offset;
      for (let i = 0; i < outcome.hits.length; i += STREAM_CHUNK) {
        context.signal.throwIfAborted();
        const chunk = await search.hydrateHits(context.caller, outcome.fields, outcome.hits.slice(i, i + STREAM_CHUNK));
        for (const hit of chunk) yield { result: resultOut(hit, outcome, publicUrl), rank: rank++ };
      }
    },

    async findDuplicates(request, context) {
      const found = await search.findDuplicates(context.caller, {
        imageId: idIn(request.imageId, "image_id"),
        maxHammingDistance: request.maxHammingDistance,
        minScore: request.minScore,
        limit: request.limit,
      });
      return {
        duplicates: found.map((d) => ({
          imageId: d.image.id.toString(),
          hammingDistance: d.hammingDistance,
          score: d.score,
          image: imageOut(d.image, publicUrl),
        })),
      };
    },
  };
}
