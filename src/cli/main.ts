import { readFileSync } from "node:fs";
import { GlimpseError } from "../client/errors.js";
import { ConfigError, loadOptions, optionSpecs } from "../config/options.js";
import { DomainError, UserFacingError } from "../errors.js";
import { CommandError, EXIT, UsageError } from "./args.js";
import { CONFIG_USAGE, configCommand } from "./config.js";
import type { CliContext } from "./context.js";
import { serveUntilSignalled } from "./serve.js";

const USAGE = `usage: glimpse <command> [flags]

server:
  serve      run the gRPC service and the HTTP/JSON bridge (and an embedded PostgreSQL when
             DATABASE_URL is unset)
  config     print every option's value in effect and where it came from
  model      pull <id> | list: install an embedding model into the model cache, or list them
  keys       create: print a new API key, written straight into the store (the first key)

client (talk to a running server; --address/GLIMPSE_ADDRESS, --key/GLIMPSE_API_KEY):
  ingest     upload a folder of images, with tags from sub-folders and sidecar files
  search     semantic search by prompt or by an image
  generate   generate an image with a model, paying credits
  images     list | get | rm
  keys       list | revoke: the account's API keys

Every command takes --help. glimpse --version prints the version.
Exit status: 0 ok, 1 failed, 2 bad usage or configuration, 130 interrupted.
`;

const SERVE_USAGE = `usage: glimpse serve [flags]

Runs glimpse until SIGTERM or SIGINT. Every option is read from its environment variable;
these also have a flag, which wins (glimpse config shows every option and its value):
${optionSpecs
  .filter((s) => "flag" in s)
  .map((s) => `  ${("flag" in s ? `${s.flag} <value>` : "").padEnd(24)} ${s.env}`)
  .join("\n")}
`;

/** The package's version, from package.json beside src/. */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

/** The usage text printed with a usage error of `command`. */
async function usageOf(command: string, rest: readonly string[]): Promise<string> {
  switch (command) {
    case "serve":
      return SERVE_USAGE;
    case "config":
      return CONFIG_USAGE;
    case "ingest":
    case "search":
    case "generate":
      // Each command's own text, as its --help prints it.
      return captureHelp(command);
    case "images":
      return (await import("./images.js")).imagesUsage(rest);
    case "keys":
      return (await import("./keys-api.js")).keysApiUsage(rest[0]);
    default:
      return USAGE;
  }
}

async function captureHelp(command: string): Promise<string> {
  let text = "";
  const sink = { write: (t: string) => (text += t) };
  await runCommand(command, ["--help"], { env: {}, stdout: sink, stderr: sink, signal: new AbortController().signal });
  return text;
}

/** Runs a client command; `undefined` for commands that are not client commands. */
async function runCommand(command: string, rest: readonly string[], context: CliContext): Promise<number | undefined> {
  switch (command) {
    case "ingest":
      return (await import("./ingest.js")).ingestCommand(rest, context);
    case "search":
      return (await import("./search.js")).searchCommand(rest, context);
    case "generate":
      return (await import("./generate.js")).generateCommand(rest, context);
    case "images":
      return (await import("./images.js")).imagesCommand(rest, context);
    case "keys": {
      const keys = await import("./keys-api.js");
      if (rest[0] === "list") return keys.keysListCommand(rest.slice(1), context);
      if (rest[0] === "revoke") return keys.keysRevokeCommand(rest.slice(1), context);
      if (rest[0] === undefined || rest[0] === "--help" || rest[0] === "-h" || rest[0] === "help") {
        context.stdout.write(keys.KEYS_API_USAGE);
        return rest[0] === undefined ? EXIT.usage : EXIT.ok;
      }
      return undefined;
    }
    default:
      return undefined;
  }
}

/**
 * Runs the command in `argv` and returns its exit status, or undefined when the process
 * should keep running (`serve`) or a command set the exit status itself.
 */
