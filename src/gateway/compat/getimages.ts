import { AccountServiceDefinition } from "../../gen/glimpse/account/v1/account_service.js";
import { GenerationServiceDefinition } from "../../gen/glimpse/generation/v1/generation_service.js";
import { ImageView } from "../../gen/glimpse/image/v1/image.js";
import type { RouteDeps } from "../gateway.js";
import { DomainError } from "../../errors.js";
import { BodyTimeout, BodyTooLarge, ClientGone, sendJson, type HttpContext, type Route } from "../http.js";
import { CallFailure, callFor } from "./calls.js";
import { SeedError, seedErrorOf, sendSeedError, type FailureContext } from "./getimages-errors.js";
import { getimagesOpenApi } from "./getimages-openapi.js";
import { metadataOnly, parseGenerateBody, parsePaging } from "./getimages-request.js";
import { accountOut, imageOut, transactionOut } from "./getimages-shapes.js";

/** Where seed 5's API lives on the bridge: its paths (`/api/v1/...`) follow this prefix. */
export const GETIMAGES_PREFIX = "/compat/getimages";

const BODY: FailureContext = { invalid: "Invalid request body.", notFound: "Account not found.", generating: true };
const QUERY: FailureContext = { invalid: "Invalid query parameters.", notFound: "Image not found." };
const ACCOUNT: FailureContext = { invalid: "Invalid request.", notFound: "Account not found." };
const DOCUMENT: FailureContext = { invalid: "Invalid request.", notFound: "Not found." };

/**
 * Seed 5's REST API (getimages.dev) over glimpse's GenerationService and AccountService:
 * generate an image, list and read generations, the account and its usage ledger, and the
 * API's own OpenAPI document. Every call goes through the gRPC middleware (in-process) with the caller's
 * `Authorization: Bearer` key, so authentication, rate limits and credits are glimpse's;
 * failures answer the seed's `{"error": {"message", "details"}}` body.
 */
export function getimagesRoutes(deps: RouteDeps): Route[] {
  const generation = deps.rpc.client(GenerationServiceDefinition);
  const account = deps.rpc.client(AccountServiceDefinition);

  /** Runs a handler, answering any failure in the seed's error shape. */
  const route = (
    method: string,
    path: string,
    context: FailureContext,
    run: (ctx: HttpContext) => Promise<void>,
    rpc?: string,
  ): Route => ({
    method,
    pattern: GETIMAGES_PREFIX + path,
    rpc,
    handle: async (ctx) => {
      try {
        await run(ctx);
      } catch (err) {
        if (ctx.signal.aborted || ctx.res.headersSent) return;
        if (err instanceof SeedError) return sendSeedError(ctx, err);
        if (err instanceof CallFailure) return sendSeedError(ctx, seedErrorOf(err, context));
        // Refusals before any call (admission, a busy server) in the seed's shape.
        if (err instanceof DomainError) return sendSeedError(ctx, seedErrorOf(CallFailure.of(err), context));
        // A body over the limit, too slow, or cut short: the bridge's own answers.
        if (err instanceof BodyTooLarge || err instanceof BodyTimeout || err instanceof ClientGone) throw err;
        deps.logger.error("getimages handler failed", { error: err, path: ctx.url.pathname });
        const message = context.generating ? "Image generation failed unexpectedly." : "Internal server error.";
        sendSeedError(ctx, new SeedError(500, message));
      }
    },
  });

  const routes: Route[] = [
    route("POST", "/api/v1/images/generate", BODY, async (ctx) => {
      const body = parseGenerateBody(await ctx.body());
      const { generation: made, credits } = await callFor(ctx, (options) =>
        generation.generateImage({ ...body, requestId: "" }, options),
      );
      sendJson(ctx.res, 200, {
        image: imageOut(made!, { creditCost: false, bytes: true }),
        credits: { charged: Number(credits?.charged ?? 0), remaining: Number(credits?.remaining ?? 0) },
      });
    }, "/glimpse.generation.v1.GenerationService/GenerateImage"),

    route("GET", "/api/v1/images", QUERY, async (ctx) => {
      const paging = parsePaging(ctx.url);
      const page = await callFor(ctx, (options) => generation.listGenerations(paging, options));
      sendJson(ctx.res, 200, {
        images: page.generations.map((g) => imageOut(g, { creditCost: true, bytes: false })),
        total: Number(page.total),
        limit: page.limit,
        offset: page.offset,
      });
    }),

    route("GET", "/api/v1/images/{id}", QUERY, async (ctx) => {
      const metadata = metadataOnly(ctx.url);
      const view = metadata ? ImageView.IMAGE_VIEW_METADATA : ImageView.IMAGE_VIEW_WITH_CONTENT;
      const found = await callFor(ctx, (options) => generation.getGeneration({ id: ctx.params.id, view }, options)).catch(
        (err: unknown) => {
          // An id that is not a UUID names no image: the seed answers 404, not a validation error.
          if (err instanceof CallFailure && err.violations.some((v) => v.field === "id")) {
            throw new SeedError(404, QUERY.notFound);
          }
          throw err;
        },
      );
      sendJson(ctx.res, 200, { image: imageOut(found.generation!, { creditCost: true, bytes: !metadata }) });
    }),

    route("GET", "/api/v1/account", ACCOUNT, async (ctx) => {
      const { account: found } = await callFor(ctx, (options) => account.getAccount({ accountId: "" }, options));
      sendJson(ctx.res, 200, accountOut(found!));
    }),

    route("GET", "/api/v1/usage", QUERY, async (ctx) => {
      const paging = parsePaging(ctx.url);
      const page = await callFor(ctx, (options) => account.listUsage(paging, options));
      sendJson(ctx.res, 200, {
        transactions: page.transactions.map(transactionOut),
        total: Number(page.total),
        limit: page.limit,
        offset: page.offset,
      });
    }),

    route("GET", "/openapi.json", DOCUMENT, async (ctx) => {
      sendJson(ctx.res, 200, getimagesOpenApi(deps.publicUrl() + GETIMAGES_PREFIX));
    }),
  ];

  // Anything else under the prefix (another path, or another method on a known one) answers
  // in the seed's shape with the seed's own status for it, 404.
  const fallback = (method: string): Route => ({
    method,
    pattern: `${GETIMAGES_PREFIX}/{rest=**}`,
    handle: async (ctx) => sendSeedError(ctx, new SeedError(404, "Not found.")),
  });
  return [...routes, ...["GET", "POST", "PUT", "PATCH", "DELETE"].map(fallback)];
}
