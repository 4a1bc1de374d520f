import { hostname } from "node:os";
import { performance } from "node:perf_hooks";
import postgres from "postgres";
import type { Logger } from "../logging/logger.js";
import type { Sql } from "../store/db.js";
import { GenerationsRepository } from "../store/generations-repository.js";

/** Which replica (process) this is, and whether its lease on the store still holds. */
export interface ReplicaIdentity {
  /** The replica's id in `replicas`; every reservation it makes names it. */
  id(): number;
  /** False once the lease may have run out for the other replicas (reservations are then refused). */
  held(): boolean;
}

/** How a replica lease is taken. */
export interface ReplicaLeaseOptions {
  /** The database the replica serves from. */
  url: string;
  logger: Logger;
  /** How long one renewal keeps the replica alive in the others' eyes (ms). Default 15 000. */
  leaseMs?: number;
  /** How often the lease is renewed (ms); well under `leaseMs`. Default 5 000. */
  renewEveryMs?: number;
}

/**
 * The lease by which a replica tells the others it is alive, so that a retry on another replica
 * can tell at once whether a reservation's process died (release it and start over) or is still
 * working on it (wait for its result).
 *
 * Why both a lock and a lease: the session advisory lock is the prompt signal — PostgreSQL
 * frees it as soon as it sees the connection end, which for a killed process is immediate (its
 * kernel closes the socket) — but a replica cut off by the network can leave a half-open
 * connection whose lock stays held until TCP keepalive gives up, hours later. The lease, renewed
 * every few seconds over the same connection, bounds that case to `leaseMs`. A replica counts as
 * alive only while both hold.
 *
 * The connection is a client of its own, not one of the pool's: a pooled connection is recycled
 * (postgres.js ends each after 30-60 minutes), which would drop the lock under a live replica,
 * and `sql.reserve()` would take a slot from a pool that may have only one. If the connection
 * drops anyway, the next renewal reconnects and takes the lock again; reservations released
 * meanwhile by other replicas fail to settle and are not charged.
 */
export class ReplicaLease implements ReplicaIdentity {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private renewedAt: number;
  private failing = false;

  private constructor(
    private readonly sql: Sql,
    private readonly replicas: GenerationsRepository,
    private current: number,
    private readonly label: string,
    private readonly leaseMs: number,
    private readonly renewEveryMs: number,
    private readonly logger: Logger,
  ) {
    this.renewedAt = performance.now();
  }

  /** Registers this process as a replica, takes its lock, and keeps its lease renewed until {@link stop}. */
  static async start(options: ReplicaLeaseOptions): Promise<ReplicaLease> {
    const leaseMs = options.leaseMs ?? 15_000;
    const renewEveryMs = options.renewEveryMs ?? 5_000;
    const sql: Sql = postgres(options.url, {
      max: 1,
      max_lifetime: 0,
      idle_timeout: 0,
      connection: { application_name: "glimpse replica lease" },
      types: { bigint: postgres.BigInt },
      onnotice: () => undefined,
    });
    const replicas = new GenerationsRepository(sql);
    const label = `${hostname()}:${process.pid}`;
    try {
      const id = await register(replicas, label, leaseMs);
      const lease = new ReplicaLease(sql, replicas, id, label, leaseMs, renewEveryMs, options.logger);
      lease.schedule();
      options.logger.info("replica lease taken", { replica: id });
      return lease;
    } catch (err) {
      await sql.end({ timeout: 1 });
      throw err;
    }
  }

  id(): number {
    return this.current;
  }

  held(): boolean {
    // Renewal ends (here) after the database set the new expiry, so its local time errs late;
    // one renewal period of margin keeps "held" from outlasting what the others see.
    return !this.stopped && performance.now() - this.renewedAt < this.leaseMs - this.renewEveryMs;
  }

  /** Stops renewing, removes the replica's row and closes its connection (which frees the lock). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    await this.replicas.retireReplica(this.current).catch(() => undefined);
    await this.sql.end({ timeout: 2 });
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.renew().finally(() => this.schedule()), this.renewEveryMs);
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      if (!(await this.replicas.renewReplica(this.current, this.leaseMs))) {
        // Forgotten after a long outage: what it reserved under the old id was released already.
        const previous = this.current;
        this.current = await register(this.replicas, this.label, this.leaseMs);
        this.logger.warn("replica lease was lost; registered again", { previous, replica: this.current });
      }
      this.renewedAt = performance.now();
      if (this.failing) this.logger.info("replica lease renewed again", { replica: this.current });
      this.failing = false;
    } catch (error) {
      if (!this.failing && !this.stopped) {
        this.logger.warn("renewing the replica lease failed; retrying", { error, replica: this.current });
      }
      this.failing = true;
    }
  }
}

/** A new replica row with its lock held by `replicas`' connection. */
async function register(replicas: GenerationsRepository, label: string, leaseMs: number): Promise<number> {
  const id = await replicas.registerReplica(label, leaseMs);
  if (!(await replicas.renewReplica(id, leaseMs))) throw new Error(`could not take the lock of new replica ${id}`);
  return id;
}
