import { readFile, stat } from "node:fs/promises";
import type { SearchImagesRequest } from "../gen/glimpse/image/v1/image_service.js";
import { CONNECTION_OPTIONS, CONNECTION_USAGE, EXIT, integerFlag, numberFlag, parseCommand, table, UsageError, type CommandSpec, type ParseArgsOptions } from "./args.js";
import { connect, type CliContext } from "./context.js";

const SPEC = {
  name: "glimpse search",
  positionals: [0, 1],
  options: {
    ...CONNECTION_OPTIONS,
    like: { type: "string" },
    tag: { type: "string", multiple: true },
    limit: { type: "string" },
    threshold: { type: "string" },
    json: { type: "boolean" },
  },
  usage: `usage: glimpse search "<prompt>" [flags]
       glimpse search --like <file|id> [flags]

Semantic search: images like a prompt, like an image file (embedded for this query only), or
like a stored image (by id). Prints a ranked table: rank, id, score, tags, url.

flags:
  --like <file|id>     search by likeness to an image file or a stored image's id
  --tag <tag>          only images with this tag (repeatable: all of them)
  --limit <n>          results (default 10, at most 250)
  --threshold <score>  only results scoring at least this, in [0, 1]
  --json               print the results as a JSON array

${CONNECTION_USAGE}
`,
} as const satisfies CommandSpec<ParseArgsOptions>;

/** `glimpse search`: returns the exit status. */
export async function searchCommand(argv: readonly string[], context: CliContext): Promise<number> {
  const parsed = parseCommand(argv, SPEC);
  if (!parsed) {
    context.stdout.write(SPEC.usage);
    return EXIT.ok;
  }
  const { values, positionals } = parsed;
  const prompt = positionals[0];
  if ((prompt === undefined) === (values.like === undefined)) {
    throw new UsageError(prompt === undefined ? "give a prompt or --like <file|id>" : "give a prompt or --like, not both");
  }
  if (prompt !== undefined && prompt.trim() === "") throw new UsageError("the prompt is empty");
  const limit = integerFlag(values.limit, "--limit", 1, 250, 10);
  const threshold = numberFlag(values.threshold, "--threshold", 0, 1);
  const query = prompt !== undefined ? ({ $case: "prompt", value: prompt } as const) : await likeQuery(values.like!);
  const request: Partial<SearchImagesRequest> = {
    query,
    limit,
    threshold: threshold ?? 0,
    filter: values.tag ? ({ tags: values.tag } as SearchImagesRequest["filter"]) : undefined,
    fields: ["id", "name", "tags", "url"],
  };
  const client = connect(context, values);
  try {
    const response = await client.images.searchImages(request, { signal: context.signal });
    const results = response.results.map((r) => ({ id: r.id, score: r.score, name: r.name, tags: r.tags, url: r.url }));
    if (values.json) {
      context.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
      return EXIT.ok;
    }
    if (results.length === 0) {
      context.stderr.write("no results\n");
      return EXIT.ok;
    }
    context.stdout.write(
      table([
        ["RANK", "ID", "SCORE", "TAGS", "URL"],
        ...results.map((r, i) => [String(i + 1), r.id, r.score.toFixed(4), r.tags.join(",") || "-", r.url]),
      ]),
    );
    return EXIT.ok;
  } finally {
    client.close();
  }
}

/** `--like`: an existing file's bytes, or else a stored image's id. */
async function likeQuery(like: string): Promise<SearchImagesRequest["query"]> {
  const file = await stat(like).catch(() => undefined);
  if (file?.isFile()) return { $case: "likeImageContent", value: await readFile(like) };
  if (/^\d{1,19}$/.test(like)) return { $case: "likeImageId", value: like };
  throw new UsageError(`--like ${JSON.stringify(like)} is neither a file nor an image id`);
}
