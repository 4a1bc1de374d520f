import type { Clock } from "../clock.js";

/** 2020-01-01T00:00:00Z: 41 bits of milliseconds from here last until 2089. */
export const SNOWFLAKE_EPOCH_MS = 1_577_836_800_000;
const WORKER_BITS = 10n;
const SEQUENCE_BITS = 12n;
const MAX_SEQUENCE = (1n << SEQUENCE_BITS) - 1n;

/**
 * Time-ordered 64-bit ids: 41 bits of milliseconds since {@link SNOWFLAKE_EPOCH_MS}, 10 bits of
 * worker number (unique per running process, handed out by Postgres), 12 bits of sequence.
 * Ids from one generator strictly increase, even if the clock steps back.
 */
export class SnowflakeGenerator {
  private lastMs = 0n;
  private sequence = 0n;

  constructor(
    private readonly workerId: number,
    private readonly clock: Clock,
  ) {
    if (!Number.isInteger(workerId) || workerId < 0 || workerId >= 1 << Number(WORKER_BITS)) {
      throw new Error(`snowflake worker id must be 0..1023, got ${workerId}`);
    }
  }

  /** The next id. */
  next(): bigint {
    let ms = BigInt(this.clock.now().getTime() - SNOWFLAKE_EPOCH_MS);
    if (ms < this.lastMs) ms = this.lastMs; // clock stepped back: stay monotonic
    if (ms === this.lastMs) {
      this.sequence++;
      if (this.sequence > MAX_SEQUENCE) {
        // 4096 ids in one millisecond: borrow the next millisecond rather than wait.
        ms++;
        this.sequence = 0n;
      }
    } else {
      this.sequence = 0n;
    }
    this.lastMs = ms;
    return (ms << (WORKER_BITS + SEQUENCE_BITS)) | (BigInt(this.workerId) << SEQUENCE_BITS) | this.sequence;
  }
}

/** The creation time encoded in a snowflake id. */
export function snowflakeTime(id: bigint): Date {
  return new Date(Number(id >> (WORKER_BITS + SEQUENCE_BITS)) + SNOWFLAKE_EPOCH_MS);
}