async function main(argv: readonly string[]): Promise<number | undefined> {
  const [command, ...rest] = argv;
  const help = rest.includes("--help") || rest.includes("-h");
  switch (command) {
    case undefined:
      process.stderr.write(USAGE);
      return EXIT.usage;
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return EXIT.ok;
    case "--version":
    case "-v":
    case "version":
      process.stdout.write(`glimpse ${version()}\n`);
      return EXIT.ok;
    case "serve":
      if (help) {
        process.stdout.write(SERVE_USAGE);
        return EXIT.ok;
      }
      await serveUntilSignalled(loadOptions(process.env, rest));
      return undefined;
    case "config":
      return configCommand(rest, { env: process.env, stdout: process.stdout, stderr: process.stderr, signal: new AbortController().signal });
    case "model":
      await (await import("./model.js")).modelMain(rest);
      return undefined;
  }
  if (command === "keys" && rest[0] === "create") {
    const keys = await import("./keys.js");
    if (help) {
      process.stdout.write(keys.KEYS_USAGE);
      return EXIT.ok;
    }
    // Loaded on demand: it opens the store, which no other command needs.
    await keys.keysMain(rest);
    return undefined;
  }
  const controller = new AbortController();
  const onSignal = () => {
    if (controller.signal.aborted) process.exit(EXIT.interrupted);
    controller.abort(new Error("interrupted"));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const status = await runCommand(command, rest, {
      env: process.env,
      stdout: process.stdout,
      stderr: process.stderr,
      signal: controller.signal,
    });
    if (status !== undefined) return status;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  if (command === "keys") throw new UsageError(`unknown keys command ${JSON.stringify(rest[0])}`);
  throw new UsageError(`unknown command ${JSON.stringify(command)}`);
}

/** Prints an error the way a user should see it and returns the exit status. */
async function report(err: unknown, argv: readonly string[]): Promise<number> {
  const [command = "", ...rest] = argv;
  const who = ["images", "keys"].includes(command) && rest[0] && !rest[0].startsWith("-") ? `glimpse ${command} ${rest[0]}` : `glimpse ${command}`.trim();
  if (err instanceof UsageError) {
    const known = ["serve", "config", "ingest", "search", "generate", "images", "keys"].includes(command);
    process.stderr.write(`${known ? who : "glimpse"}: ${err.message}\n\n${await usageOf(known ? command : "", rest)}`);
    return EXIT.usage;
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`glimpse: ${err.message}\n`);
    return EXIT.usage;
  }
  if (err instanceof GlimpseError) {
    const lines = [`${who}: ${err.codeName}: ${err.details}`];
    for (const v of err.fieldViolations) lines.push(`  ${v.field}: ${v.description}`);
    if (err.attempts > 1) lines.push(`  (gave up after ${err.attempts} attempts)`);
    process.stderr.write(`${lines.join("\n")}\n`);
    return EXIT.failed;
  }
  if (err instanceof UserFacingError || err instanceof DomainError || err instanceof CommandError) {
    process.stderr.write(`glimpse: ${err.message}\n`);
    return EXIT.failed;
  }
  if (err instanceof Error && (err.name === "AbortError" || err.message === "interrupted")) {
    process.stderr.write(`${who}: interrupted\n`);
    return EXIT.interrupted;
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (err instanceof Error && typeof code === "string" && /^E[A-Z]+$/.test(code)) {
    // A file the user named is missing or unreadable: the message says which.
    process.stderr.write(`${who}: ${err.message}\n`);
    return EXIT.failed;
  }
  // Anything else is a bug: its stack trace helps whoever fixes it.
  process.stderr.write(`glimpse: failed${command === "serve" ? " to start" : ""}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  if (err instanceof Error && err.cause) process.stderr.write(`caused by: ${String((err.cause as Error).stack ?? err.cause)}\n`);
  return EXIT.failed;
}

const argv = process.argv.slice(2);
main(argv).then(
  (status) => {
    if (status !== undefined) process.exitCode = status;
  },
  async (err) => {
    // exit, not exitCode: a half-started server (an embedded PostgreSQL, a bound port) must not keep the process alive.
    process.exit(await report(err, argv));
  },
);
