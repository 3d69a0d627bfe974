/**
 * locateDatabase (src/db/connect.ts), how every process finds its database: DATABASE_URL
 * as given, else an embedded PostgreSQL in EMBEDDED_PG_DIR with the app's database made
 * on it. The embedded case starts a real server in a folder of this test.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import t from 'tap';
import { EMBEDDED_DATABASE, locateDatabase } from '../../src/db/connect.ts';
import { captureLogger } from '../helpers/log-capture.ts';

t.test('with DATABASE_URL, that URL and nothing started', async (t) => {
  const { log, lines } = captureLogger('debug');
  const url = 'postgres://someone@127.0.0.1:1/elsewhere';
  const found = await locateDatabase(
    { DATABASE_URL: url, EMBEDDED_PG_DIR: '/nonexistent', EMBEDDED_PG_PORT: 0 },
    log,
  );
  t.same(found, { url }, 'the URL as given, no embedded server');
  t.same(lines, [], 'nothing logged: nothing was started');
});

t.test(
  'without DATABASE_URL, an embedded PostgreSQL in EMBEDDED_PG_DIR with the app’s database',
  async (t) => {
    const folder = await mkdtemp(path.join(tmpdir(), 'dollarclub-connect-'));
    await chmod(folder, 0o755); // as root the server runs as the `postgres` user, which must reach it
    t.teardown(() => rm(folder, { recursive: true, force: true }));
    const { log, lines } = captureLogger('info');
    const found = await locateDatabase(
      { DATABASE_URL: undefined, EMBEDDED_PG_DIR: path.join(folder, 'postgres'), EMBEDDED_PG_PORT: 0 },
      log,
    );
    t.teardown(() => found.embedded?.stop());
    t.ok(found.embedded, 'this process started the server');
    t.equal(new URL(found.url).pathname, `/${EMBEDDED_DATABASE}`, 'the URL names the app’s database');
    t.equal(new URL(found.url).hostname, '127.0.0.1', 'on loopback');
    const db = postgres(found.url, { max: 1, onnotice: () => {} });
    try {
      const [row] = await db<{ name: string }[]>`select current_database() as name`;
      t.equal(row?.name, EMBEDDED_DATABASE, 'which exists and answers');
    } finally {
      await db.end();
    }
    t.ok(
      lines.some((l) => l.msg === 'no DATABASE_URL: using the embedded PostgreSQL'),
      'the log says why it is embedded',
    );
    t.ok(
      lines.some((l) => l.msg === 'embedded PostgreSQL is up' && l.port === found.embedded?.port),
      'and where it listens',
    );
  },
);
