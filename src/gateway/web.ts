import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ServerResponse } from "node:http";
import { sendJson, type Route } from "./http.js";

/** Where `npm run build:web` puts the gallery (see web/vite.config.ts). */
export const WEB_DIST = fileURLToPath(new URL("../../web/dist", import.meta.url));

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff2": "font/woff2",
};

/**
 * The page may talk to this origin only, and load nothing from anywhere else: images come as
 * blob: URLs of bytes fetched with the key, placeholders are drawn on canvases.
 */
const CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

function load(file: string): Asset {
  const body = readFileSync(file);
  return {
    body,
    type: TYPES[path.extname(file)] ?? "application/octet-stream",
    etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`,
  };
}

function send(res: ServerResponse, ifNoneMatch: string | undefined, asset: Asset, cacheControl: string): void {
  const headers = {
    "content-type": asset.type,
    "cache-control": cacheControl,
    etag: asset.etag,
    "x-content-type-options": "nosniff",
    "content-security-policy": CSP,
    "referrer-policy": "no-referrer",
  };
  if (ifNoneMatch?.split(",").some((tag) => tag.trim().replace(/^W\//, "") === asset.etag)) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  res.writeHead(200, { ...headers, "content-length": asset.body.length });
  res.end(asset.body);
}

/**
 * The web gallery at `/`: the built page and its fingerprinted assets, read once at start
 * (a build is a few hundred kilobytes). The page is revalidated on every load (`no-cache`,
 * with an ETag); assets are named by their content hash, so they are cached for a year. With
 * no build present, `/` says how to make one.
 */
export function webRoutes(dist = WEB_DIST): Route[] {
  const built = existsSync(path.join(dist, "index.html"));
  const page = built ? load(path.join(dist, "index.html")) : undefined;
  const assets = new Map<string, Asset>();
  if (built && existsSync(path.join(dist, "assets"))) {
    for (const name of readdirSync(path.join(dist, "assets"))) assets.set(name, load(path.join(dist, "assets", name)));
  }
  return [
    {
      method: "GET",
      pattern: "/",
      handle: async ({ req, res }) => {
        if (!page) {
          return sendJson(res, 503, {
            code: 14,
            message: "the web gallery is not built: run `npm run build:web` (npm start and npm test build it)",
            details: [],
          });
        }
        send(res, req.headers["if-none-match"], page, "no-cache");
      },
    },
    {
      method: "GET",
      pattern: "/assets/{file}",
      handle: async ({ req, res, params }) => {
        const asset = assets.get(params.file);
        if (!asset) return sendJson(res, 404, { code: 5, message: "Not Found", details: [] });
        send(res, req.headers["if-none-match"], asset, "public, max-age=31536000, immutable");
      },
    },
  ];
}
