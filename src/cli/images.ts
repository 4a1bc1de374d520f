import { writeFile } from "node:fs/promises";
import { Image, indexStatusToJSON, visibilityToJSON } from "../gen/glimpse/image/v1/image.js";
import { ImageSort, type ListImagesRequest } from "../gen/glimpse/image/v1/image_service.js";
import { CONNECTION_OPTIONS, CONNECTION_USAGE, EXIT, formatBytes, integerFlag, parseCommand, table, UsageError, type CommandSpec, type ParseArgsOptions } from "./args.js";
import { connect, type CliContext } from "./context.js";

const USAGE = `usage: glimpse images <command> [flags]

commands:
  list [--tag <tag>]... [--limit <n>] [--page-token <t>] [--json]   newest first
  get <id> [--out <file>] [--json]                                  an image's metadata (and bytes)
  rm <id>...                                                        delete images

${CONNECTION_USAGE}
`;

const LIST = {
  name: "glimpse images list",
  positionals: [0, 0],
  options: { ...CONNECTION_OPTIONS, tag: { type: "string", multiple: true }, limit: { type: "string" }, "page-token": { type: "string" }, json: { type: "boolean" } },
  usage: `usage: glimpse images list [--tag <tag>]... [--limit <n>] [--page-token <token>] [--json]

Lists the images the key may read, newest first: id, name, tags, size, visibility, created.
  --tag <tag>           only images with this tag (repeatable: all of them)
  --limit <n>           images per page (default 20, at most 100)
  --page-token <token>  the next page (printed on stderr after a full page)
  --json                print the page as JSON

${CONNECTION_USAGE}
`,
} as const satisfies CommandSpec<ParseArgsOptions>;

const GET = {
  name: "glimpse images get",
  positionals: [1, 1],
  options: { ...CONNECTION_OPTIONS, out: { type: "string" }, json: { type: "boolean" } },
  usage: `usage: glimpse images get <id> [--out <file>] [--json]

Prints an image's metadata; --out also writes its bytes to <file>.

${CONNECTION_USAGE}
`,
} as const satisfies CommandSpec<ParseArgsOptions>;

const RM = {
  name: "glimpse images rm",
  positionals: [1, 1000],
  options: { ...CONNECTION_OPTIONS },
  usage: `usage: glimpse images rm <id>...

Deletes images (their bytes go once no other image uses them). Exit status 1 if any failed.

${CONNECTION_USAGE}
`,
} as const satisfies CommandSpec<ParseArgsOptions>;

/** The sub-command a usage error belongs to, so main prints the right usage text. */
export function imagesUsage(argv: readonly string[]): string {
  return { list: LIST.usage, get: GET.usage, rm: RM.usage }[argv[0] as "list" | "get" | "rm"] ?? USAGE;
}

/** `glimpse images list|get|rm`: returns the exit status. */
export async function imagesCommand(argv: readonly string[], context: CliContext): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === "--help" || sub === "-h" || sub === "help") {
    context.stdout.write(USAGE);
    return EXIT.ok;
  }
  if (sub === "list") return list(rest, context);
  if (sub === "get") return get(rest, context);
  if (sub === "rm") return rm(rest, context);
  throw new UsageError(sub === undefined ? "missing command: list, get or rm" : `unknown images command ${JSON.stringify(sub)}`);
}

function checkId(id: string): string {
  if (!/^\d{1,19}$/.test(id)) throw new UsageError(`image ids are numbers, got ${JSON.stringify(id)}`);
  return id;
}

