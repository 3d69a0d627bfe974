/**
 * Progress of a long operation on a terminal: one line rewritten in place (phase,
 * rows done of total, rows/s, ETA); on anything else (a log file, CI) one line per
 * finished phase, so logs stay readable.
 */
export interface ProgressSink {
  phase(name: string, total: number): void;
  add(rows: number): void;
  /** Ends the current phase and prints its line. */
  end(): void;
}

interface Out {
  write(text: string): unknown;
  isTTY?: boolean;
}

export class TerminalProgress implements ProgressSink {
  private name = '';
  private total = 0;
  private done = 0;
  private started = 0;
  private lastDraw = 0;

  private readonly out: Out;
  private readonly interactive: boolean;

  constructor(out: Out, interactive = out.isTTY === true) {
    this.out = out;
    this.interactive = interactive;
  }

  phase(name: string, total: number): void {
    this.end();
    this.name = name;
    this.total = total;
    this.done = 0;
    this.started = performance.now();
    this.lastDraw = Number.NEGATIVE_INFINITY; // the phase's first rows draw its line
  }

  add(rows: number): void {
    this.done += rows;
    const now = performance.now();
    if (this.interactive && now - this.lastDraw > 200) {
      this.lastDraw = now;
      this.out.write(`\r\u001b[K${this.line(now)}`);
    }
  }

  end(): void {
    if (this.name === '') return;
    const line = this.line(performance.now(), true);
    this.out.write(this.interactive ? `\r\u001b[K${line}\n` : `${line}\n`);
    this.name = '';
  }

  private line(now: number, finished = false): string {
    const seconds = Math.max((now - this.started) / 1000, 1e-6);
    const rate = this.done / seconds;
    const count = this.total > 0 ? `${fmt(this.done)}/${fmt(this.total)}` : fmt(this.done);
    const tail = finished
      ? `in ${seconds.toFixed(1)} s`
      : this.total > 0 && rate > 0
        ? `ETA ${Math.max(0, (this.total - this.done) / rate).toFixed(0)} s`
        : '';
    return `  ${this.name}: ${count} rows · ${fmt(Math.round(rate))} rows/s · ${tail}`;
  }
}

/** Prints nothing (tests). */
export const silentProgress: ProgressSink = { phase() {}, add() {}, end() {} };

const fmt = (n: number) => n.toLocaleString('en-US');
