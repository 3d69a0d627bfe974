/**
 * Script bytes in PostgreSQL (`script_contents`, bytea stored uncompressed out of
 * line). Written with the script row in one transaction; read in slices with
 * substring(), which on EXTERNAL storage fetches only the TOAST chunks of the
 * slice, so a reader holds one slice (SLICE_BYTES) at a time, never the whole
 * file, and no connection is held between slices (a slow client costs no pool
 * connection). The bytes never change once written, so the slices of one read
 * fit together; a script deleted during a read ends the stream with an error.
 */
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { COPY_HEADER, COPY_TRAILER } from '../db/binary-copy.ts';
import type { Database } from '../db/database.ts';
import type { OpenedContent, ScriptRef, Storage } from './storage.ts';

/** 1 MiB: one round trip for a typical script, ten for the largest (MAX_UPLOAD_BYTES). */
export const SLICE_BYTES = 1024 * 1024;

export class ContentDeletedError extends Error {
  override name = 'ContentDeletedError';
}

export class PgStorage implements Storage {
  /** The primary: an upload is read right after it is written. */
  private readonly db: Database;
  private readonly sliceBytes: number;

  constructor(db: Database, sliceBytes = SLICE_BYTES) {
    this.db = db;
    this.sliceBytes = sliceBytes;
  }

  /**
   * One COPY in binary format: the bytes go to the server as they are, not as the
   * hex text a bytea parameter becomes (twice the size, encoded here and decoded
   * there); measured about 2x faster for 10 MiB (bench/content.ts). In pieces of
   * COPY_PIECE_BYTES.
   */
  async put(tx: Database, ref: ScriptRef, content: Buffer): Promise<void> {
    const copy =
      await tx.sql`copy script_contents (script_id, user_id, content) from stdin (format binary)`.writable();
    await new Promise<void>((resolve, reject) => {
      copy.once('error', reject);
      copy.once('finish', resolve);
      for (const part of copyTuple(ref, content)) {
        for (let at = 0; at < part.length; at += COPY_PIECE_BYTES)
          copy.write(part.subarray(at, at + COPY_PIECE_BYTES));
      }
      copy.end();
    });
  }

  async open(ref: ScriptRef): Promise<OpenedContent | null> {
    const first = await this.read(ref, 0, true);
    if (first === null) return null;
    const size = first.size!;
    const read = (offset: number) => this.read(ref, offset, false);
    const sliceBytes = this.sliceBytes;
    async function* slices(): AsyncGenerator<Buffer> {
      yield first!.slice;
      for (let offset = first!.slice.length; offset < size; offset += sliceBytes) {
        const next = await read(offset);
        if (next === null) throw new ContentDeletedError('the script was deleted while its content was read');
        yield next.slice;
      }
    }
    // Byte mode with a one-byte high-water mark: the next slice is fetched only when
    // the reader has taken the previous one.
    return { stream: Readable.from(slices(), { objectMode: false, highWaterMark: 1 }), size };
  }

  /**
   * One slice (and, with `withSize`, the whole size) by `COPY (SELECT …) TO STDOUT` in
   * binary format: the bytes come as they are stored. A bytea in a query's result comes
   * as hex text (the driver asks for text results): twice the bytes on the wire, a
   * string of twice the slice's size, then decoded; about 4x slower for a 1 MiB slice
   * (bench/README.md). COPY takes no parameters, so the numbers are written into the
   * statement, checked as safe integers first. The result is read in flowing mode (see
   * services/legacy-import/copy.ts: paused, the driver's COPY stream can hang).
   */
  private async read(
    ref: ScriptRef,
    offset: number,
    withSize: boolean,
  ): Promise<{ size: number | undefined; slice: Buffer } | null> {
    const numbers = [ref.script_id, ref.user_id, offset, this.sliceBytes];
    if (!numbers.every(Number.isSafeInteger)) throw new TypeError(`not integers: ${numbers.join(', ')}`);
    const columns = `${withSize ? 'octet_length(content)::int4, ' : ''}substring(content from ${offset + 1} for ${this.sliceBytes})`;
    const name = withSize ? 'contents.open' : 'contents.slice';
    const { log, onQuery, queryTimeoutMs, slowQueryMs } = this.db.options;
    const started = performance.now();
    const query = this.db.sql.unsafe(
      `copy (select ${columns} from script_contents where script_id = ${ref.script_id} and user_id = ${ref.user_id}) to stdout (format binary)`,
    );
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    let ok = false;
    try {
      await Promise.race([
        // Like every query's (db/database.ts): a frozen server never enforces its statement_timeout.
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            query.cancel();
            reject(new Error(`${name}: no answer within ${queryTimeoutMs} ms`));
          }, queryTimeoutMs);
        }),
        query.readable().then(
          (copy) =>
            new Promise<void>((resolve, reject) => {
              copy.once('end', resolve);
              copy.once('error', reject);
              copy.on('data', (chunk: Buffer) => chunks.push(chunk));
            }),
        ),
      ]);
      ok = true;
    } finally {
      clearTimeout(timer);
      const ms = performance.now() - started;
      onQuery?.(name, ms / 1000, ok);
      if (ms >= slowQueryMs) log.warn({ query: name, ms: Math.round(ms), ok }, 'slow query');
    }
    return parseCopyRow(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), withSize);
  }
}

/**
 * The bytes go as CopyData messages of this size rather than one message of the whole
 * file: the server parses each as it arrives instead of first gathering (and growing a
 * buffer for) a message of up to 10 MiB, and the driver copies 256 KiB at a time into
 * its message, not the whole file. Measured 1 MiB puts 42 ms vs 54 ms, 10 MiB no worse.
 */
const COPY_PIECE_BYTES = 256 * 1024;

/** One row (bigint, bigint, bytea) of a binary COPY, header and trailer included. */
function copyTuple(ref: ScriptRef, content: Buffer): Buffer[] {
  const head = Buffer.alloc(2 + (4 + 8) * 2 + 4);
  let at = head.writeInt16BE(3, 0);
  at = head.writeInt32BE(8, at);
  at = head.writeBigInt64BE(BigInt(ref.script_id), at);
  at = head.writeInt32BE(8, at);
  at = head.writeBigInt64BE(BigInt(ref.user_id), at);
  head.writeInt32BE(content.length, at);
  return [COPY_HEADER, head, content, COPY_TRAILER];
}

/**
 * The one row (or none) of a binary COPY of `[int4,] bytea`: the 19-byte header, then
 * per row a field count, and per field its length (-1: null) and bytes; then -1.
 */
function parseCopyRow(data: Buffer, withSize: boolean): { size: number | undefined; slice: Buffer } | null {
  if (data.length < COPY_HEADER.length + 2 || !data.subarray(0, 11).equals(COPY_HEADER.subarray(0, 11))) {
    throw new Error('not a binary COPY');
  }
  let at = COPY_HEADER.length + data.readInt32BE(15);
  const fields = data.readInt16BE(at);
  if (fields === -1) return null;
  at += 2;
  let size: number | undefined;
  if (withSize) {
    at += 4;
    size = data.readInt32BE(at);
    at += 4;
  }
  const length = data.readInt32BE(at);
  at += 4;
  return { size, slice: length < 0 ? Buffer.alloc(0) : data.subarray(at, at + length) };
}
