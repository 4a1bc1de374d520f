import { ConfigError, loadOptions, optionSpecs } from "../config/options.js";
import { modelMain } from "./model.js";
import { serveUntilSignalled } from "./serve.js";

const USAGE = `usage: glimpse <command> [flags]

commands:
  serve     run the gRPC service (and its embedded PostgreSQL when DATABASE_URL is unset)
  config    print every option with its environment variable and default
  model     pull <id> | list: download an embedding model into the model cache, or list the known ones
  keys      create [--admin] [--account <uuid> | --email <address>]: print a new API key

flags of serve (each also read from its environment variable):
${optionSpecs
  .filter((s) => "flag" in s)
  .map((s) => `  ${("flag" in s ? s.flag : "").padEnd(16)} ${s.env}`)
  .join("\n")}
`;

/** `glimpse serve`: start, then stop gracefully on SIGTERM/SIGINT (a second signal forces). */
async function serve(argv: string[]): Promise<void> {
  await serveUntilSignalled(loadOptions(process.env, argv));
}

function printConfig(): void {
  for (const spec of optionSpecs) {
    console.log(`${spec.env}=${spec.default ?? ""}\t# ${spec.doc}`);
  }
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case "serve":
      return serve(rest);
    case "config":
      return printConfig();
    case "model":
      return modelMain(rest);
    case "keys":
      // Loaded on demand: it opens the store, which `config` and `help` never need.
      return (await import("./keys.js")).keysMain(rest);
    case undefined:
    case "help":
    case "--help":
      process.stdout.write(USAGE);
      return;
    default:
      process.stderr.write(`glimpse: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
      process.exit(2);
  }
}

main().catch((err) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`glimpse: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`glimpse: failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  if (err instanceof Error && err.cause) process.stderr.write(`caused by: ${String((err.cause as Error).stack ?? err.cause)}\n`);
  process.exit(1);
});
