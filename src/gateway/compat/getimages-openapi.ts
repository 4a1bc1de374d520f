import { ASPECT_RATIOS, MODELS } from "../../generation/models.js";
import { PROMPT_MAX, THINKING_LEVELS } from "./getimages-request.js";

/*
 * The OpenAPI 3.1 document of the getimages-compatible API. It describes that API's own
 * shapes (not glimpse's contract, which /openapi.json describes), so it is written out here.
 */

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: object) => ({ "application/json": { schema } });
const errorResponse = (description: string, headers?: object) => ({
  description,
  ...(headers ? { headers } : {}),
  content: json(ref("Error")),
});

/** The limit/offset query parameters (a fresh copy each time: the document shares no objects). */
const paging = () => [
  {
    name: "limit",
    in: "query",
    required: false,
    description: "Number of items to return, 1..100.",
    schema: { type: "integer", minimum: 1, maximum: 100, default: 20 },
  },
  {
    name: "offset",
    in: "query",
    required: false,
    description: "Number of items to skip, newest first.",
    schema: { type: "integer", minimum: 0, default: 0 },
  },
];

/** Answers every endpoint may give besides its own. */
const common = () => ({
  "401": { $ref: "#/components/responses/Unauthorized" },
  "429": { $ref: "#/components/responses/RateLimited" },
  "500": { $ref: "#/components/responses/ServerError" },
});

const imageProperties = () => ({
  id: { type: "string", format: "uuid", description: "Id of the generation." },
  prompt: { type: "string" },
  modelId: { type: "string", examples: ["google:gemini-2.5-flash-image"] },
  providerId: { type: "string", description: '"openai", "google" or "local".' },
  aspectRatio: { type: "string", enum: [...ASPECT_RATIOS] },
  style: { type: ["string", "null"] },
  thinkingLevel: { type: ["string", "null"], enum: [...THINKING_LEVELS, null] },
  mediaType: { type: "string", examples: ["image/png"] },
  createdAt: { type: "string", format: "date-time" },
});
const imageRequired = Object.keys(imageProperties());

