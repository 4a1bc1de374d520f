import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WEB_DIST } from "../../src/gateway/web.js";
import { solidImage } from "../helpers/images.js";
import { startSearchTestApp } from "../helpers/search.js";
import type { TestApp } from "../helpers/app.js";

/**
 * The web gallery in a real headless Chromium (Debian's `chromium`, driven by playwright-core),
 * against a real glimpse searching with the project's test model, where an image embeds as its
 * mean colour and a colour word points the same way: a red image ranks first for "red".
 * Screenshots of each step are kept in test-artifacts/web/.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));
const ARTIFACTS = path.resolve("test-artifacts/web");
const skipReason = !CHROMIUM
  ? "no Chromium: install Debian's `chromium` (apt-get install chromium) or set CHROMIUM_PATH"
  : !existsSync(path.join(WEB_DIST, "index.html"))
    ? "the gallery is not built: run `npm run build:web` (npm test does)"
    : undefined;
if (skipReason) console.warn(`web gallery tests skipped: ${skipReason}`);

describe.skipIf(skipReason !== undefined)("web gallery in headless Chromium", () => {
  let t: TestApp;
  let browser: Browser;
  let page: Page;
  let key: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    t = await startSearchTestApp();
    key = (await t.newAccount({ username: "painter", credits: 5 })).key;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("pageerror", (error) => pageErrors.push(error.message));
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await t?.close();
  });

  const shot = (name: string) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
  const url = () => `http://127.0.0.1:${t.app.httpPort}/`;

  /** Ids of the grid's tiles, in order. */
  const tileIds = () => page.locator("#grid .tile").evaluateAll((tiles) => tiles.map((t) => (t as unknown as { dataset: Record<string, string | undefined> }).dataset.id ?? ""));

  it("loads with a key pasted once, and keeps it across reloads", async () => {
    await page.goto(url());
    await expect.poll(() => page.locator("#account").textContent()).toMatch(/Paste an API key/);
    await page.fill("#key", key);
    await page.click("#key-form button[type=submit]");
    await expect.poll(() => page.locator("#account").textContent()).toBe("painter · 5 credits");
    await page.reload();
    await expect.poll(() => page.locator("#account").textContent()).toBe("painter · 5 credits");
    await shot("1-key");
  });

  it("shows an API error in words", async () => {
    await page.fill("#key", "glk_not_a_real_key");
    await page.click("#key-form button[type=submit]");
    await expect.poll(() => page.locator("#error").textContent()).toMatch(/key/i);
    expect(await page.locator("#error").isVisible()).toBe(true);
    await shot("2-bad-key");
    await page.fill("#key", key);
    await page.click("#key-form button[type=submit]");
    await expect.poll(() => page.locator("#account").textContent()).toBe("painter · 5 credits");
  });

  let ids: Record<"red" | "green" | "blue", string>;

  it("uploads dropped files with progress, and lists them in the grid", async () => {
    const colours = { red: { r: 230, g: 20, b: 20 }, green: { r: 20, g: 210, b: 30 }, blue: { r: 25, g: 30, b: 220 } } as const;
    await page.click("#upload-panel summary");
    await page.fill("#upload-tags", "palette");
    await page.setInputFiles(
      "#upload-files",
      await Promise.all(
        Object.entries(colours).map(async ([name, c]) => ({ name: `${name}.png`, mimeType: "image/png", buffer: await solidImage(64, 48, c) })),
      ),
    );
    await expect.poll(() => page.locator("#uploads li.done").count(), { timeout: 20_000 }).toBe(3);
    const states = await page.locator("#uploads li").evaluateAll((rows) =>
      rows.map((r) => [r.querySelector(".name")!.textContent!, r.querySelector(".state")!.textContent!, (r.querySelector("progress") as unknown as { value: number }).value]),
    );
    ids = Object.fromEntries(states.map(([name, state]) => [String(name).replace(".png", ""), /\((\d+)\)/.exec(String(state))![1]])) as typeof ids;
    expect(states.every(([, , progress]) => progress === 1)).toBe(true);
    // The listing (newest first) refreshes to show them.
    await expect.poll(async () => (await tileIds()).slice(0, 3).sort(), { timeout: 10_000 }).toEqual(Object.values(ids).sort());
    // Each tile paints its BlurHash first and then its bytes.
    await expect.poll(() => page.locator("#grid .tile.loaded").count()).toBeGreaterThanOrEqual(3);
    expect(await page.locator("#grid .tile canvas.blur").count()).toBeGreaterThanOrEqual(3);
    await shot("3-uploaded");
  });

  it("ranks the red image first for the prompt \"red\"", async () => {
    await page.fill("#prompt", "red");
    // Indexing runs in the background: search again until the three are searchable.
    await expect
      .poll(
        async () => {
          await page.click("#search-form button[type=submit]");
          await page.waitForTimeout(300);
          return (await tileIds())[0];
        },
        { timeout: 30_000 },
      )
      .toBe(ids.red);
    expect(await page.locator("#status").textContent()).toBe("Results for “red”");
    await shot("4-search-red");
  });

  it("searches by a dropped image", async () => {
    const blue = (await solidImage(32, 32, { r: 30, g: 40, b: 230 })).toString("base64");
    // Runs in the page (as text: this file is compiled without the DOM's types).
    await page.evaluate(`(() => {
      const bytes = Uint8Array.from(atob("${blue}"), (c) => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], "query.png", { type: "image/png" }));
      document.getElementById("like-drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
    })()`);
    await expect.poll(async () => (await tileIds())[0], { timeout: 10_000 }).toBe(ids.blue);
    expect(await page.locator("#status").textContent()).toBe("Results for the dropped image");
    await shot("5-search-dropped");
  });

  it("opens a detail view from the keyboard, with metadata and more like this", async () => {
    await page.locator("#grid .tile").first().focus();
    await page.keyboard.press("Enter");
    await expect.poll(() => page.locator("#detail").evaluate((d) => (d as unknown as { open: boolean }).open)).toBe(true);
    await expect.poll(() => page.locator("#d-title").textContent()).toBe("blue.png");
    await expect.poll(() => page.locator("#d-fields").textContent()).toContain(ids.blue);
    expect(await page.locator("#d-tags").textContent()).toContain("palette");
    await expect.poll(() => page.locator("#d-similar .tile").count()).toBeGreaterThanOrEqual(2);
    await expect.poll(() => page.locator("#d-image").evaluate((img) => (img as unknown as { naturalWidth: number }).naturalWidth)).toBe(64);
    await shot("6-detail");
    await page.keyboard.press("Escape");
    await expect.poll(() => page.locator("#detail").evaluate((d) => (d as unknown as { open: boolean }).open)).toBe(false);
  });

  it("generates an image and shows the credits fall", async () => {
    await page.click("#clear-search");
    await page.click("#generate-panel summary");
    await page.fill("#g-prompt", "a lighthouse in a storm");
    await page.selectOption("#g-model", "local:gradient");
    expect(await page.locator("#g-cost").textContent()).toBe("Costs 1 credits; you have 5.");
    await page.click("#generate-form button[type=submit]");
    await expect.poll(() => page.locator("#g-result").textContent(), { timeout: 20_000 }).toMatch(/^Charged 1 credits; 4 left\. Stored as image \d+\.$/);
    await expect.poll(() => page.locator("#account").textContent()).toBe("painter · 4 credits");
    await expect.poll(() => page.locator("#g-image").evaluate((img) => (img as unknown as { naturalWidth: number }).naturalWidth)).toBeGreaterThan(0);
    await shot("7-generated");
  });

  it("fits a phone-width screen", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    await expect.poll(() => page.locator("#grid .tile").count()).toBeGreaterThanOrEqual(4);
    const overflow = await page.evaluate<number>("document.documentElement.scrollWidth - window.innerWidth");
    expect(overflow).toBeLessThanOrEqual(0);
    await shot("8-phone");
    expect(pageErrors).toEqual([]);
  });
});
