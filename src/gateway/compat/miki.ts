import type { Image } from "../../gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition, ImageSort } from "../../gen/glimpse/image/v1/image_service.js";
import type { RouteDeps } from "../gateway.js";
import type { HttpContext, Route } from "../http.js";
import {
  badParameter,
  callOnBehalf,
  CompatError,
  compatRoute,
  exactNumber,
  positiveId,
  queryValue,
  sendCompatJson,
  wholeNumber,
  type JsonOut,
} from "./catalogue-shapes.js";

/**
 * Seed 1 (miki's image API) under /compat/miki: `GET /images` lists images newest first,
 * 0-based `page`, `tags=animal+dog+-cat`; `GET /images/:id` returns one. Each image is
 * `{id, tags, url}` with the id a JSON number, as the seed shows it. The list answers a JSON
 * array of those objects (the seed's example is one element of it); pages hold glimpse's
 * default page size, 100 images.
 */

/** ListImages and GetImage request fields, as glimpse names them in violations, to seed 1's parameters. */
const PARAMETER_NAMES: Record<string, string> = {
  "filter.tags": "tags",
  "filter.exclude_tags": "tags",
  zero_based_page: "page",
  id: "id",
};

/** `/compat/miki/images` and `/compat/miki/images/{id}`. */
export function mikiRoutes(deps: RouteDeps): Route[] {
  const images = deps.rpc.client(ImageServiceDefinition);
  return [
    compatRoute(deps, "GET", "/compat/miki/images", async (ctx) => {
      const page = queryValue(ctx.url.searchParams, "page");
      const { include, exclude } = tagExpression(ctx.url.search);
      const request = {
        filter: { tags: include, excludeTags: exclude },
        sort: ImageSort.IMAGE_SORT_NEWEST,
        zeroBasedPage: page === undefined ? 0 : wholeNumber("page", page, 0, 2 ** 31 - 4),
      };
      const response = await callOnBehalf(ctx, PARAMETER_NAMES, (options) =>
        images.listImages(request, { ...options, metadata: seedAuthentication(ctx) }),
      );
      sendCompatJson(ctx.res, 200, response.images.map(mikiImage));
    }),
    compatRoute(deps, "GET", "/compat/miki/images/{id}", async (ctx) => {
      const id = positiveId("id", ctx.params.id);
      const { image } = await callOnBehalf(ctx, PARAMETER_NAMES, (options) =>
        images.getImage({ id }, { ...options, metadata: seedAuthentication(ctx) }),
      );
      sendCompatJson(ctx.res, 200, image ? mikiImage(image) : null);
    }),
  ];
}

/** One image in seed 1's shape. */
function mikiImage(image: Image): JsonOut {
  return { id: exactNumber(image.id), tags: image.tags, url: image.url };
}

/**
 * The call metadata, taking the key from the `Authentication` header the seed names when
 * the standard `Authorization` header is absent (clients written against the seed send
 * that one). A bare token there is read as a bearer token.
 */
function seedAuthentication(ctx: HttpContext) {
  const header = ctx.req.headers["authentication"];
  const value = Array.isArray(header) ? header[0] : header;
  if (value && !ctx.metadata.has("authorization") && !ctx.metadata.has("x-api-key")) {
    // gRPC metadata carries printable ASCII only, as every API key is.
    if (!/^[\x20-\x7e]*$/.test(value)) {
      throw new CompatError(401, "the Authentication header holds no valid API key", { "www-authenticate": "Bearer" });
    }
    ctx.metadata.set("authorization", /^Bearer\s/i.test(value) ? value : `Bearer ${value}`);
  }
  return ctx.metadata;
}

/**
 * Tags to require and to exclude, from every `tags` parameter of the raw query string. A
 * literal `+` separates terms (read before percent-decoding, since a URL query decodes `+`
 * to a space); an encoded `%2B` separates them too, while `%20` stays a space inside a tag.
 * A term starting with `-` excludes that tag. Empty or lone `-` terms are passed on for
 * glimpse to refuse by name.
 */
function tagExpression(search: string): { include: string[]; exclude: string[] } {
  const include: string[] = [];
  const exclude: string[] = [];
  for (const pair of search.replace(/^\?/, "").split("&")) {
    const eq = pair.indexOf("=");
    if (eq < 0 || pair.slice(0, eq) !== "tags") continue;
    const raw = pair.slice(eq + 1);
    if (raw.trim() === "") continue;
    for (const encoded of raw.split("+")) {
      let decoded: string;
      try {
        decoded = decodeURIComponent(encoded);
      } catch {
        throw badParameter("tags", `is not valid percent-encoding: '${encoded}'`);
      }
      for (const term of decoded.split("+")) {
        if (term.startsWith("-")) exclude.push(term.slice(1));
        else include.push(term);
      }
    }
  }
  return { include, exclude };
}
