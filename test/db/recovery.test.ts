/**
 * Failure behaviour of the pool: connections killed by the server (a restart, an
 * operator, a failover) fail the queries they carried with DatabaseUnavailable, and
 * the pool recovers by itself.
 */
import postgres from 'postgres';
import t from 'tap';
import { Database } from '../../src/db/database.ts';
import { DatabaseUnavailableError } from '../../src/domain/errors.ts';
import { testDatabase, testLogger } from '../helpers/db.ts';

async function killConnections(url: string, applicationName: string): Promise<number> {
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const rows = await admin`
      select pg_terminate_backend(pid) as killed
      from pg_stat_activity
      where application_name = ${applicationName} and pid <> pg_backend_pid()
    `;
    return rows.length;
  } finally {
    await admin.end();
  }
}

t.test(
  'a query whose connection is killed fails as DatabaseUnavailable, and the pool recovers',
  async (t) => {
    const { sql, url } = await testDatabase(t, { poolMax: 2 });
    const db = new Database(sql, { log: testLogger(), slowQueryMs: 10_000, queryTimeoutMs: 10_000 });
    const [{ app } = { app: '' }] = await sql<
      { app: string }[]
    >`select current_setting('application_name') as app`;

    // The handler is attached at once: the rejection comes while we are killing connections.
    const inFlight = t.rejects(
      db.many('test.sleep', sql`select pg_sleep(5)`),
      DatabaseUnavailableError,
      'the query on the killed connection',
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    t.ok((await killConnections(url, app)) >= 1, 'the server closed our connections');
    await inFlight;

    // The next queries find a new connection; none fails with anything but DatabaseUnavailable.
    let answered = false;
    for (let attempt = 0; attempt < 20 && !answered; attempt++) {
      try {
        t.same(await db.one('test.ping', sql`select 1 as ok`), { ok: 1 });
        answered = true;
      } catch (error) {
        t.type(error, DatabaseUnavailableError, 'a failure while reconnecting is still a 503 kind');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    t.ok(answered, 'the pool answers again without a restart of the app');

    // Killed while idle: the pool notices and reconnects; queries work again.
    await killConnections(url, app);
    await new Promise((resolve) => setTimeout(resolve, 200));
    let again = false;
    for (let attempt = 0; attempt < 20 && !again; attempt++) {
      try {
        await db.one('test.ping', sql`select 1 as ok`);
        again = true;
      } catch (error) {
        t.type(error, DatabaseUnavailableError);
      }
    }
    t.ok(again, 'idle connections killed: the pool recovers as well');
  },
);
