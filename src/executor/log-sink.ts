/**
 * Output of a run on its way to the database: buffered and written in batches
 * (every `flushMs`, or sooner when `batchBytes` pile up), in order, one write at a
 * time, and capped at `maxBytes` with a marker. Each batch gets the next seq number
 * (0, 1, ...) when it is first sent; a failed write is retried as the same batch,
 * same seq and same text, so a write that did commit but whose answer was lost is
 * not stored twice (the insert is `on conflict do nothing`). A refused write (the run
 * was cancelled or is no longer ours) stops writing and calls `onLost` (the executor
 * kills the run at once); what was not written stays in the sink for `drain()`, as
 * numbered batches, so the executor can hand it over with the run's last record.
 */
import type { PendingChunk } from '../repositories/run-output.ts';

export interface LogSinkOptions {
  maxBytes: number;
  flushMs?: number;
  batchBytes?: number;
  /** Stores batch `seq`; false when the run is no longer ours. */
  write: (seq: number, text: string) => Promise<boolean>;
  onError: (error: unknown) => void;
  /** Called once, when a write is refused. */
  onLost?: () => void;
}

export class LogSink {
  private buffer = '';
  private bufferedBytes = 0;
  /** The batch sent but not known to be stored (a failed write): retried as it is. */
  private unsent: PendingChunk | undefined;
  private nextSeq = 0;
  private acceptedBytes = 0;
  private truncated = false;
  private writing: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  /** True once a write was refused: the run belongs to nobody here any more. */
  lost = false;

  private readonly options: LogSinkOptions;

  constructor(options: LogSinkOptions) {
    this.options = options;
  }

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
      for (;;) {
        if (this.lost) return;
        // First the batch whose write failed, as it was; then the buffer as a new batch.
        if (this.unsent === undefined && this.buffer !== '') {
          this.unsent = { seq: this.nextSeq++, data: this.buffer };
          this.buffer = '';
          this.bufferedBytes = 0;
        }
        const batch = this.unsent;
        if (batch === undefined) return;
        let held: boolean;
        try {
          held = await this.options.write(batch.seq, batch.data);
        } catch (error) {
          // Kept for the next flush (the database may be back by then).
          this.options.onError(error);
          return;
        }
        if (!held) {
          this.lost = true;
          this.options.onLost?.();
          return;
        }
        this.unsent = undefined;
      }
    });
    return this.writing;
  }

  /** Output accepted but not known to be stored, as numbered batches; empties the sink. */
  drain(): PendingChunk[] {
    clearTimeout(this.timer);
    this.timer = undefined;
    const pending: PendingChunk[] = [];
    if (this.unsent !== undefined) pending.push(this.unsent);
    if (this.buffer !== '') pending.push({ seq: this.nextSeq++, data: this.buffer });
    this.unsent = undefined;
    this.buffer = '';
    this.bufferedBytes = 0;
    return pending;
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
