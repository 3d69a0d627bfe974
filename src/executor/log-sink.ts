/**
 * Output of a run on its way to the database: buffered and written in batches
 * (every `flushMs`, or sooner when `batchBytes` pile up), in order, one write at a
 * time, and capped at `maxBytes` with a marker. A failed write keeps its text for
 * the next attempt. A refused one (the run was cancelled or is no longer ours)
 * stops writing and calls `onLost` (the executor kills the run at once); what
 * was not written stays in the sink for `drain()`, so the executor can hand it
 * over with the run's last record, whatever the outcome.
 */
export interface LogSinkOptions {
  maxBytes: number;
  flushMs?: number;
  batchBytes?: number;
  /** Appends text; false when the run is no longer ours. */
  write: (text: string) => Promise<boolean>;
  onError: (error: unknown) => void;
  /** Called once, when a write is refused. */
  onLost?: () => void;
}

export class LogSink {
  private buffer = '';
  private bufferedBytes = 0;
  private acceptedBytes = 0;
  private truncated = false;
  private writing: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  /** True once a write was refused: the run belongs to nobody here any more. */
  lost = false;

  constructor(private readonly options: LogSinkOptions) {}

  push(text: string): void {
    if (this.truncated) return;
    let bytes = Buffer.byteLength(text);
    const room = this.options.maxBytes - this.acceptedBytes;
    if (bytes > room) {
      text = `${truncateUtf8(text, room)}\n[output truncated: the log is limited to ${this.options.maxBytes} bytes]\n`;
      bytes = Buffer.byteLength(text);
      this.truncated = true;
    }
    this.acceptedBytes += bytes;
    this.buffer += text;
    this.bufferedBytes += bytes;
    if (this.lost) return;
    if (this.bufferedBytes >= (this.options.batchBytes ?? 64 * 1024)) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.options.flushMs ?? 500);
  }

  /** Writes what is buffered; resolves when every earlier write has finished. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.writing = this.writing.then(async () => {
      if (this.buffer === '' || this.lost) return;
      const text = this.buffer;
      this.buffer = '';
      this.bufferedBytes = 0;
      try {
        if (!(await this.options.write(text))) {
          this.lost = true;
          this.buffer = text + this.buffer;
          this.bufferedBytes += Buffer.byteLength(text);
          this.options.onLost?.();
        }
      } catch (error) {
        // Keep the text (in order) for the next flush; the database may be back by then.
        this.buffer = text + this.buffer;
        this.bufferedBytes += Buffer.byteLength(text);
        this.options.onError(error);
      }
    });
    return this.writing;
  }

  /** Output accepted but not written (refused, or the database failed); empties the sink. */
  drain(): string {
    clearTimeout(this.timer);
    this.timer = undefined;
    const text = this.buffer;
    this.buffer = '';
    this.bufferedBytes = 0;
    return text;
  }

  get isTruncated(): boolean {
    return this.truncated;
  }
}

/** The longest prefix of `text` that fits in `bytes` bytes of UTF-8, never splitting a character. */
export function truncateUtf8(text: string, bytes: number): string {
  if (bytes <= 0) return '';
  const encoded = Buffer.from(text);
  if (encoded.length <= bytes) return text;
  let end = bytes;
  // Back off continuation bytes (10xxxxxx) so a multi-byte character is not cut.
  while (end > 0 && ((encoded[end] ?? 0) & 0xc0) === 0x80) end--;
  return encoded.subarray(0, end).toString('utf8');
}
