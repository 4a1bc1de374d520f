import { writeFile } from "node:fs/promises";
import { Visibility } from "../gen/glimpse/image/v1/image.js";
import { CONNECTION_OPTIONS, CONNECTION_USAGE, EXIT, formatBytes, parseCommand, table, UsageError, type CommandSpec, type ParseArgsOptions } from "./args.js";
import { connect, type CliContext } from "./context.js";

const SPEC = {
  name: "glimpse generate",
  positionals: [0, 1],
  options: {
    ...CONNECTION_OPTIONS,
    model: { type: "string" },
    aspect: { type: "string" },
    style: { type: "string" },
    out: { type: "string" },
    public: { type: "boolean" },
    models: { type: "boolean" },
    json: { type: "boolean" },
  },
  usage: `usage: glimpse generate "<prompt>" --model <id> [--aspect 16:9] [--out file.png] [flags]
       glimpse generate --models

Generates an image (stored in the catalogue), writes it to --out and prints what it cost
and the credits left.

flags:
  --model <id>      generation model, e.g. local:gradient (--models lists them)
  --aspect <w:h>    aspect ratio, e.g. 1:1, 16:9 (default: the model's)
  --style <text>    a style appended to the prompt
  --out <file>      write the image here
  --public          store the image as public
  --models          list the models with their cost and availability
  --json            print the result as JSON (without the image bytes)

${CONNECTION_USAGE}
`,
} as const satisfies CommandSpec<ParseArgsOptions>;

/** `glimpse generate`: returns the exit status. */
export async function generateCommand(argv: readonly string[], context: CliContext): Promise<number> {
  const parsed = parseCommand(argv, SPEC);
  if (!parsed) {
    context.stdout.write(SPEC.usage);
    return EXIT.ok;
  }
  const { values, positionals } = parsed;
  if (values.models) {
    if (positionals.length > 0) throw new UsageError("--models takes no prompt");
    const client = connect(context, values);
    try {
      const { models } = await client.generation.listModels({}, { signal: context.signal });
      if (values.json) context.stdout.write(`${JSON.stringify(models, null, 2)}\n`);
      else {
        context.stdout.write(
          table([
            ["MODEL", "CREDITS", "ASPECTS", "AVAILABLE"],
            ...models.map((m) => [m.id, m.creditCost, m.aspectRatios.join(","), m.available ? "yes" : `no: ${m.unavailableReason}`]),
          ]),
        );
      }
      return EXIT.ok;
    } finally {
      client.close();
    }
  }
  const prompt = positionals[0];
  if (prompt === undefined || prompt.trim() === "") throw new UsageError("missing prompt");
  if (values.model === undefined) throw new UsageError("--model is required (glimpse generate --models lists them)");
  if (values.aspect !== undefined && !/^\d+:\d+$/.test(values.aspect)) {
    throw new UsageError(`--aspect must look like 16:9, got ${JSON.stringify(values.aspect)}`);
  }
  const client = connect(context, values);
  try {
    const { generation, credits } = await client.generation.generateImage(
      {
        prompt,
        modelId: values.model,
        aspectRatio: values.aspect ?? "",
        style: values.style ?? "",
        visibility: values.public ? Visibility.VISIBILITY_PUBLIC : Visibility.VISIBILITY_UNSPECIFIED,
      },
      // Generation can take a provider a minute or two.
      { signal: context.signal, deadline: values.timeout === undefined ? new Date(Date.now() + 300_000) : undefined },
    );
    const content = generation?.content;
    if (values.out !== undefined && content) await writeFile(values.out, content);
    if (values.json) {
      const { content: _bytes, ...rest } = generation ?? {};
      context.stdout.write(`${JSON.stringify({ generation: rest, credits, out: values.out }, null, 2)}\n`);
      return EXIT.ok;
    }
    const lines = [
      `generated image ${generation?.imageId} with ${generation?.modelId} (${generation?.mediaType}, ${formatBytes(content?.length ?? 0)})`,
    ];
    if (values.out !== undefined) lines.push(`written to ${values.out}`);
    lines.push(`credits charged ${credits?.charged ?? "0"}, left ${credits?.remaining ?? "?"}`);
    context.stdout.write(`${lines.join("\n")}\n`);
    return EXIT.ok;
  } finally {
    client.close();
  }
}
