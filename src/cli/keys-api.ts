import { CONNECTION_OPTIONS, CONNECTION_USAGE, EXIT, parseCommand, table, type CommandSpec, type ParseArgsOptions } from "./args.js";
import { connect, type CliContext } from "./context.js";

/** Usage of every `glimpse keys` command: `create` works on the store, the others over the API. */
export const KEYS_API_USAGE = `usage: glimpse keys <command> [flags]

commands:
  create [--admin] [--account <uuid> | --email <address>] [--name <name>]
                        print a new key, written straight into the store (no server or key
                        needed: this is how the first key is made; see glimpse keys create --help)
  list [--all] [--json] the calling key's account's keys (--all: revoked ones too), over the API
  revoke <key-id>       revoke a key of the calling account (admins: any key), over the API

${CONNECTION_USAGE}
`;

const LIST = {
  name: "glimpse keys list",
  positionals: [0, 0],
  options: { ...CONNECTION_OPTIONS, all: { type: "boolean" }, json: { type: "boolean" } },
  usage: `usage: glimpse keys list [--all] [--json]

Lists the API keys of the calling key's account: id, name, prefix, created, last used,
revoked. The secret is never shown again after creation.
  --all    include revoked keys
  --json   print the keys as JSON

${CONNECTION_USAGE}
`,
} as const satisfies CommandSpec<ParseArgsOptions>;

const REVOKE = {
  name: "glimpse keys revoke",
  positionals: [1, 1],
  options: { ...CONNECTION_OPTIONS },
  usage: `usage: glimpse keys revoke <key-id>

Revokes a key: calls with it are refused from then on.

${CONNECTION_USAGE}
`,
} as const satisfies CommandSpec<ParseArgsOptions>;

/** The usage text of a keys sub-command, for usage errors. */
export function keysApiUsage(sub: string | undefined): string {
  return sub === "list" ? LIST.usage : sub === "revoke" ? REVOKE.usage : KEYS_API_USAGE;
}

/** `glimpse keys list`: returns the exit status. */
export async function keysListCommand(argv: readonly string[], context: CliContext): Promise<number> {
  const parsed = parseCommand(argv, LIST);
  if (!parsed) {
    context.stdout.write(LIST.usage);
    return EXIT.ok;
  }
  const { values } = parsed;
  const client = connect(context, values);
  try {
    const keys = [];
    let pageToken = "";
    do {
      const page = await client.accounts.listApiKeys({ pageSize: 100, pageToken, showRevoked: values.all ?? false }, { signal: context.signal });
      keys.push(...page.apiKeys);
      pageToken = page.nextPageToken;
    } while (pageToken);
    if (values.json) {
      context.stdout.write(`${JSON.stringify(keys, null, 2)}\n`);
      return EXIT.ok;
    }
    const when = (d: Date | undefined) => d?.toISOString() ?? "-";
    context.stdout.write(
      table([
        ["ID", "NAME", "PREFIX", "CREATED", "LAST USED", "REVOKED"],
        ...keys.map((k) => [k.id, k.name || "-", `${k.prefix}…`, when(k.createdAt), when(k.lastUsedAt), when(k.revokedAt)]),
      ]),
    );
    return EXIT.ok;
  } finally {
    client.close();
  }
}

/** `glimpse keys revoke <id>`: returns the exit status. */
export async function keysRevokeCommand(argv: readonly string[], context: CliContext): Promise<number> {
  const parsed = parseCommand(argv, REVOKE);
  if (!parsed) {
    context.stdout.write(REVOKE.usage);
    return EXIT.ok;
  }
  const client = connect(context, parsed.values);
  try {
    await client.accounts.revokeApiKey({ keyId: parsed.positionals[0] }, { signal: context.signal });
    context.stdout.write(`revoked ${parsed.positionals[0]}\n`);
    return EXIT.ok;
  } finally {
    client.close();
  }
}
