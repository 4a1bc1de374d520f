import { decode } from "blurhash";
import { Api, ApiError, fileBase64, type Filter, type Image } from "./api.js";
import "./style.css";

// One page over the public JSON API: a grid of images (listed, or ranked by a search), a
// detail view, uploads and generation. The key is pasted once and kept in local storage.

const KEY_STORAGE = "glimpse.key";
const PAGE = 30;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const api = new Api(localStorage.getItem(KEY_STORAGE) ?? "");

/** What fills the grid: the catalogue listing, or a search ranked by a prompt or an image. */
type Query =
  | { kind: "list" }
  | { kind: "search"; label: string; query: { prompt: string } | { likeImageId: string } | { likeImageContent: string } };

interface Feed {
  query: Query;
  filter: Filter;
  /** Next page: a page token for listings, an offset for searches; undefined when the end came. */
  next: string | number | undefined;
  loading: boolean;
  /** Bumped on every new feed, so answers to an abandoned one are dropped. */
  generation: number;
  shown: Image[];
}

const feed: Feed = { query: { kind: "list" }, filter: readFilter(), next: "", loading: false, generation: 0, shown: [] };
/** Object URLs of loaded image bytes, revoked when their tile goes. */
const objectUrls = new Set<string>();

function readFilter(): Filter {
  const tags = $<HTMLInputElement>("f-tags")
    .value.split(",")
    .map((t) => t.trim())
    .filter(Boolean);
  return { tags, nsfwLevel: $<HTMLSelectElement>("f-nsfw").value, period: $<HTMLSelectElement>("f-period").value };
}

function showError(error: unknown): void {
  const box = $("error");
  box.textContent = error instanceof ApiError ? error.describe() : error instanceof Error ? error.message : String(error);
  box.hidden = false;
}

function clearError(): void {
  $("error").hidden = true;
}

function setStatus(text: string): void {
  $("status").textContent = text;
}

// ---- account and key ----

async function refreshAccount(): Promise<void> {
  const line = $("account");
  if (!api.hasKey) {
    line.textContent = "Paste an API key to see private images, upload and generate; public images show without one.";
    return;
  }
  try {
    const { account } = await api.account();
    line.textContent = `${account.username || account.email || account.id} · ${account.creditBalance} credits`;
    line.dataset.credits = account.creditBalance;
  } catch (error) {
    line.textContent = "";
    showError(error);
  }
}

$<HTMLFormElement>("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $<HTMLInputElement>("key");
  const key = input.value.trim();
  if (!key) return;
  localStorage.setItem(KEY_STORAGE, key);
  api.setKey(key);
  input.value = "";
  input.placeholder = "key saved";
  clearError();
  void refreshAccount();
  void loadModels();
  restart(feed.query);
});

$("forget-key").addEventListener("click", () => {
  localStorage.removeItem(KEY_STORAGE);
  api.setKey("");
  $<HTMLInputElement>("key").placeholder = "glk_…";
  void refreshAccount();
  restart(feed.query);
});

// ---- the grid ----

function restart(query: Query): void {
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls.clear();
  $("grid").replaceChildren();
  feed.query = query;
  feed.filter = readFilter();
  feed.next = query.kind === "list" ? "" : 0;
  feed.shown = [];
  // A page still loading belongs to the feed being left: its answer is dropped on arrival.
  feed.loading = false;
  feed.generation++;
  clearError();
  setStatus(query.kind === "list" ? "Latest images" : `Results for ${query.label}`);
  void loadMore();
}

async function loadMore(): Promise<void> {
  if (feed.loading || feed.next === undefined) return;
  feed.loading = true;
  const generation = feed.generation;
  try {
    let images: Image[];
    let next: string | number | undefined;
    if (feed.query.kind === "list") {
      const page = await api.list(feed.filter, $<HTMLSelectElement>("f-sort").value, String(feed.next));
      images = page.images;
      next = page.nextPageToken || undefined;
    } else {
      const offset = Number(feed.next);
      const page = await api.search(feed.query.query, feed.filter, offset, PAGE);
      images = page.results.flatMap((r) => (r.image ? [{ ...r.image, score: r.score } as Image & { score: number }] : []));
      next = page.results.length === PAGE && offset + PAGE < 10_000 ? offset + PAGE : undefined;
    }
    if (generation !== feed.generation) return;
    feed.next = next;
    for (const image of images) addTile(image);
    if (feed.shown.length === 0) setStatus(feed.query.kind === "list" ? "No images yet: upload some below." : `Nothing found for ${feed.query.label}`);
  } catch (error) {
    if (generation === feed.generation) {
      feed.next = undefined;
      showError(error);
    }
  } finally {
    if (generation === feed.generation) feed.loading = false;
  }
  // A short first page may not fill the screen: keep going while the sentinel shows.
  if (generation === feed.generation && feed.next !== undefined && sentinelVisible()) void loadMore();
}

