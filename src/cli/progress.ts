import { formatBytes } from "./args.js";
import type { Output } from "./context.js";

/** Fewest milliseconds between two redraws of the terminal line. */
const REDRAW_MS = 100;
const BAR_WIDTH = 24;

/**
 * Progress of a run over a known number of files and bytes: on a terminal one line redrawn in
 * place (bar, files, bytes, rate, ETA); elsewhere (logs, pipes) a plain line at every tenth of
 * the files, so a log shows the run moving without drowning in it.
 */
export class Progress {
  private files = 0;
  private bytes = 0;
  private readonly startedAt: number;
  private lastDraw = 0;
  private lastTenth = 0;
  private drawn = false;

  constructor(
    private readonly out: Output,
    private readonly totalFiles: number,
    private readonly totalBytes: number,
    private readonly label: string,
    /** Milliseconds now; tests pass their own. */
    private readonly now: () => number = Date.now,
  ) {
    this.startedAt = now();
  }

  /** Counts one more file (of `bytes` bytes) as done, whatever its outcome. */
  advance(bytes: number): void {
    this.files++;
    this.bytes += bytes;
    const now = this.now();
    if (this.out.isTTY) {
      if (now - this.lastDraw < REDRAW_MS && this.files < this.totalFiles) return;
      this.lastDraw = now;
      this.out.write(`\r${this.describe(now, true)}\x1b[K`);
      this.drawn = true;
      return;
    }
    const tenth = this.totalFiles === 0 ? 10 : Math.floor((10 * this.files) / this.totalFiles);
    if (tenth > this.lastTenth) {
      this.lastTenth = tenth;
      this.out.write(`${this.label}: ${this.describe(now, false)}\n`);
    }
  }

  /** Ends the terminal line so what follows starts on its own line. */
  end(): void {
    if (this.drawn) this.out.write("\n");
    this.drawn = false;
  }

  /** `[#####-----] 12/40 files  3.2/10.1 MiB  1.1 MiB/s  ETA 6 s` */
  private describe(now: number, bar: boolean): string {
    const seconds = (now - this.startedAt) / 1000;
    const rate = seconds > 0 ? this.bytes / seconds : 0;
    const share = this.totalBytes > 0 ? this.bytes / this.totalBytes : this.totalFiles > 0 ? this.files / this.totalFiles : 1;
    const parts = [
      `${this.files}/${this.totalFiles} files`,
      `${formatBytes(this.bytes)}/${formatBytes(this.totalBytes)}`,
      `${formatBytes(Math.round(rate))}/s`,
    ];
    if (this.files < this.totalFiles && rate > 0) parts.push(`ETA ${duration((this.totalBytes - this.bytes) / rate)}`);
    else if (this.files >= this.totalFiles) parts.push(`in ${duration(seconds)}`);
    if (!bar) return parts.join(", ");
    const filled = Math.round(Math.min(1, share) * BAR_WIDTH);
    return `[${"#".repeat(filled)}${"-".repeat(BAR_WIDTH - filled)}] ${parts.join("  ")}`;
  }
}

/** Seconds as `42 s`, `3 min 5 s` or `2 h 10 min`. */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
