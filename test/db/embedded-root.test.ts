/**
 * The embedded PostgreSQL as root in a folder other users cannot traverse (issue 7,
 * item 10): a project in a `mktemp -d` folder (0700) or under /root, where the
 * `postgres` user can reach neither the programs in node_modules nor ./.data. Here the
 * programs are a copy inside such a folder; the starter copies them where the postgres
 * user can reach them (once, reused by the next start), keeps the data there too, says
 * where, and the server answers. Where no place works, it fails with one sentence.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, cp, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import t from 'tap';
import { EmbeddedPostgresError, startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { packageBinaries, reachable } from '../../src/db/embedded-binaries.ts';

const root = process.getuid?.() === 0;

async function selectOne(url: string): Promise<number | undefined> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<{ one: number }[]>`select 1 as one`;
    return row?.one;
  } finally {
    await sql.end();
  }
}

async function kept(url: string): Promise<number | undefined> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<
      { n: number }[]
    >`select count(*)::int as n from pg_tables where tablename = 'kept'`;
    return row?.n;
  } finally {
    await sql.end();
  }
}

t.test(
  'as root, from a folder the postgres user cannot traverse, it starts from a copy it can reach',
  async (t) => {
    if (!root) {
      // Not root: PostgreSQL runs as this user, who reaches its own folders; nothing is moved.
      t.pass('not root: nothing to relocate');
      return;
    }
    const project = await mkdtemp(path.join(tmpdir(), 'dollarclub-private-')); // 0700, like mktemp -d
    const places = await mkdtemp(path.join(tmpdir(), 'dollarclub-places-'));
    await chmod(places, 0o755); // as /var/lib is
    t.teardown(async () => {
      await rm(project, { recursive: true, force: true });
      await rm(places, { recursive: true, force: true });
    });
    t.equal((await stat(project)).mode & 0o777, 0o700, 'the project folder is 0700');
    const installed = await packageBinaries();
    const binaries = {
      dir: path.join(project, 'node_modules', 'native'),
      version: `test-${randomBytes(4).toString('hex')}`,
    };
    await cp(installed.dir, binaries.dir, { recursive: true, verbatimSymlinks: true });
    const user = {
      uid: Number(execFileSync('id', ['-u', 'postgres'])),
      gid: Number(execFileSync('id', ['-g', 'postgres'])),
    };
    t.notOk(
      reachable(user, path.join(binaries.dir, 'bin', 'initdb')),
      'the postgres user cannot reach initdb there',
    );

    const relocation = path.join(places, 'dollarclub'); // made by the starter
    const dataDir = path.join(project, '.data', 'postgres');
    const notices: string[] = [];
    const start = () =>
      startEmbeddedPostgres({
        dir: dataDir,
        persistent: true,
        fast: true,
        binaries,
        relocationDirs: [relocation],
        notice: (message) => notices.push(message),
      });

    const first = await start();
    const copy = path.join(relocation, `pg-${binaries.version}`);
    t.equal(first.binDir, copy, 'the programs run from the copy');
    t.ok(
      first.dataDir.startsWith(path.join(relocation, 'data') + path.sep),
      `the data is kept beside it (${first.dataDir})`,
    );
    t.ok(reachable(user, path.join(copy, 'bin', 'postgres')), 'which the postgres user reaches');
    t.equal((await stat(first.dataDir)).uid, user.uid, 'the data folder is the postgres user’s');
    t.equal(await selectOne(first.url), 1, 'the server answers select 1');
    t.match(notices.join('\n'), copy, 'the log says where the programs are');
    t.match(notices.join('\n'), first.dataDir, 'and where the data is');
    const sql = postgres(first.url, { max: 1, onnotice: () => {} });
    await sql`create table kept (id int)`;
    await sql.end();
    await first.stop();

    const copied = await stat(path.join(copy, 'bin', 'postgres'));
    const second = await start();
    t.equal(second.binDir, copy, 'the next start uses the same copy');
    t.equal((await stat(path.join(copy, 'bin', 'postgres'))).ino, copied.ino, 'without copying again');
    t.equal(second.dataDir, first.dataDir, 'and finds its data again');
    t.equal(await kept(second.url), 1, 'the data survived the restart');
    t.equal((await readFile(path.join(copy, '.dollarclub-pg-version'), 'utf8')).trim(), binaries.version);
    await second.stop();

    // The folder becomes traversable later: the programs are run from where they are, but
    // the data stays where it went (an empty cluster in .data would look like lost data).
    await chmod(project, 0o755);
    const third = await start();
    t.teardown(() => third.stop());
    t.equal(third.binDir, binaries.dir, 'reachable programs are run in place');
    t.equal(third.dataDir, first.dataDir, 'the moved data is used still');
    t.equal(await kept(third.url), 1, 'with what it holds');
  },
);

t.test(
  'where no place the postgres user reaches can be made, it fails with one clear sentence',
  async (t) => {
    if (!root) {
      t.pass('not root: nothing to relocate');
      return;
    }
    const project = await mkdtemp(path.join(tmpdir(), 'dollarclub-private-'));
    t.teardown(() => rm(project, { recursive: true, force: true }));
    const installed = await packageBinaries();
    const binaries = { dir: path.join(project, 'native'), version: 'test-unreachable' };
    await cp(installed.dir, binaries.dir, { recursive: true, verbatimSymlinks: true });
    const error = await startEmbeddedPostgres({
      dir: path.join(project, 'data'),
      persistent: true,
      binaries,
      // Inside the private folder too: a copy there is no better.
      relocationDirs: [path.join(project, 'relocated')],
    }).then(
      () => null,
      (e: unknown) => e,
    );
    t.type(error, EmbeddedPostgresError);
    const message = (error as Error).message;
    t.notMatch(message, /\n/, 'one line');
    t.match(message, /cannot reach .*set DATABASE_URL/, 'saying why and what to do');
  },
);
