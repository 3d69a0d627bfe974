import fc from 'fast-check';
import t from 'tap';
import { LogSink, truncateUtf8 } from '../../src/executor/log-sink.ts';
import { tailLines } from '../../src/http/routes/execution.ts';

function sink(maxBytes: number, write: (text: string, seq: number) => Promise<boolean>) {
  return new LogSink({
    maxBytes,
    flushMs: 10_000,
    batchBytes: 1024 * 1024,
    write: (seq, text) => write(text, seq),
    onError: () => {},
  });
}

const text = (batches: Array<{ seq: number; data: string }>) => batches.map((b) => b.data).join('');

t.test('writes buffered output in one batch, in order', async (t) => {
  const writes: string[] = [];
  const s = sink(1000, async (text) => {
    writes.push(text);
    return true;
  });
  for (let i = 0; i < 100; i++) s.push(`line ${i}\n`);
  await s.flush();
  t.same(writes, [Array.from({ length: 100 }, (_, i) => `line ${i}\n`).join('')]);
});

t.test('cuts output at maxBytes with one marker, never splitting a character', async (t) => {
  let written = '';
  const s = sink(10, async (text) => {
    written += text;
    return true;
  });
  s.push('abcdefgh');
  s.push('é€😀xyz');
  s.push('more that is dropped');
  await s.flush();
  t.ok(written.startsWith('abcdefghé'), 'as much as fits, whole characters only');
  t.match(written, /\[output truncated: the log is limited to 10 bytes\]\n$/);
  t.equal(written.match(/truncated/g)?.length, 1);
  t.ok(s.isTruncated);
});

t.test('a failed write is retried as the same batch (same seq, same text), then the rest', async (t) => {
  const writes: Array<[number, string]> = [];
  let fail = true;
  const s = sink(1000, async (text, seq) => {
    writes.push([seq, text]);
    if (fail) throw new Error('database down (or the answer was lost)');
    return true;
  });
  s.push('one\n');
  await s.flush();
  fail = false;
  s.push('two\n');
  await s.flush();
  t.same(writes, [
    [0, 'one\n'],
    [0, 'one\n'],
    [1, 'two\n'],
  ]);
  s.push('three\n');
  await s.flush();
  t.same(writes.at(-1), [2, 'three\n'], 'numbers go on');
});

t.test('a refused write stops writing and keeps the text for drain()', async (t) => {
  const writes: string[] = [];
  const s = sink(1000, async (text) => {
    writes.push(text);
    return false;
  });
  s.push('one\n');
  await s.flush();
  t.ok(s.lost);
  s.push('two\n');
  await s.flush();
  t.equal(writes.length, 1, 'no write after the refusal');
  t.same(s.drain(), [
    { seq: 0, data: 'one\n' },
    { seq: 1, data: 'two\n' },
  ]);
  t.same(s.drain(), []);
});

t.test('a refused write calls onLost once, so the run can be killed at once', async (t) => {
  let lost = 0;
  const s = new LogSink({
    maxBytes: 1000,
    flushMs: 10_000,
    write: async () => false,
    onError: () => {},
    onLost: () => lost++,
  });
  s.push('one\n');
  await s.flush();
  s.push('two\n');
  await s.flush();
  t.equal(lost, 1);
  t.equal(text(s.drain()), 'one\ntwo\n', 'the text is kept for the last record');
});

t.test('truncateUtf8 never exceeds the byte budget nor splits a character', async (t) => {
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), fc.nat(400), (text, bytes) => {
        const cut = truncateUtf8(text, bytes);
        // A split character would decode to U+FFFD, and `text` would not start with `cut`.
        return Buffer.byteLength(cut) <= bytes && text.startsWith(cut);
      }),
      { numRuns: 2000 },
    ),
  );
});

t.test('tailLines keeps the last N lines and the final newline', async (t) => {
  t.equal(tailLines('a\nb\nc\n', 2), 'b\nc\n');
  t.equal(tailLines('a\nb\nc', 2), 'b\nc');
  t.equal(tailLines('a\n', 5), 'a\n');
  t.equal(tailLines('', 3), '');
  t.equal(tailLines('a\nb\n', undefined), 'a\nb\n');
});