/** The document, with `serverUrl` (absolute, ending in the compat prefix) as its one server. */
export function getimagesOpenApi(serverUrl: string): object {
  return {
    openapi: "3.1.0",
    info: {
      title: "Get Images REST API (glimpse-compatible surface)",
      version: "1.0.0",
      description:
        "Generate images and read account usage. Authenticate every request with `Authorization: Bearer <API key>`. " +
        "Keys are rate limited (60 requests per minute by default); over the limit the API answers 429 with Retry-After.",
    },
    servers: [{ url: serverUrl }],
    security: [{ bearerAuth: [] }],
    paths: {
      "/api/v1/images/generate": {
        post: {
          operationId: "generateImage",
          summary: "Generate an image",
          description: "Generates one image and charges the model's credit cost; the bytes are returned inline as base64.",
          requestBody: { required: true, content: json(ref("GenerateImageRequest")) },
          responses: {
            "200": { description: "The generated image and the credits charged.", content: json(ref("GenerateImageResponse")) },
            "400": errorResponse("Invalid JSON, request body, model or image option, or credits that do not cover the model's cost."),
            ...common(),
          },
        },
      },
      "/api/v1/images": {
        get: {
          operationId: "listImages",
          summary: "List images",
          description: "Metadata of previous generations, newest first. Image bytes are not included.",
          parameters: paging(),
          responses: {
            "200": { description: "A page of images.", content: json(ref("ImageList")) },
            "400": errorResponse("Invalid pagination."),
            ...common(),
          },
        },
      },
      "/api/v1/images/{id}": {
        get: {
          operationId: "getImage",
          summary: "Get one image",
          description: "Metadata plus inline base64 image bytes; with `format=metadata`, metadata only.",
          parameters: [
            { name: "id", in: "path", required: true, schema: { type: "string", format: "uuid" } },
            {
              name: "format",
              in: "query",
              required: false,
              description: "`metadata` to leave the bytes out.",
              schema: { type: "string", enum: ["metadata"] },
            },
          ],
          responses: {
            "200": { description: "The image.", content: json(ref("ImageResponse")) },
            "400": errorResponse("Invalid format."),
            "404": errorResponse("No image of this account has this id."),
            ...common(),
          },
        },
      },
      "/api/v1/account": {
        get: {
          operationId: "getAccount",
          summary: "Account",
          responses: {
            "200": { description: "The account the key belongs to.", content: json(ref("Account")) },
            "404": errorResponse("The account was not found."),
            ...common(),
          },
        },
      },
      "/api/v1/usage": {
        get: {
          operationId: "listUsage",
          summary: "Usage",
          description: "Credit transactions (grants and charges), newest first.",
          parameters: paging(),
          responses: {
            "200": { description: "A page of transactions.", content: json(ref("Usage")) },
            "400": errorResponse("Invalid pagination."),
            ...common(),
          },
        },
      },
    },
    components: {
      securitySchemes: {
        bearerAuth: { type: "http", scheme: "bearer", description: "An API key from the dashboard." },
      },
      responses: {
        Unauthorized: errorResponse("Missing, invalid, or revoked API key."),
        RateLimited: errorResponse("API key rate limit exceeded.", {
          "Retry-After": { description: "Seconds to wait before retrying.", schema: { type: "integer", minimum: 1 } },
        }),
        ServerError: errorResponse("Image generation failed unexpectedly."),
      },
      schemas: {
        GenerateImageRequest: {
          type: "object",
          required: ["prompt", "modelId"],
          properties: {
            prompt: { type: "string", minLength: 1, maxLength: PROMPT_MAX },
            modelId: { type: "string", enum: MODELS.map((m) => m.id).sort() },
            aspectRatio: { type: "string", enum: [...ASPECT_RATIOS], default: "1:1" },
            style: { type: "string", description: "A short style instruction (at most 200 characters)." },
            thinkingLevel: {
              type: "string",
              enum: [...THINKING_LEVELS],
              description: "Only for models with thinking controls (Gemini 3.1 Flash Image, Gemini 3 Pro Image).",
            },
          },
        },
        GeneratedImage: {
          type: "object",
          required: [...imageRequired, "b64_json"],
          properties: { ...imageProperties(), b64_json: { type: "string", contentEncoding: "base64" } },
        },
        ImageMetadata: {
          type: "object",
          required: [...imageRequired, "creditCost"],
          properties: { ...imageProperties(), creditCost: { type: "integer", minimum: 0 } },
        },
        ImageWithBytes: {
          type: "object",
          required: [...imageRequired, "creditCost"],
          properties: {
            ...imageProperties(),
            creditCost: { type: "integer", minimum: 0 },
            b64_json: { type: "string", contentEncoding: "base64", description: "Absent with format=metadata." },
          },
        },
        GenerateImageResponse: {
          type: "object",
          required: ["image", "credits"],
          properties: {
            image: ref("GeneratedImage"),
            credits: {
              type: "object",
              required: ["charged", "remaining"],
              properties: { charged: { type: "integer", minimum: 0 }, remaining: { type: "integer", minimum: 0 } },
            },
          },
        },
        ImageResponse: { type: "object", required: ["image"], properties: { image: ref("ImageWithBytes") } },
        ImageList: pageOf("images", ref("ImageMetadata")),
        Account: {
          type: "object",
          required: ["userId", "email", "creditBalance"],
          properties: {
            userId: { type: "string" },
            email: { type: "string" },
            creditBalance: { type: "integer", minimum: 0 },
          },
        },
        Transaction: {
          type: "object",
          required: ["id", "amount", "type", "description", "referenceId", "createdAt"],
          properties: {
            id: { type: "string", format: "uuid" },
            amount: { type: "integer", description: "Positive for a grant, negative for a charge." },
            type: { type: "string", examples: ["deduction", "grant"] },
            description: { type: "string" },
            referenceId: { type: ["string", "null"], description: "The image id for a deduction." },
            createdAt: { type: "string", format: "date-time" },
          },
        },
        Usage: pageOf("transactions", ref("Transaction")),
        Error: {
          type: "object",
          required: ["error"],
          properties: {
            error: {
              type: "object",
              required: ["message", "details"],
              properties: {
                message: { type: "string" },
                details: {
                  type: "array",
                  items: {
                    type: "object",
                    required: ["path", "message", "code"],
                    properties: {
                      path: { type: "string", description: "The request field; empty for the whole body." },
                      message: { type: "string" },
                      code: { type: "string", examples: ["too_small", "too_big", "invalid_type", "invalid_value"] },
                    },
                  },
                },
              },
            },
          },
        },
      },
    },
  };
}

function pageOf(name: string, items: object) {
  return {
    type: "object",
    required: [name, "total", "limit", "offset"],
    properties: {
      [name]: { type: "array", items },
      total: { type: "integer", minimum: 0 },
      limit: { type: "integer", minimum: 1, maximum: 100 },
      offset: { type: "integer", minimum: 0 },
    },
  };
}
