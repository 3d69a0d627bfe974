/**
 * TerminalProgress against a fake output stream: what a terminal sees (one line
 * rewritten in place, with rows/s and an ETA) and what a log file gets (one line per
 * finished phase). No rate is asserted, only that it is there and how it is written.
 */
import t from 'tap';
import { silentProgress, TerminalProgress } from '../../../src/services/legacy-import/progress.ts';

class FakeOut {
  readonly writes: string[] = [];
  isTTY?: boolean;

  constructor(isTTY?: boolean) {
    this.isTTY = isTTY;
  }

  write(text: string): boolean {
    this.writes.push(text);
    return true;
  }
}

const CLEAR = '\r\u001b[K';
const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

t.test('on a terminal: the line is rewritten with rows done, rows/s and the ETA', async (t) => {
  const out = new FakeOut(true);
  const progress = new TerminalProgress(out);
  progress.phase('scripts: read and hash files', 1000);
  progress.add(250);
  t.equal(out.writes.length, 1, 'the first rows draw the line at once');
  const [line] = out.writes;
  t.ok(line!.startsWith(CLEAR), 'the line is cleared and rewritten in place');
  t.notMatch(line!, /\n/, 'without a new line');
  t.match(
    line!.slice(CLEAR.length),
    /^ {2}scripts: read and hash files: 250\/1,000 rows · [0-9,]+ rows\/s · ETA [0-9]+ s$/,
  );

  progress.add(250);
  t.equal(out.writes.length, 1, 'redrawn at most every 200 ms, not at every add');
  await wait(250);
  progress.add(250);
  t.equal(out.writes.length, 2);
  t.match(out.writes[1]!, /750\/1,000 rows · [0-9,]+ rows\/s · ETA [0-9]+ s$/);

  progress.end();
  t.equal(out.writes.length, 3);
  t.ok(out.writes[2]!.startsWith(CLEAR));
  t.match(
    out.writes[2]!.slice(CLEAR.length),
    /^ {2}scripts: read and hash files: 750\/1,000 rows · [0-9,]+ rows\/s · in [0-9]+\.[0-9] s\n$/,
    'the phase ends with its duration and a new line',
  );
  progress.end();
  t.equal(out.writes.length, 3, 'ending twice prints nothing more');
});

t.test('a phase without a known total shows the rows done and no ETA', async (t) => {
  const out = new FakeOut(true);
  const progress = new TerminalProgress(out);
  progress.phase('users: encrypt IBKR tokens', 0);
  progress.add(1456);
  t.match(out.writes[0]!, /users: encrypt IBKR tokens: 1,456 rows · [0-9,]+ rows\/s · $/);
  t.notMatch(out.writes[0]!, /ETA/);
});

t.test('elsewhere (a log file, CI): one line per finished phase, nothing while it runs', async (t) => {
  const out = new FakeOut(undefined);
  const progress = new TerminalProgress(out);
  progress.phase('users: copy from the old database', 10_000);
  progress.add(4_000);
  progress.add(6_000);
  t.same(out.writes, [], 'nothing is drawn while the phase runs');
  progress.phase('scripts: copy from the old database', 100_000);
  t.equal(out.writes.length, 1, 'a new phase ends the one before');
  t.match(
    out.writes[0]!,
    /^ {2}users: copy from the old database: 10,000\/10,000 rows · [0-9,]+ rows\/s · in [0-9]+\.[0-9] s\n$/,
  );
  progress.add(100_000);
  progress.end();
  t.equal(out.writes.length, 2);
  t.match(out.writes[1]!, /^ {2}scripts: copy from the old database: 100,000\/100,000 rows/);
  t.notMatch(out.writes.join(''), /\r/, 'no carriage return in a log');
});

t.test('interactive or not can be forced either way', async (t) => {
  const tty = new FakeOut(true);
  const forced = new TerminalProgress(tty, false);
  forced.phase('x', 1);
  forced.add(1);
  t.same(tty.writes, [], 'a terminal told not to draw does not');
  const pipe = new FakeOut(false);
  const drawing = new TerminalProgress(pipe, true);
  drawing.phase('x', 2);
  drawing.add(1);
  t.ok(pipe.writes[0]!.startsWith(CLEAR), 'a stream told to draw does');
  t.match(pipe.writes[0]!.slice(CLEAR.length), /^ {2}x: 1\/2 rows/);
});

t.test('the silent progress of tests prints nothing and accepts every call', async (t) => {
  t.doesNotThrow(() => {
    silentProgress.phase('anything', 10);
    silentProgress.add(10);
    silentProgress.end();
  });
  const out = new FakeOut(true);
  new TerminalProgress(out).end();
  t.same(out.writes, [], 'ending before any phase prints nothing');
});
