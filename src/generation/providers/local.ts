import { createHash } from "node:crypto";
import sharp from "sharp";
import { DomainError } from "../../errors.js";
import { ratioParts, type AspectRatio } from "../models.js";
import type { ImageProvider, ProviderImage, ProviderRequest } from "./types.js";

/** Pixels of a local image, about 512 x 512 at any ratio. */
const AREA = 512 * 512;

/** Width and height for a ratio: exact multiples of the ratio's terms, about AREA pixels. */
export function localSize(ratio: AspectRatio): { width: number; height: number } {
  const [w, h] = ratioParts(ratio);
  const k = Math.floor(Math.sqrt(AREA / (w * h)));
  return { width: w * k, height: h * k };
}

/** A deterministic stream of numbers in [0, 1) drawn from a seed (SHA-256 in counter mode). */
function seededRandom(seed: string): () => number {
  let block = Buffer.alloc(0);
  let used = 0;
  let counter = 0;
  return () => {
    if (used + 4 > block.length) {
      block = createHash("sha256").update(`${seed}\u0000${counter++}`).digest();
      used = 0;
    }
    const value = block.readUInt32BE(used) / 2 ** 32;
    used += 4;
    return value;
  };
}

function colour(random: () => number): string {
  const hue = Math.floor(random() * 360);
  const sat = 45 + Math.floor(random() * 45);
  const light = 30 + Math.floor(random() * 45);
  return `hsl(${hue},${sat}%,${light}%)`;
}

/** The SVG of a local image: a gradient, with shapes for the "shapes" model. */
function drawing(model: string, seed: string, width: number, height: number): string {
  const random = seededRandom(seed);
  const angle = random() * Math.PI * 2;
  const [x1, y1] = [50 + 50 * Math.cos(angle), 50 + 50 * Math.sin(angle)];
  const stops = [0, 0.5, 1].map((offset) => `<stop offset="${offset}" stop-color="${colour(random)}"/>`).join("");
  const parts = [
    `<defs><linearGradient id="g" x1="${x1}%" y1="${y1}%" x2="${100 - x1}%" y2="${100 - y1}%">${stops}</linearGradient>`,
    `<radialGradient id="r" cx="${random() * 100}%" cy="${random() * 100}%" r="60%">`,
    `<stop offset="0" stop-color="${colour(random)}" stop-opacity="0.7"/><stop offset="1" stop-color="#000" stop-opacity="0"/>`,
    `</radialGradient></defs>`,
    `<rect width="${width}" height="${height}" fill="url(#g)"/>`,
    `<rect width="${width}" height="${height}" fill="url(#r)"/>`,
  ];
  if (model === "shapes") {
    const count = 5 + Math.floor(random() * 8);
    const side = Math.min(width, height);
    for (let i = 0; i < count; i++) {
      const x = random() * width;
      const y = random() * height;
      const size = side * (0.08 + random() * 0.3);
      const fill = `fill="${colour(random)}" fill-opacity="${(0.4 + random() * 0.5).toFixed(2)}"`;
      const kind = Math.floor(random() * 3);
      if (kind === 0) parts.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${(size / 2).toFixed(1)}" ${fill}/>`);
      else if (kind === 1) {
        const rotate = Math.floor(random() * 90);
        parts.push(
          `<rect x="${(x - size / 2).toFixed(1)}" y="${(y - size / 2).toFixed(1)}" width="${size.toFixed(1)}" ` +
            `height="${size.toFixed(1)}" transform="rotate(${rotate} ${x.toFixed(1)} ${y.toFixed(1)})" ${fill}/>`,
        );
      } else {
        const points = [0, 1, 2]
          .map((j) => {
            const a = (j * 2 * Math.PI) / 3 + random();
            return `${(x + (size / 1.5) * Math.cos(a)).toFixed(1)},${(y + (size / 1.5) * Math.sin(a)).toFixed(1)}`;
          })
          .join(" ");
        parts.push(`<polygon points="${points}" ${fill}/>`);
      }
    }
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${parts.join("")}</svg>`;
}

/**
 * The offline renderer behind `local:` models, for development and tests. It is not a learned
 * model and does not understand the prompt: it hashes the model, prompt, style and aspect
 * ratio into colours and shapes, so the same request always gives the same PNG, at the ratio
 * asked for.
 */
export class LocalProvider implements ImageProvider {
  readonly id = "local" as const;

  unavailableReason(): string | undefined {
    return undefined;
  }

  async generate(request: ProviderRequest): Promise<ProviderImage> {
    if (request.model !== "gradient" && request.model !== "shapes") {
      throw new DomainError("FAILED_PRECONDITION", `the local renderer has no model ${JSON.stringify(request.model)}`);
    }
    request.signal.throwIfAborted();
    const { width, height } = localSize(request.aspectRatio);
    const seed = JSON.stringify([request.model, request.prompt, request.style, request.aspectRatio]);
    const svg = drawing(request.model, seed, width, height);
    const bytes = await sharp(Buffer.from(svg)).png({ compressionLevel: 9 }).toBuffer();
    return { bytes, mediaType: "image/png" };
  }
}
