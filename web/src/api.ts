// The public JSON API, as any client sees it: grpc-gateway-style routes, a bearer key, and
// errors as google.rpc.Status ({code, message, details}).

export interface Image {
  id: string;
  url: string;
  fileName: string;
  mediaType: string;
  width: number;
  height: number;
  byteSize: string;
  hash: string;
  tags: string[];
  nsfwLevel: string;
  createdAt: string;
  username: string;
  owner: string;
  visibility: string;
  indexStatus: string;
  deduplicated?: boolean;
  meta?: Record<string, unknown> | null;
  stats?: Record<string, string>;
}

export interface SearchResult {
  id: string;
  score: number;
  image?: Image;
}

export interface Comment {
  id: string;
  username: string;
  text: string;
  createdAt: string;
}

export interface Model {
  id: string;
  displayName: string;
  creditCost: string;
  aspectRatios: string[];
  available: boolean;
  unavailableReason: string;
}

export interface Account {
  id: string;
  email: string;
  username: string;
  creditBalance: string;
  reservedCredits: string;
  isAdmin: boolean;
}

export interface Filter {
  tags: string[];
  nsfwLevel: string;
  period: string;
}

/** An error the API answered, in words a person can read. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: number,
    message: string,
    /** "field: what is wrong" for each field a BadRequest names. */
    readonly violations: string[],
  ) {
    super(message);
  }

  /** The message with the fields it names, for showing. */
  describe(): string {
    return this.violations.length ? `${this.message} (${this.violations.join("; ")})` : this.message;
  }
}

interface StatusDetail {
  "@type"?: string;
  fieldViolations?: { field: string; description: string }[];
  retryDelay?: string;
}

/** Reads a google.rpc.Status body (bare, or wrapped in {"error": …} by a stream route). */
export function errorFrom(status: number, text: string): ApiError {
  try {
    const parsed = JSON.parse(text) as { code?: number; message?: string; details?: StatusDetail[]; error?: unknown };
    const body = (parsed.error ?? parsed) as { code?: number; message?: string; details?: StatusDetail[] };
    const violations = (body.details ?? []).flatMap((d) => (d.fieldViolations ?? []).map((v) => `${v.field}: ${v.description}`));
    const retry = (body.details ?? []).find((d) => d.retryDelay)?.retryDelay;
    const message = body.message || `HTTP ${status}`;
    return new ApiError(status, body.code ?? 0, retry ? `${message} (retry in ${retry})` : message, violations);
  } catch {
    return new ApiError(status, 0, text.trim().slice(0, 200) || `HTTP ${status}`, []);
  }
}

/** A client of the bridge this page is served by, with one key. */
export class Api {
  constructor(private key: string) {}

  setKey(key: string): void {
    this.key = key;
  }

  get hasKey(): boolean {
    return this.key !== "";
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.key ? { authorization: `Bearer ${this.key}`, ...extra } : extra;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(path, {
      method,
      headers: this.headers(body === undefined ? {} : { "content-type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw errorFrom(res.status, text);
    return (text ? JSON.parse(text) : {}) as T;
  }

  account(): Promise<{ account: Account }> {
    return this.call("GET", "/v1/account");
  }

  list(filter: Filter, sort: string, pageToken: string): Promise<{ images: Image[]; nextPageToken: string }> {
    const q = new URLSearchParams({ sort, pageSize: "30" });
    for (const tag of filter.tags) q.append("filter.tags", tag);
    if (filter.nsfwLevel) q.set("filter.nsfwLevel", filter.nsfwLevel);
    if (filter.period) q.set("filter.period", filter.period);
    if (pageToken) q.set("pageToken", pageToken);
    return this.call("GET", `/v1/images?${q}`);
  }

  search(
    query: { prompt: string } | { likeImageId: string } | { likeImageContent: string },
    filter: Filter | undefined,
    offset: number,
    limit: number,
  ): Promise<{ results: SearchResult[]; total: string }> {
    const body: Record<string, unknown> = { ...query, offset, limit, fields: ["id", "image"] };
    if (filter) {
      body.filter = {
        tags: filter.tags,
        ...(filter.nsfwLevel ? { nsfwLevel: filter.nsfwLevel } : {}),
        ...(filter.period ? { period: filter.period } : {}),
      };
    }
    return this.call("POST", "/v1/images:search", body);
  }

  async image(id: string): Promise<Image> {
    return (await this.call<{ image: Image }>("GET", `/v1/images/${encodeURIComponent(id)}`)).image;
  }

  comments(id: string): Promise<{ comments: Comment[] }> {
    return this.call("GET", `/v1/images/${encodeURIComponent(id)}/comments`);
  }

  duplicates(id: string): Promise<{ duplicates: { imageId: string; hammingDistance: number }[] }> {
    return this.call("GET", `/v1/images/${encodeURIComponent(id)}/duplicates`);
  }

  react(id: string, kind: string): Promise<unknown> {
    return this.call("POST", `/v1/images/${encodeURIComponent(id)}/reactions`, { kind });
  }

  models(): Promise<{ models: Model[] }> {
    return this.call("GET", "/v1/models");
  }

  generate(prompt: string, modelId: string, aspectRatio: string): Promise<{
    generation: { id: string; imageId: string; creditCost: string };
    credits: { charged: string; remaining: string };
  }> {
    return this.call("POST", "/v1/generations", { prompt, modelId, aspectRatio, requestId: crypto.randomUUID() });
  }

  /** The image's bytes as an object URL (the content route wants the key, which <img> cannot send). */
  async contentUrl(id: string, signal?: AbortSignal): Promise<string> {
    const res = await fetch(`/v1/images/${encodeURIComponent(id)}/content`, { headers: this.headers(), signal });
    if (!res.ok) throw errorFrom(res.status, await res.text());
    return URL.createObjectURL(await res.blob());
  }

  /** Uploads one file, reporting the share of its body sent. */
  upload(
    file: File,
    fields: { tags: string[]; visibility: string },
    progress: (sent: number) => void,
  ): Promise<{ image: Image }> {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onerror = () => reject(new ApiError(0, 0, `could not read ${file.name}`, []));
      reader.onload = () => {
        const dataUrl = reader.result as string;
        const content = dataUrl.slice(dataUrl.indexOf(",") + 1);
        const xhr = new XMLHttpRequest();
        xhr.open("POST", "/v1/images");
        for (const [name, value] of Object.entries(this.headers({ "content-type": "application/json" }))) xhr.setRequestHeader(name, value);
        xhr.upload.onprogress = (e) => e.lengthComputable && progress(e.loaded / e.total);
        xhr.onerror = () => reject(new ApiError(0, 0, "the upload was cut off", []));
        xhr.onload = () => {
          if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText));
          else reject(errorFrom(xhr.status, xhr.responseText));
        };
        xhr.send(JSON.stringify({ content, fileName: file.name, tags: fields.tags, visibility: fields.visibility }));
      };
      reader.readAsDataURL(file);
    });
  }
}

/** A file's bytes as base64, for a like-image search. */
export function fileBase64(file: Blob): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onerror = () => reject(new ApiError(0, 0, "could not read the image", []));
    reader.onload = () => {
      const dataUrl = reader.result as string;
      resolve(dataUrl.slice(dataUrl.indexOf(",") + 1));
    };
    reader.readAsDataURL(file);
  });
}
