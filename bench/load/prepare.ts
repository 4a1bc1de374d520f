/**
 * What some scenarios need on the server before a run, made through the API itself (so it
 * works against any build and any running server the admin key opens): images with stored
 * bytes for get-image-content (the seeded rows have none) and credits for generate.
 */
import { createChannel, createClient, Metadata } from "nice-grpc";
import sharp from "sharp";
import { AccountServiceDefinition } from "../../src/gen/glimpse/account/v1/account_service.js";
import { Visibility } from "../../src/gen/glimpse/image/v1/image.js";
import { ImageServiceDefinition } from "../../src/gen/glimpse/image/v1/image_service.js";
import { USERS } from "./seed.js";

/** Scenarios that read the images prepare() uploads. */
const NEEDS_CONTENT = new Set(["get-image-content"]);
/** Scenarios that spend the credits prepare() grants. */
const NEEDS_CREDITS = new Set(["generate"]);
/** Images with bytes for get-image-content, read round-robin. */
const CONTENT_IMAGES = 16;
/** Credits granted to the ordinary account generate uses: more than any bounded run spends. */
const CREDITS = "1000000000";

export interface Prepared {
  /** Ids of public images with stored bytes (256x256 JPEGs). */
  contentIds: string[];
  /** Credits granted to the ordinary account, or 0 when no scenario needed them. */
  credits_granted: number;
}

/** A 256x256 JPEG of a gradient peculiar to `n` (about 10 KB). */
async function contentImage(n: number): Promise<Buffer> {
  const size = 256;
  const pixels = Buffer.alloc(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const at = (y * size + x) * 3;
      pixels[at] = (x + n * 16) & 255;
      pixels[at + 1] = (y * 3 + n * 7) & 255;
      pixels[at + 2] = ((x ^ y) + n * 31) & 255;
    }
  }
  return sharp(pixels, { raw: { width: size, height: size, channels: 3 } }).jpeg({ quality: 85 }).toBuffer();
}

/** Makes what the given scenarios need on the server at `grpcAddress`, with the admin key. */
export async function prepare(grpcAddress: string, adminKey: string, scenarios: string[]): Promise<Prepared> {
  const prepared: Prepared = { contentIds: [], credits_granted: 0 };
  const wantContent = scenarios.some((s) => NEEDS_CONTENT.has(s));
  const wantCredits = scenarios.some((s) => NEEDS_CREDITS.has(s));
  if (!wantContent && !wantCredits) return prepared;
  const channel = createChannel(grpcAddress);
  const metadata = Metadata({ authorization: `Bearer ${adminKey}` });
  try {
    if (wantContent) {
      const images = createClient(ImageServiceDefinition, channel, { "*": { metadata } });
      // The same bytes on every run: an upload of bytes the account already has returns the
      // stored image, so reruns against a running server do not pile up copies.
      for (let n = 0; n < CONTENT_IMAGES; n++) {
        const res = await images.uploadImage({
          content: await contentImage(n),
          fileName: `load-content-${n}.jpg`,
          tags: ["load-content"],
          visibility: Visibility.VISIBILITY_PUBLIC,
          index: false,
        });
        prepared.contentIds.push(res.image!.id);
      }
    }
    if (wantCredits) {
      const accounts = createClient(AccountServiceDefinition, channel, { "*": { metadata } });
      await accounts.grantCredits({ accountId: USERS[0].id, amount: CREDITS, description: "load harness: generate scenario" });
      prepared.credits_granted = Number(CREDITS);
    }
  } finally {
    channel.close();
  }
  return prepared;
}
