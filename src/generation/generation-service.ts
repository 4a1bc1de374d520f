import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import type { CatalogueService } from "../catalogue/catalogue-service.js";
import { offsetPage } from "../accounts/paging.js";
import type { Caller, ImageRecord } from "../catalogue/types.js";
import { requestIdOf } from "../catalogue/validate.js";
import type { Clock } from "../clock.js";
import { DomainError, notFound, Violations } from "../errors.js";
import type { Logger } from "../logging/logger.js";
import type { AccountsRepository } from "../store/accounts-repository.js";
import type { GenerationsRepository } from "../store/generations-repository.js";
import type { Tx } from "../store/images-repository.js";
import type { LedgerRepository } from "../store/ledger-repository.js";
import { MODELS, type ProviderId } from "./models.js";
import type { ImageProvider } from "./providers/types.js";
import type {
  GenerateInput,
  GenerateResult,
  GenerationPage,
  GenerationRecord,
  ModelInfo,
} from "./types.js";
import type { ReplicaIdentity } from "./replica-lease.js";
import { checkGenerateInput, type Checked } from "./validate.js";

/** What the generation service is built from. */
export interface GenerationDeps {
  generations: GenerationsRepository;
  ledger: LedgerRepository;
  accounts: AccountsRepository;
  transaction: <T>(fn: (tx: Tx) => Promise<T>) => Promise<T>;
  catalogue: CatalogueService;
  providers: Record<ProviderId, ImageProvider>;
  clock: Clock;
  logger: Logger;
  /** This process's lease on the store: its reservations name it, and die with it. */
  replica: ReplicaIdentity;
  /** How often a waiting retry looks for the result of a generation running on another replica. */
  pollMs?: number;
}

const CHARGE_DESCRIPTION = "Generated image";

/** How long a dead replica's row is kept (for operators) before the sweep deletes it. */
const FORGET_REPLICAS_AFTER_MS = 24 * 60 * 60_000;

/**
 * Image generation paid in credits: validate, reserve the model's cost (the balance never goes
 * below zero), call the provider, store the image in the catalogue, then charge the
 * reservation; on any failure the reservation is released and nothing is charged.
 */
