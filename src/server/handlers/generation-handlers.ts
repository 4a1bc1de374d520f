import type { GenerationService } from "../../generation/generation-service.js";
import { ImageView } from "../../gen/glimpse/image/v1/image.js";
import type { GenerationServiceImplementation } from "../../gen/glimpse/generation/v1/generation_service.js";
import type { AppCallContext } from "../context.js";
import { visibilities } from "./image-mapping.js";
import { generationOut, modelOut, thinkingIn } from "./generation-mapping.js";

type Ctx = AppCallContext;

/** The RPCs of glimpse.generation.v1.GenerationService. */
export function generationHandlers(generation: GenerationService): GenerationServiceImplementation<Ctx> {
  return {
    async generateImage(request, context) {
      const result = await generation.generate(
        context.caller,
        {
          prompt: request.prompt,
          modelId: request.modelId,
          aspectRatio: request.aspectRatio,
          style: request.style,
          thinkingLevel: thinkingIn(request.thinkingLevel),
          requestId: request.requestId,
          visibility: visibilities.in(request.visibility) ?? "private",
        },
        context.signal,
        context.deadline,
      );
      return {
        generation: generationOut(result.generation, result.content),
        credits: { charged: result.charged.toString(), remaining: result.remaining.toString() },
      };
    },

    async listGenerations(request, context) {
      const page = await generation.list(context.caller, request.limit, request.offset);
      return {
        generations: page.generations.map((g) => generationOut(g)),
        total: String(page.total),
        limit: page.limit,
        offset: page.offset,
      };
    },

    async getGeneration(request, context) {
      const withContent = request.view === ImageView.IMAGE_VIEW_WITH_CONTENT;
      const { generation: g, content } = await generation.get(context.caller, request.id, withContent);
      return { generation: generationOut(g, content) };
    },

    async listModels() {
      return { models: generation.models().map(modelOut) };
    },
  };
}