function sentinelVisible(): boolean {
  return $("more").getBoundingClientRect().top < window.innerHeight + 200;
}

new IntersectionObserver((entries) => entries.some((e) => e.isIntersecting) && void loadMore(), { rootMargin: "200px" }).observe($("more"));

/** A canvas painted with the image's BlurHash, shown until its bytes arrive. */
function placeholder(image: Image): HTMLCanvasElement {
  const canvas = document.createElement("canvas");
  canvas.width = 32;
  canvas.height = Math.max(1, Math.round((32 * (image.height || 1)) / (image.width || 1)));
  canvas.className = "blur";
  if (image.hash) {
    try {
      const pixels = decode(image.hash, canvas.width, canvas.height);
      const ctx = canvas.getContext("2d");
      if (ctx) {
        const data = ctx.createImageData(canvas.width, canvas.height);
        data.data.set(pixels);
        ctx.putImageData(data, 0, 0);
      }
    } catch {
      // An unreadable hash leaves the plain background.
    }
  }
  return canvas;
}

function addTile(image: Image & { score?: number }): void {
  feed.shown.push(image);
  const index = feed.shown.length - 1;
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "tile";
  button.dataset.id = image.id;
  button.setAttribute("aria-label", `${image.fileName || `image ${image.id}`}${image.tags.length ? `, tags ${image.tags.join(", ")}` : ""}`);
  button.style.aspectRatio = `${image.width || 1} / ${image.height || 1}`;
  button.append(placeholder(image));
  if (image.score !== undefined) {
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = image.score.toFixed(3);
    button.append(score);
  }
  button.addEventListener("click", () => void openDetail(index));
  item.append(button);
  $("grid").append(item);
  void loadBytes(image.id, button);
}

async function loadBytes(id: string, into: HTMLElement): Promise<void> {
  try {
    const url = await api.contentUrl(id);
    objectUrls.add(url);
    const img = document.createElement("img");
    img.alt = "";
    img.decoding = "async";
    img.onload = () => into.classList.add("loaded");
    img.src = url;
    into.append(img);
  } catch {
    into.classList.add("broken");
  }
}

// ---- search ----

$<HTMLFormElement>("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const prompt = $<HTMLInputElement>("prompt").value.trim();
  restart(prompt ? { kind: "search", label: `“${prompt}”`, query: { prompt } } : { kind: "list" });
});

$("clear-search").addEventListener("click", () => {
  $<HTMLInputElement>("prompt").value = "";
  restart({ kind: "list" });
});

for (const id of ["f-tags", "f-nsfw", "f-sort", "f-period"]) $(id).addEventListener("change", () => restart(feed.query));

async function searchByFile(file: Blob): Promise<void> {
  if (!file.type.startsWith("image/")) return showError(new Error("that is not an image"));
  restart({ kind: "search", label: "the dropped image", query: { likeImageContent: await fileBase64(file) } });
}

function dropZone(zone: HTMLElement, onFiles: (files: File[]) => void): void {
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onFiles([...(e.dataTransfer?.files ?? [])]);
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      zone.querySelector<HTMLInputElement>("input[type=file]")?.click();
    }
  });
}

dropZone($("like-drop"), (files) => files[0] && void searchByFile(files[0]));
$<HTMLInputElement>("like-file").addEventListener("change", (e) => {
  const file = (e.target as HTMLInputElement).files?.[0];
  if (file) void searchByFile(file);
});
document.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
  if (file) void searchByFile(file);
});

// ---- detail ----

const dialog = $<HTMLDialogElement>("detail");
let detailIndex = -1;
let detailUrl: string | undefined;

