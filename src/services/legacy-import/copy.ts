/**
 * Piping a `COPY … TO STDOUT` stream of the `postgres` driver somewhere else.
 *
 * Not with stream.pipeline: under backpressure the driver pauses its socket when the
 * COPY stream is full and resumes it only on the stream's next read(); when the end of
 * the COPY arrives in the same socket chunk, no read() follows and the connection never
 * sees its CommandComplete: the query, and the transaction around it, hang (seen here
 * with postgres 3.4.9 from a few hundred thousand rows on). Read in flowing mode, the
 * stream never fills, so the socket is never paused; the destination buffers instead
 * (it is a COPY into a staging table or a file, which keeps up).
 */
import type { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';

export async function pipeCopy(
  from: Readable,
  into: Writable,
  onChunk?: (chunk: Buffer) => void,
): Promise<void> {
  const ended = new Promise<void>((resolve, reject) => {
    from.once('end', resolve);
    from.once('error', reject);
    into.once('error', reject);
  });
  from.on('data', (chunk: Buffer) => {
    onChunk?.(chunk);
    into.write(chunk);
  });
  await ended;
  into.end();
  await finished(into);
}
