import { loadOptions, optionSpecs, type BlobLocation, type Options } from "../config/options.js";
import { EXIT, table } from "./args.js";
import type { CliContext } from "./context.js";

export const CONFIG_USAGE = `usage: glimpse config [serve flags] [--json]

Prints every option of glimpse serve with the value in effect and where it came from:
default, environment (its variable) or flag. Takes the flags of glimpse serve, so
\`glimpse config --grpc-port 6000\` shows what \`glimpse serve --grpc-port 6000\` would use.
Secrets (API keys, the DATABASE_URL password) are shown as "(set)". A bad value exits 2
naming it, as glimpse serve would.
`;

/** Where an option's value came from. */
export type OptionSource = "default" | "environment" | "flag";

/** One option as `glimpse config` reports it. */
export interface EffectiveOption {
  env: string;
  flag: string | undefined;
  value: string;
  source: OptionSource;
  doc: string;
}

/** Options whose values are secrets: never printed. */
const SECRETS = new Set<keyof Options>(["adminKey", "openaiApiKey", "googleApiKey"]);

/** The flags of `glimpse serve` given in `argv`, by flag name (the last one wins, as in loadOptions). */
function givenFlags(argv: readonly string[]): Set<string> {
  const given = new Set<string>();
  for (const arg of argv) if (arg.startsWith("--")) given.add(arg.split("=")[0]);
  return given;
}

/**
 * Every option's effective value and source, from the same loadOptions `glimpse serve` runs
 * (so derived defaults, such as the model cache under the data directory, show as resolved).
 * @throws ConfigError as loadOptions does.
 */
export function effectiveOptions(env: NodeJS.ProcessEnv, argv: readonly string[]): EffectiveOption[] {
  const options = loadOptions(env, argv);
  const flags = givenFlags(argv);
  return optionSpecs.map((spec) => {
    const flag = "flag" in spec ? spec.flag : undefined;
    const source: OptionSource = flag && flags.has(flag) ? "flag" : env[spec.env] !== undefined ? "environment" : "default";
    return { env: spec.env, flag, value: show(spec.key, options[spec.key]), source, doc: spec.doc };
  });
}

function show(key: keyof Options, value: unknown): string {
  if (value === undefined || value === "") return "(unset)";
  if (SECRETS.has(key)) return "(set)";
  if (key === "blobs") {
    const blobs = value as BlobLocation;
    return blobs.kind === "s3" ? `s3://${blobs.bucket}/${blobs.prefix}` : blobs.dir || "(unset: <GLIMPSE_DATA_DIR>/blobs)";
  }
  // URLs may carry a password: shown without it.
  if ((key === "databaseUrl" || key === "redisUrl") && typeof value === "string") {
    try {
      const url = new URL(value);
      if (url.password) url.password = "***";
      return url.toString();
    } catch {
      return "(set)";
    }
  }
  return String(value);
}

/** `glimpse config`: returns the exit status. */
export function configCommand(argv: readonly string[], context: CliContext): number {
  if (argv.includes("--help") || argv.includes("-h")) {
    context.stdout.write(CONFIG_USAGE);
    return EXIT.ok;
  }
  const json = argv.includes("--json");
  const rest = argv.filter((a) => a !== "--json");
  const rows = effectiveOptions(context.env, rest);
  if (json) {
    context.stdout.write(`${JSON.stringify(rows.map(({ doc: _doc, ...r }) => r), null, 2)}\n`);
    return EXIT.ok;
  }
  context.stdout.write(
    table([
      ["VARIABLE", "VALUE", "SOURCE"],
      ...rows.map((r) => [r.env, r.value, r.source === "flag" ? `flag ${r.flag}` : r.source]),
    ]),
  );
  return EXIT.ok;
}
