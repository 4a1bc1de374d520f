import { AccountService } from "../accounts/account-service.js";
import { loadOptions, type Options } from "../config/options.js";
import { DomainError } from "../errors.js";
import { UsageError } from "./args.js";
import { createLogger, type Logger } from "../logging/logger.js";
import { AccountsRepository } from "../store/accounts-repository.js";
import { connect, type Sql } from "../store/db.js";
import { runningEmbeddedUrl, startEmbeddedPostgres } from "../store/embedded.js";
import { transaction } from "../store/images-repository.js";
import { LedgerRepository } from "../store/ledger-repository.js";
import { migrate } from "../store/migrate.js";

export const KEYS_USAGE = `usage: glimpse keys create [--admin] [--account <uuid> | --email <address>] [--name <name>] [serve flags]

Prints a new API key (the secret, once) on stdout.
  --account <uuid>     a key for this account
  --email <address>    a key for the account with this email, created when missing
  (neither)            a key for the default admin account; needs --admin
  --admin              make the account an admin
  --name <name>        the key's name (default "cli")
The store is the one glimpse serve uses (DATABASE_URL, or the embedded one under the data
directory, also while glimpse serve runs on it).
`;

/** Flags of `keys create`, split from the serve flags that choose the store. */
interface KeysFlags {
  admin: boolean;
  accountId?: string;
  email?: string;
  name: string;
  rest: string[];
}


function parseKeysFlags(argv: string[]): KeysFlags {
  const flags: KeysFlags = { admin: false, name: "cli", rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    const value = () => {
      if (eq >= 0) return arg.slice(eq + 1);
      if (i + 1 >= argv.length) throw new UsageError(`${name} needs a value`);
      return argv[++i];
    };
    if (name === "--admin") flags.admin = true;
    else if (name === "--account") flags.accountId = value();
    else if (name === "--email") flags.email = value();
    else if (name === "--name") flags.name = value();
    else flags.rest.push(arg);
  }
  if (flags.accountId !== undefined && flags.email !== undefined) {
    throw new UsageError("give --account or --email, not both");
  }
  if (flags.accountId === undefined && flags.email === undefined && !flags.admin) {
    throw new UsageError("name the account with --account or --email, or pass --admin for the default admin account");
  }
  return flags;
}

/** Opens the store `glimpse serve` would use; `close` undoes what this opened. */
async function openStore(options: Options, logger: Logger): Promise<{ sql: Sql; close: () => Promise<void> }> {
  let url = options.databaseUrl ?? (await runningEmbeddedUrl(options.dataDir));
  let stopEmbedded: (() => Promise<void>) | undefined;
  if (url === undefined) {
    const embedded = await startEmbeddedPostgres(options.dataDir, logger);
    url = embedded.url;
    stopEmbedded = () => embedded.stop();
  }
  const sql = connect({ url, max: 2, logger });
  return {
    sql,
    async close() {
      await sql.end({ timeout: 5 });
      await stopEmbedded?.();
    },
  };
}

/**
 * `glimpse keys create ...`: prints a new key's secret on stdout, what it is for on stderr.
 * Bad usage exits 2 with the usage text; a refused request (no such account) exits 1.
 */
export async function keysMain(argv: string[]): Promise<void> {
  try {
    await createKey(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`glimpse keys: ${err.message}\n\n${KEYS_USAGE}`);
      process.exit(2);
    }
    if (err instanceof DomainError) {
      process.stderr.write(`glimpse keys: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}

async function createKey(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub !== "create") throw new UsageError(sub === undefined ? "missing subcommand" : `unknown subcommand ${JSON.stringify(sub)}`);
  const flags = parseKeysFlags(rest);
  const options = loadOptions(process.env, flags.rest);
  const logger = createLogger(options.logLevel === "info" ? "warn" : options.logLevel, (line) => process.stderr.write(line));
  const store = await openStore(options, logger);
  try {
    await migrate(store.sql, logger);
    const accounts = new AccountService({
      accounts: new AccountsRepository(store.sql),
      ledger: new LedgerRepository(store.sql),
      transaction: (fn) => transaction(store.sql, fn),
      clock: { now: () => new Date() },
      logger,
      defaultRateLimit: options.rateLimitPerMinute,
      maxKeysPerAccount: options.maxKeysPerAccount,
    });
    const { secret, key, account } = await accounts.createKeyFor({
      accountId: flags.accountId,
      email: flags.email,
      admin: flags.admin,
      name: flags.name,
    });
    process.stderr.write(
      `created key ${key.prefix}… (${key.id}) for account ${account.id}` +
        `${account.email ? ` <${account.email}>` : ""}${account.isAdmin ? " (admin)" : ""}; the secret is shown only now:\n`,
    );
    process.stdout.write(`${secret}\n`);
  } finally {
    await store.close();
  }
}