export class GenerationService {
  /** Generations with a request id running in this process, so a racing retry can await them. */
  private readonly running = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: GenerationDeps) {}

  /** Every registry model, ordered by id, with whether it can be used now. */
  models(): ModelInfo[] {
    return [...MODELS]
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map((m) => {
        const reason = this.deps.providers[m.provider].unavailableReason();
        return {
          id: m.id,
          providerId: m.provider,
          displayName: m.displayName,
          creditCost: m.creditCost,
          aspectRatios: [...m.aspectRatios],
          supportsThinking: m.supportsThinking,
          available: reason === undefined,
          unavailableReason: reason ?? "",
          local: m.provider === "local",
        };
      });
  }

  /**
   * Generates one image for the caller. With a request id, a retry (also one racing the first
   * call) returns the first result and is not charged again. A retry that finds the first call's
   * replica dead (killed mid-generation) releases its reservation and runs afresh, as after a
   * failed first call.
   */
  async generate(caller: Caller, input: GenerateInput, signal: AbortSignal, deadline?: Date): Promise<GenerateResult> {
    const req = checkGenerateInput(input);
    for (;;) {
      if (req.requestId !== null) {
        const found = await this.deps.generations.findByRequest(caller.accountId, req.requestId);
        if (found.state === "done") return this.replay(caller, found.generation);
        if (found.state === "running") {
          if (this.isOrphan(found)) await this.releaseOrphan(found.id);
          else await this.waitFor(caller.accountId, req.requestId, signal);
          continue;
        }
      }
      const result = await this.run(caller, req, signal, deadline);
      if (result !== "taken") return result;
    }
  }

  /**
   * Reserves, generates, stores and charges. Returns "taken" when another call already holds
   * the request id (the caller then waits for that one).
   */
  private async run(
    caller: Caller,
    req: Checked,
    signal: AbortSignal,
    deadline: Date | undefined,
  ): Promise<GenerateResult | "taken"> {
    const provider = this.deps.providers[req.model.provider];
    const unavailable = provider.unavailableReason();
    if (unavailable) throw new DomainError("FAILED_PRECONDITION", `${req.model.id} is unavailable: ${unavailable}`);
    signal.throwIfAborted();
    // Another replica may already count this one as dead and would release what it reserves.
    if (!this.deps.replica.held()) {
      throw new DomainError("UNAVAILABLE", "this server lost its lease on the database; retry");
    }

    const id = randomUUID();
    const cost = req.model.creditCost;
    const reserved = await this.deps.transaction(async (tx) => {
      const inserted = await this.deps.generations.insertRunning(
        {
          id,
          accountId: caller.accountId,
          requestId: req.requestId,
          prompt: req.prompt,
          modelId: req.model.id,
          providerId: req.model.provider,
          aspectRatio: req.aspectRatio,
          style: req.style,
          thinkingLevel: req.thinkingLevel,
          creditCost: cost,
          replicaId: this.deps.replica.id(),
        },
        tx,
      );
      if (!inserted) return false;
      if (!(await this.deps.ledger.reserve(caller.accountId, cost, tx))) {
        // Throwing rolls the generation row back with the transaction.
        const account = await this.deps.accounts.get(caller.accountId, tx);
        throw new DomainError(
          "FAILED_PRECONDITION",
          `not enough credits: ${req.model.id} costs ${cost}, the account has ${account?.creditBalance ?? 0n} available`,
        );
      }
      return true;
    });
    if (!reserved) return "taken";

    const work = this.complete(caller, req, id, provider, signal, deadline);
    if (req.requestId !== null) {
      const key = `${caller.accountId}/${req.requestId}`;
      this.running.set(key, work);
      void work.catch(() => undefined).finally(() => this.running.delete(key));
    }
    return work;
  }

  /** Everything after the reservation; releases it on any failure. */
  private async complete(
    caller: Caller,
    req: Checked,
    id: string,
    provider: ImageProvider,
    signal: AbortSignal,
    deadline: Date | undefined,
  ): Promise<GenerateResult> {
    const { catalogue, clock, logger } = this.deps;
    let stored: { image: ImageRecord; deduplicated: boolean } | undefined;
    try {
      const drawn = await provider.generate({
        model: req.model.providerModel,
        prompt: req.prompt,
        aspectRatio: req.aspectRatio,
        style: req.style,
        thinkingLevel: req.thinkingLevel === null ? undefined : req.model.thinking?.[req.thinkingLevel],
        signal,
        deadline,
      });
      stored = await catalogue
        .upload(caller, {
          content: drawn.bytes,
          fileName: `generation-${id}.${drawn.mediaType.split("/")[1] ?? "img"}`,
          meta: {
            prompt: req.prompt,
            model: req.model.id,
            aspect_ratio: req.aspectRatio,
            style: req.style,
            generation_id: id,
          },
          visibility: req.visibility,
          index: true,
          internal: true,
        })
        .catch((err) => {
          if (err instanceof DomainError && err.code === "INVALID_ARGUMENT") {
            throw new DomainError("UNAVAILABLE", `${req.model.id} returned an image that could not be stored; retry`, {
              cause: err,
            });
          }
          throw err;
        });
      const image = stored.image;
      // A caller who stopped waiting (cancelled, deadline passed, server shutting down) is
      // told the call failed, so it must not be charged: release instead of settling.
      signal.throwIfAborted();
      const settled = await this.deps.transaction(async (tx) => {
        const generation = await this.deps.generations.complete(id, image.id, image.mediaType, clock.now(), tx);
        if (!generation) return undefined;
        const { balances } = await this.deps.ledger.charge(
          caller.accountId,
          req.model.creditCost,
          id,
          CHARGE_DESCRIPTION,
          generation.createdAt,
          tx,
        );
        return { generation, remaining: balances.creditBalance };
      });
      if (!settled) {
        throw new DomainError("UNAVAILABLE", "the generation ran past its reservation and was released; retry");
      }
      return { ...settled, content: drawn.bytes, charged: req.model.creditCost };
    } catch (err) {
      await this.deps.generations.release(id).catch((error) =>
        logger.error("releasing a reservation failed; the abandoned-reservation sweep will return it", { error, id }),
      );
      // The image this call created goes too, unless another generation (same bytes, so the
      // catalogue handed it the same image) completed with it meanwhile.
      if (stored && !stored.deduplicated && !(await this.deps.generations.imageInUse(stored.image.id).catch(() => true))) {
        await catalogue.delete(caller, stored.image.id).catch(() => undefined);
      }
      throw err;
    }
  }

  /** The first result of a request id, as GenerateImage answers it again. */
  private async replay(caller: Caller, generation: GenerationRecord): Promise<GenerateResult> {
    const account = await this.deps.accounts.get(caller.accountId);
    return {
      generation,
      content: await this.contentOf(caller, generation),
      charged: generation.creditCost,
      remaining: account?.creditBalance ?? 0n,
    };
  }

  private async contentOf(caller: Caller, generation: GenerationRecord): Promise<Buffer | undefined> {
    if (generation.imageId === null) return undefined;
    try {
      return (await this.deps.catalogue.getWithContent(caller, generation.imageId)).content;
    } catch (err) {
      if (err instanceof DomainError && err.code === "NOT_FOUND") return undefined;
      throw err;
    }
  }

  /**
   * Waits until the generation holding a request id ends: at once through its promise when it
   * runs in this process, otherwise by looking at the store now and then.
   */
  private async waitFor(accountId: string, requestId: string, signal: AbortSignal): Promise<void> {
    const local = this.running.get(`${accountId}/${requestId}`);
    if (local) {
      signal.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        void local
          .catch(() => undefined)
          .then(() => {
            signal.removeEventListener("abort", onAbort);
            resolve();
          });
      });
      return;
    }
    for (;;) {
      await delay(this.deps.pollMs ?? 200, undefined, { signal });
      const found = await this.deps.generations.findByRequest(accountId, requestId);
      if (found.state !== "running" || this.isOrphan(found)) return;
    }
  }

  /**
   * Whether a running generation was left by a dead replica. This replica's own are never
   * orphans: it is alive, and it finishes or releases them itself (even while its lease
   * connection reconnects and the others may briefly see it as dead).
   */
  private isOrphan(found: { replicaId: number | null; orphaned: boolean }): boolean {
    return found.orphaned && found.replicaId !== this.deps.replica.id();
  }

  /** Returns a dead replica's reservation to its account (a no-op when another call did first). */
  private async releaseOrphan(id: string): Promise<void> {
    const released = await this.deps.generations.releaseOrphaned({ id, except: this.deps.replica.id() });
    if (released > 0) this.deps.logger.warn("released the reservation of a dead replica for a retry", { id });
  }

  /** The caller's completed generations, newest first. */
  async list(caller: Caller, limit: number, offset: number): Promise<GenerationPage> {
    const page = offsetPage(limit, offset);
    const { generations, total } = await this.deps.generations.list(caller.accountId, page.limit, page.offset);
    return { generations, total, ...page };
  }

  /** One generation the caller may read, with its bytes when asked. */
  async get(caller: Caller, idText: string, withContent: boolean): Promise<{ generation: GenerationRecord; content?: Buffer }> {
    const v = new Violations();
    const id = requestIdOf(idText, "id", v);
    if (idText === "") v.add("id", "is required: a generation UUID");
    v.throwIfAny();
    const generation = await this.deps.generations.get(id!, caller.accountId, caller.isAdmin);
    if (!generation) throw notFound("generation", id!);
    if (!withContent) return { generation };
    const content = await this.contentOf(caller, generation);
    if (content === undefined) {
      throw new DomainError("FAILED_PRECONDITION", `the image of generation ${id} was deleted; only its metadata is left`);
    }
    return { generation, content };
  }

  /**
   * Returns to their accounts the credits of generations whose process stopped without
   * finishing or releasing them: at once those of a replica known to be dead, and any older
   * than `olderThanMs` (reserved before replicas were recorded, or whose replica's death went
   * unnoticed). Safe to run on every replica at any time.
   */
  async releaseAbandoned(olderThanMs: number): Promise<number> {
    const { generations, logger, replica } = this.deps;
    const orphaned = await generations.releaseOrphaned({ except: replica.id() });
    if (orphaned > 0) logger.warn("released the reservations of dead replicas", { released: orphaned });
    const old = await generations.releaseAbandoned(olderThanMs);
    if (old > 0) logger.warn("released abandoned credit reservations", { released: old });
    await generations.forgetDeadReplicas(FORGET_REPLICAS_AFTER_MS);
    return orphaned + old;
  }

  /**
   * Runs {@link releaseAbandoned} now and then every `everyMs` until the returned function is
   * called. The default is short because a dead replica's reservations should return within
   * seconds; each run is a few indexed statements.
   */
  startSweeping(olderThanMs: number, everyMs = 5_000): () => void {
    const sweep = () =>
      void this.releaseAbandoned(olderThanMs).catch((error) =>
        this.deps.logger.warn("sweeping abandoned reservations failed", { error }),
      );
    sweep();
    const timer = setInterval(sweep, everyMs);
    timer.unref();
    return () => clearInterval(timer);
  }
}
