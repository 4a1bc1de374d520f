import type { AccountService } from "../../accounts/account-service.js";
import type { AccountServiceImplementation } from "../../gen/glimpse/account/v1/account_service.js";
import type { AppCallContext } from "../context.js";
import { accountOut, apiKeyOut, transactionOut } from "./account-mapping.js";

type Ctx = AppCallContext;

/** What the account handlers are built from. */
export interface AccountHandlerDeps {
  accounts: AccountService;
  /** Shown as the limit of keys that use the server default. */
  defaultRateLimit: number;
}

/** The RPCs of glimpse.account.v1.AccountService. */
export function accountHandlers(deps: AccountHandlerDeps): AccountServiceImplementation<Ctx> {
  const { accounts, defaultRateLimit } = deps;
  const keyOut = (k: Parameters<typeof apiKeyOut>[0]) => apiKeyOut(k, defaultRateLimit);

  return {
    async getAccount(request, context) {
      return { account: accountOut(await accounts.get(context.caller, request.accountId)) };
    },

    async listUsage(request, context) {
      const page = await accounts.listUsage(context.caller, request.limit, request.offset);
      return {
        transactions: page.transactions.map(transactionOut),
        total: String(page.total),
        limit: page.limit,
        offset: page.offset,
      };
    },

    async createApiKey(request, context) {
      const { key, secret } = await accounts.createApiKey(context.caller, request.name, request.rateLimitPerMinute);
      return { apiKey: keyOut(key), secret };
    },

    async listApiKeys(request, context) {
      const { keys, nextPageToken } = await accounts.listApiKeys(
        context.caller,
        request.pageSize,
        request.pageToken,
        request.showRevoked,
      );
      return { apiKeys: keys.map(keyOut), nextPageToken };
    },

    async revokeApiKey(request, context) {
      return { apiKey: keyOut(await accounts.revokeApiKey(context.caller, request.keyId)) };
    },

    async createAccount(request, context) {
      const { account, key } = await accounts.createAccount(context.caller, {
        email: request.email,
        username: request.username,
        isAdmin: request.isAdmin,
        initialCredits: BigInt(request.initialCredits || "0"),
        createApiKey: request.createApiKey,
      });
      return {
        account: accountOut(account),
        apiKey: key ? keyOut(key.key) : undefined,
        apiKeySecret: key?.secret ?? "",
      };
    },

    async grantCredits(request, context) {
      const { account, transaction } = await accounts.grantCredits(context.caller, {
        accountId: request.accountId,
        amount: BigInt(request.amount || "0"),
        description: request.description,
        requestId: request.requestId,
      });
      return { account: accountOut(account), transaction: transactionOut(transaction) };
    },
  };
}
