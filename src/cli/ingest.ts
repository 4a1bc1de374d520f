import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { GlimpseError, Status } from "../client/index.js";
import { Visibility } from "../gen/glimpse/image/v1/image.js";
import { CONNECTION_OPTIONS, CONNECTION_USAGE, EXIT, integerFlag, parseCommand, UsageError, type CommandSpec, type ParseArgsOptions } from "./args.js";
import { CLIENT_ENV, connect, DEFAULT_ADDRESS, type CliContext } from "./context.js";
import { readSidecar, SidecarError, uploadRequestId, walk, type ImageFile } from "./ingest-files.js";
import { IngestJournal } from "./ingest-journal.js";
import { Progress } from "./progress.js";

const SPEC = {
  name: "glimpse ingest",
  positionals: [1, 1],
  options: {
    ...CONNECTION_OPTIONS,
    concurrency: { type: "string" },
    tag: { type: "string", multiple: true },
    public: { type: "boolean" },
    "no-index": { type: "boolean" },
    "wait-for-index": { type: "boolean" },
    journal: { type: "string" },
    fresh: { type: "boolean" },
    json: { type: "boolean" },
  },
  usage: `usage: glimpse ingest <dir> [flags]

Uploads every image under <dir> (recursively) through the gRPC API.
  - tags: the sub-folder names (animals/dogs/x.jpg -> animals, dogs), the --tag flags, and
    the tags of an optional sidecar x.jpg.json ({"tags": [...], "visibility": "public",
    "meta": {...}})
  - bytes already stored by the account are not stored twice (counted as deduplicated)
  - run it again after an interruption: files stored before are skipped without being sent
    (a journal under $XDG_CACHE_HOME/glimpse/ingest remembers them; each upload's request id
    is derived from its path and bytes, so a resent file is never stored twice either)
  - files that are not images (by extension) and hidden files are skipped and counted

flags:
  --concurrency <n>  uploads in flight at once (default 4, at most 64)
  --tag <tag>        add this tag to every image (repeatable)
  --public           store images as public (a sidecar's visibility wins)
  --no-index         store without embedding the images for search
  --wait-for-index   answer each upload only once it is searchable (for a search right after)
  --journal <file>   where to keep the journal (default: per folder, server and key)
  --fresh            ignore the journal and send every file again
  --json             print the summary as JSON

Progress goes to stderr (a bar on a terminal, a line per tenth of the files otherwise), the
summary to stdout. Exit status: 0 when every image is stored, 1 when any was refused or
failed, 2 for bad usage.

${CONNECTION_USAGE}
`,
} as const satisfies CommandSpec<ParseArgsOptions>;

/** The outcome of one image file. */
type Outcome =
  | { kind: "ingested" | "deduplicated" | "stored-before"; imageId: string }
  | { kind: "refused" | "failed"; reason: string };

/** The counts and reasons the summary reports. */
export interface IngestSummary {
  ingested: number;
  deduplicated: number;
  /** Stored by an earlier run: skipped unsent when the journal has them, else answered from the request id. */
  storedBefore: number;
  refused: { path: string; reason: string }[];
  failed: { path: string; reason: string }[];
  /** Calls retried after UNAVAILABLE or RESOURCE_EXHAUSTED (each retry counts). */
  retried: number;
  /** Files that are not images, skipped. */
  skippedNotImages: string[];
  /** Images not attempted because the run was interrupted or stopped. */
  notAttempted: number;
  bytesSent: number;
}

/** Errors that would fail every other file as well: the run stops at the first. */
const FATAL = new Set<Status>([Status.UNAUTHENTICATED, Status.PERMISSION_DENIED]);
/** Errors that are the file's own fault: sending it again would not help. */
const REFUSED = new Set<Status>([Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION, Status.OUT_OF_RANGE]);