async function openDetail(index: number): Promise<void> {
  const summary = feed.shown[index];
  if (!summary) return;
  detailIndex = index;
  if (!dialog.open) dialog.showModal();
  $("d-title").textContent = summary.fileName || `Image ${summary.id}`;
  if (detailUrl) URL.revokeObjectURL(detailUrl);
  detailUrl = undefined;
  const img = $<HTMLImageElement>("d-image");
  img.removeAttribute("src");
  for (const id of ["d-fields", "d-tags", "d-reactions", "d-comments", "d-similar", "d-duplicates"]) $(id).replaceChildren();
  $("d-meta").textContent = "";
  try {
    const [image, comments, url] = await Promise.all([api.image(summary.id), api.comments(summary.id), api.contentUrl(summary.id)]);
    if (detailIndex !== index) return URL.revokeObjectURL(url);
    detailUrl = url;
    img.src = url;
    img.alt = image.fileName || `image ${image.id}`;
    const fields: [string, string][] = [
      ["id", image.id],
      ["size", `${image.width} × ${image.height}, ${image.byteSize} bytes, ${image.mediaType}`],
      ["created", new Date(image.createdAt).toLocaleString()],
      ["owner", image.username || image.owner],
      ["visibility", image.visibility.replace("VISIBILITY_", "").toLowerCase()],
      ["index", image.indexStatus.replace("INDEX_STATUS_", "").toLowerCase()],
      ["nsfw", image.nsfwLevel.replace("NSFW_LEVEL_", "").toLowerCase()],
    ];
    $("d-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
    $("d-tags").replaceChildren(...image.tags.map((t) => el("span", t, "tag")));
    const stats = image.stats ?? {};
    const reactions: [kind: string, label: string, count: string][] = [
      ["REACTION_KIND_LIKE", "Like", stats.likeCount ?? "0"],
      ["REACTION_KIND_HEART", "Heart", stats.heartCount ?? "0"],
      ["REACTION_KIND_LAUGH", "Laugh", stats.laughCount ?? "0"],
      ["REACTION_KIND_CRY", "Cry", stats.cryCount ?? "0"],
    ];
    $("d-reactions").replaceChildren(
      ...reactions.map(([kind, label, count]) => {
        const b = el("button", `${label} ${count}`) as HTMLButtonElement;
        b.type = "button";
        b.addEventListener("click", () =>
          api.react(image.id, kind).then(() => openDetail(index), showError),
        );
        return b;
      }),
    );
    $("d-comments").replaceChildren(
      ...(comments.comments.length ? comments.comments.map((c) => el("li", `${c.username || "someone"}: ${c.text}`)) : [el("li", "No comments.")]),
    );
    $("d-meta").textContent = image.meta && Object.keys(image.meta).length ? JSON.stringify(image.meta, null, 2) : "—";
    void fillStrip("d-similar", () => api.search({ likeImageId: image.id }, undefined, 0, 9).then((r) => r.results.flatMap((x) => (x.image && x.id !== image.id ? [x.image] : []))));
    void fillStrip("d-duplicates", async () => {
      const { duplicates } = await api.duplicates(image.id);
      return Promise.all(duplicates.slice(0, 8).map((d) => api.image(d.imageId)));
    });
  } catch (error) {
    showError(error);
  }
}

async function fillStrip(listId: string, load: () => Promise<Image[]>): Promise<void> {
  const list = $(listId);
  const index = detailIndex;
  try {
    const images = await load();
    if (index !== detailIndex) return;
    if (images.length === 0) return void list.replaceChildren(el("li", "None."));
    list.replaceChildren(
      ...images.map((image) => {
        const li = document.createElement("li");
        const b = document.createElement("button");
        b.type = "button";
        b.className = "tile small";
        b.setAttribute("aria-label", image.fileName || `image ${image.id}`);
        b.append(placeholder(image));
        b.addEventListener("click", () => {
          const known = feed.shown.findIndex((s) => s.id === image.id);
          if (known >= 0) return void openDetail(known);
          feed.shown.push(image);
          void openDetail(feed.shown.length - 1);
        });
        li.append(b);
        void loadBytes(image.id, b);
        return li;
      }),
    );
  } catch (error) {
    if (index === detailIndex) list.replaceChildren(el("li", error instanceof ApiError ? error.describe() : String(error)));
  }
}

function el(tag: string, text: string, className?: string): HTMLElement {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

$("d-close").addEventListener("click", () => dialog.close());
dialog.addEventListener("close", () => {
  detailIndex = -1;
  if (detailUrl) URL.revokeObjectURL(detailUrl);
  detailUrl = undefined;
});
dialog.addEventListener("keydown", (e) => {
  if (e.key === "ArrowRight" && detailIndex + 1 < feed.shown.length) void openDetail(detailIndex + 1);
  if (e.key === "ArrowLeft" && detailIndex > 0) void openDetail(detailIndex - 1);
});

// ---- upload ----

function uploadFiles(files: File[]): void {
  const tags = $<HTMLInputElement>("upload-tags")
    .value.split(",")
    .map((t) => t.trim())
    .filter(Boolean);
  const visibility = $<HTMLSelectElement>("upload-visibility").value;
  for (const file of files) {
    const row = document.createElement("li");
    const name = el("span", file.name, "name");
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    const state = el("span", "sending", "state");
    row.append(name, bar, state);
    $("uploads").append(row);
    api
      .upload(file, { tags, visibility }, (sent) => (bar.value = sent))
      .then(({ image }) => {
        bar.value = 1;
        state.textContent = image.deduplicated ? `already stored (${image.id})` : `stored (${image.id})`;
        row.classList.add("done");
        if (feed.query.kind === "list") restart(feed.query);
      })
      .catch((error: unknown) => {
        state.textContent = error instanceof ApiError ? error.describe() : String(error);
        row.classList.add("failed");
      });
  }
}

dropZone($("upload-drop"), uploadFiles);
$<HTMLInputElement>("upload-files").addEventListener("change", (e) => {
  const input = e.target as HTMLInputElement;
  uploadFiles([...(input.files ?? [])]);
  input.value = "";
});

// ---- generate ----

let models: { id: string; displayName: string; creditCost: string; aspectRatios: string[]; available: boolean; unavailableReason: string }[] = [];

async function loadModels(): Promise<void> {
  if (!api.hasKey) return;
  try {
    models = (await api.models()).models;
    const select = $<HTMLSelectElement>("g-model");
    select.replaceChildren(
      ...models.map((m) => {
        const option = document.createElement("option");
        option.value = m.id;
        option.textContent = `${m.displayName || m.id} (${m.creditCost} credits)${m.available ? "" : " — unavailable"}`;
        option.disabled = !m.available;
        return option;
      }),
    );
    const firstAvailable = models.find((m) => m.available);
    if (firstAvailable) select.value = firstAvailable.id;
    showModel();
  } catch (error) {
    showError(error);
  }
}

function showModel(): void {
  const model = models.find((m) => m.id === $<HTMLSelectElement>("g-model").value);
  const aspect = $<HTMLSelectElement>("g-aspect");
  aspect.replaceChildren(...(model?.aspectRatios ?? []).map((r) => Object.assign(document.createElement("option"), { value: r, textContent: r })));
  const credits = $("account").dataset.credits;
  $("g-cost").textContent = model ? `Costs ${model.creditCost} credits${credits ? `; you have ${credits}` : ""}.` : "";
}

$("g-model").addEventListener("change", showModel);

$<HTMLFormElement>("generate-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const button = (e.target as HTMLFormElement).querySelector("button")!;
  button.disabled = true;
  $("g-result").textContent = "Generating…";
  try {
    const { generation, credits } = await api.generate(
      $<HTMLInputElement>("g-prompt").value,
      $<HTMLSelectElement>("g-model").value,
      $<HTMLSelectElement>("g-aspect").value,
    );
    $("g-result").textContent = `Charged ${credits.charged} credits; ${credits.remaining} left. Stored as image ${generation.imageId}.`;
    const img = $<HTMLImageElement>("g-image");
    img.src = await api.contentUrl(generation.imageId);
    img.alt = $<HTMLInputElement>("g-prompt").value;
    img.hidden = false;
    await refreshAccount();
    showModel();
  } catch (error) {
    $("g-result").textContent = error instanceof ApiError ? error.describe() : String(error);
  } finally {
    button.disabled = false;
  }
});

// ---- start ----

if (api.hasKey) $<HTMLInputElement>("key").placeholder = "key saved";
void refreshAccount();
void loadModels();
restart({ kind: "list" });
