/**
 * ensureDatabase, which the embedded start (src/db/connect.ts) uses to make the app's
 * database on a fresh cluster: here against the test server, with a database of this
 * file's own that it drops at the end.
 */
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import t from 'tap';
import { ensureDatabase } from '../../src/db/embedded.ts';
import { serverUrl } from '../helpers/db.ts';

t.test('ensureDatabase creates the database once and answers its URL every time', async (t) => {
  const name = `${process.env.TEST_RUN_PREFIX}_ensure_${randomBytes(3).toString('hex')}`;
  const admin = postgres(serverUrl(), { max: 1, onnotice: () => {} });
  t.teardown(async () => {
    await admin`drop database if exists ${admin(name)} with (force)`;
    await admin.end();
  });
  const exists = async () =>
    (await admin<{ n: number }[]>`select count(*)::int as n from pg_database where datname = ${name}`)[0]?.n;
  t.equal(await exists(), 0, 'not there before');

  const url = await ensureDatabase(serverUrl(), name);
  t.equal(new URL(url).pathname, `/${name}`);
  t.equal(new URL(url).port, new URL(serverUrl()).port, 'on the same server');
  t.equal(await exists(), 1, 'created');

  const db = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await db<{ current: string }[]>`select current_database() as current`;
    t.equal(row?.current, name, 'the URL connects to it');
  } finally {
    await db.end();
  }
  t.equal(await ensureDatabase(serverUrl(), name), url, 'a second call finds it and answers the same URL');
  t.equal(await exists(), 1);
});