/** `glimpse ingest <dir>`: returns the exit status. */
export async function ingestCommand(argv: readonly string[], context: CliContext): Promise<number> {
  const parsed = parseCommand(argv, SPEC);
  if (!parsed) {
    context.stdout.write(SPEC.usage);
    return EXIT.ok;
  }
  const { values, positionals } = parsed;
  const root = path.resolve(positionals[0]);
  const rootStat = await stat(root).catch(() => undefined);
  if (!rootStat?.isDirectory()) throw new UsageError(`${positionals[0]} is not a directory`);
  const concurrency = integerFlag(values.concurrency, "--concurrency", 1, 64, 4);
  const extraTags = values.tag ?? [];
  const summary: IngestSummary = {
    ingested: 0,
    deduplicated: 0,
    storedBefore: 0,
    refused: [],
    failed: [],
    retried: 0,
    skippedNotImages: [],
    notAttempted: 0,
    bytesSent: 0,
  };
  const startedAt = Date.now();
  const client = connect(context, values, () => summary.retried++);
  try {
    const address = values.address ?? context.env[CLIENT_ENV.address] ?? DEFAULT_ADDRESS;
    const key = values.key ?? context.env[CLIENT_ENV.key] ?? "";
    const journalFile = values.journal ?? IngestJournal.defaultPath(context.env, root, address, key);
    const journal = await IngestJournal.open(journalFile);
    const { images, skipped } = await walk(root);
    summary.skippedNotImages = skipped;
    const progress = new Progress(
      context.stderr,
      images.length,
      images.reduce((sum, f) => sum + f.size, 0),
      "ingest",
    );

    let stopped: string | undefined;
    const upload = async (file: ImageFile): Promise<Outcome> => {
      if (!values.fresh) {
        const before = journal.stored(file.relative, file.size, file.mtimeMs);
        if (before) return { kind: "stored-before", imageId: before.imageId };
      }
      let sidecar;
      try {
        sidecar = file.sidecar ? await readSidecar(file.sidecar) : undefined;
      } catch (err) {
        if (err instanceof SidecarError) return { kind: "refused", reason: err.message };
        throw err;
      }
      const content = await readFile(file.absolute);
      const sha256 = createHash("sha256").update(content).digest("hex");
      const entry = { path: file.relative, size: file.size, mtimeMs: file.mtimeMs, sha256 };
      // The same bytes earlier in this run (or an earlier one): the server would only answer
      // with that image, so they are not sent.
      const same = values.fresh ? undefined : journal.hasContent(sha256);
      if (same) {
        await journal.record({ ...entry, imageId: same.imageId });
        return { kind: "deduplicated", imageId: same.imageId };
      }
      const tags = [...new Set([...file.folderTags, ...extraTags, ...(sidecar?.tags ?? [])])];
      try {
        const { image } = await client.images.uploadImage(
          {
            content,
            fileName: path.basename(file.relative),
            tags,
            meta: sidecar?.meta,
            visibility: sidecar?.visibility ?? (values.public ? Visibility.VISIBILITY_PUBLIC : Visibility.VISIBILITY_UNSPECIFIED),
            index: values["no-index"] ? false : undefined,
            waitForIndex: values["wait-for-index"] ?? false,
            requestId: uploadRequestId(file.relative, sha256),
          },
          { signal: context.signal },
        );
        summary.bytesSent += content.length;
        await journal.record({ ...entry, imageId: image!.id });
        if (image!.deduplicated) return { kind: "deduplicated", imageId: image!.id };
        // The server answered a request id it had seen (a run whose journal was lost, or
        // --fresh): the image was stored by an earlier run, not by this one.
        if (image!.createdAt && image!.createdAt.getTime() < startedAt) return { kind: "stored-before", imageId: image!.id };
        return { kind: "ingested", imageId: image!.id };
      } catch (err) {
        if (!(err instanceof GlimpseError)) throw err;
        if (FATAL.has(err.code)) stopped ??= `${err.codeName}: ${err.details}`;
        return { kind: REFUSED.has(err.code) ? "refused" : "failed", reason: describe(err) };
      }
    };

    let next = 0;
    const worker = async () => {
      while (next < images.length && !stopped && !context.signal.aborted) {
        const file = images[next++];
        let outcome: Outcome;
        try {
          outcome = await upload(file);
        } catch (err) {
          if (context.signal.aborted) {
            summary.notAttempted++;
            continue;
          }
          outcome = { kind: "failed", reason: err instanceof Error ? err.message : String(err) };
        }
        if ("reason" in outcome) (outcome.kind === "refused" ? summary.refused : summary.failed).push({ path: file.relative, reason: outcome.reason });
        else if (outcome.kind === "ingested") summary.ingested++;
        else if (outcome.kind === "deduplicated") summary.deduplicated++;
        else summary.storedBefore++;
        progress.advance(file.size);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, images.length)) }, worker));
    progress.end();
    summary.notAttempted += images.length - next;

    if (values.json) context.stdout.write(`${JSON.stringify({ ...summary, journal: journal.file }, null, 2)}\n`);
    else context.stdout.write(formatSummary(summary));
    if (stopped) {
      context.stderr.write(`glimpse ingest: stopped: ${stopped}\n`);
      return EXIT.failed;
    }
    if (context.signal.aborted) {
      context.stderr.write("glimpse ingest: interrupted; run the same command again to continue\n");
      return EXIT.interrupted;
    }
    return summary.refused.length + summary.failed.length > 0 ? EXIT.failed : EXIT.ok;
  } finally {
    client.close();
  }
}

/** `INVALID_ARGUMENT content: not a supported image` from an error's code and details. */
function describe(err: GlimpseError): string {
  const retried = err.attempts > 1 ? ` (after ${err.attempts} attempts)` : "";
  return `${err.codeName}: ${err.details}${retried}`;
}

/** The human summary printed at the end of a run. */
export function formatSummary(s: IngestSummary): string {
  const lines = [
    `ingested       ${s.ingested}`,
    `deduplicated   ${s.deduplicated}`,
    `stored before  ${s.storedBefore} (by an earlier run)`,
    `refused        ${s.refused.length}`,
    ...s.refused.map((r) => `  ${r.path}: ${r.reason}`),
    `failed         ${s.failed.length}`,
    ...s.failed.map((r) => `  ${r.path}: ${r.reason}`),
    `retried        ${s.retried} calls`,
    `not images     ${s.skippedNotImages.length} skipped`,
  ];
  if (s.notAttempted > 0) lines.push(`not attempted  ${s.notAttempted}`);
  return `${lines.join("\n")}\n`;
}