async function list(argv: readonly string[], context: CliContext): Promise<number> {
  const parsed = parseCommand(argv, LIST);
  if (!parsed) {
    context.stdout.write(LIST.usage);
    return EXIT.ok;
  }
  const { values } = parsed;
  const request: Partial<ListImagesRequest> = {
    pageSize: integerFlag(values.limit, "--limit", 1, 100, 20),
    pageToken: values["page-token"] ?? "",
    sort: ImageSort.IMAGE_SORT_NEWEST,
    filter: values.tag ? ({ tags: values.tag } as ListImagesRequest["filter"]) : undefined,
  };
  const client = connect(context, values);
  try {
    const { images, nextPageToken } = await client.images.listImages(request, { signal: context.signal });
    if (values.json) {
      context.stdout.write(`${JSON.stringify({ images: images.map((i) => Image.toJSON(i)), nextPageToken }, null, 2)}\n`);
      return EXIT.ok;
    }
    context.stdout.write(
      table([
        ["ID", "NAME", "TAGS", "SIZE", "VISIBILITY", "CREATED"],
        ...images.map((i) => [
          i.id,
          i.fileName || "-",
          i.tags.join(",") || "-",
          formatBytes(Number(i.byteSize)),
          visibilityToJSON(i.visibility).replace("VISIBILITY_", "").toLowerCase(),
          i.createdAt?.toISOString() ?? "",
        ]),
      ]),
    );
    if (nextPageToken) context.stderr.write(`next page: --page-token ${nextPageToken}\n`);
    return EXIT.ok;
  } finally {
    client.close();
  }
}

async function get(argv: readonly string[], context: CliContext): Promise<number> {
  const parsed = parseCommand(argv, GET);
  if (!parsed) {
    context.stdout.write(GET.usage);
    return EXIT.ok;
  }
  const { values, positionals } = parsed;
  const id = checkId(positionals[0]);
  const client = connect(context, values);
  try {
    const { image } = await client.images.getImage({ id }, { signal: context.signal });
    if (values.out !== undefined) {
      const body = await client.images.getImageContent({ id }, { signal: context.signal });
      await writeFile(values.out, body.data);
    }
    if (values.json) context.stdout.write(`${JSON.stringify(Image.toJSON(image!), null, 2)}\n`);
    else context.stdout.write(describeImage(image!));
    if (values.out !== undefined) context.stderr.write(`written to ${values.out}\n`);
    return EXIT.ok;
  } finally {
    client.close();
  }
}

async function rm(argv: readonly string[], context: CliContext): Promise<number> {
  const parsed = parseCommand(argv, RM);
  if (!parsed) {
    context.stdout.write(RM.usage);
    return EXIT.ok;
  }
  const ids = parsed.positionals.map(checkId);
  const client = connect(context, parsed.values);
  let failed = 0;
  try {
    for (const id of ids) {
      try {
        await client.images.deleteImage({ id }, { signal: context.signal });
        context.stdout.write(`deleted ${id}\n`);
      } catch (err) {
        if (ids.length === 1) throw err;
        failed++;
        context.stderr.write(`glimpse images rm: ${id}: ${err instanceof Error ? err.message : String(err)}\n`);
      }
    }
    return failed > 0 ? EXIT.failed : EXIT.ok;
  } finally {
    client.close();
  }
}

/** `key: value` lines for the fields a person looks at. */
function describeImage(image: Image): string {
  const rows: [string, string][] = [
    ["id", image.id],
    ["name", image.fileName || "-"],
    ["url", image.url],
    ["type", `${image.mediaType}, ${image.width}x${image.height}, ${formatBytes(Number(image.byteSize))}`],
    ["tags", image.tags.join(", ") || "-"],
    ["visibility", visibilityToJSON(image.visibility).replace("VISIBILITY_", "").toLowerCase()],
    ["index", indexStatusToJSON(image.indexStatus).replace("INDEX_STATUS_", "").toLowerCase() + (image.indexError ? ` (${image.indexError})` : "")],
    ["sha256", image.sha256],
    ["created", image.createdAt?.toISOString() ?? ""],
  ];
  if (image.meta && Object.keys(image.meta).length > 0) rows.push(["meta", JSON.stringify(image.meta)]);
  return table(rows);
}
