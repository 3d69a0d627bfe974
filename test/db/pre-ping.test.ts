/**
 * Pre-ping (DB_PREPING_IDLE_SECONDS): after an idle period, connections the server has
 * closed meanwhile (a restart, an operator's pg_terminate_backend, a dropped NAT entry)
 * are found and replaced before a query is sent on them, so the first requests after the
 * idle period succeed. Without pre-ping the driver only notices a dead connection when a
 * query is written to it, and that query fails (ECONNRESET / CONNECTION_CLOSED).
 */
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import t, { type Test } from 'tap';
import { createPool, type Sql } from '../../src/db/client.ts';
import { Database } from '../../src/db/database.ts';
import { freePort } from '../../src/db/embedded.ts';
import { DatabaseUnavailableError } from '../../src/domain/errors.ts';
import { testDatabase, testLogger } from '../helpers/db.ts';

const IDLE_MS = 200;
const POOL_MAX = 3;

async function pool(t: Test, url: string): Promise<{ sql: Sql; applicationName: string }> {
  const applicationName = `dollarclub-preping-${randomBytes(4).toString('hex')}`;
  const sql = createPool(
    {
      url,
      max: POOL_MAX,
      idleTimeoutSeconds: 0,
      maxLifetimeSeconds: 0,
      // Generous: on a loaded 2-core machine a new backend can take seconds to start; the
      // test is about dead connections, not slow ones.
      connectTimeoutSeconds: 30,
      statementTimeoutMs: 30_000,
      prepare: true,
      applicationName,
    },
    testLogger(),
  );
  t.teardown(() => sql.end({ timeout: 5 }));
  return { sql, applicationName };
}

/** Terminates every backend of the pool (from another connection); returns how many. */
async function terminate(url: string, applicationName: string): Promise<number> {
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const rows = await admin`
      select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${applicationName}
    `;
    return rows.length;
  } finally {
    await admin.end();
  }
}

/** Opens every connection of the pool (concurrent queries), then leaves them idle. */
async function fill(db: Database): Promise<void> {
  await Promise.all(
    Array.from({ length: POOL_MAX }, () => db.one('test.fill', db.sql`select pg_sleep(0.05) as slept`)),
  );
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

t.test('after an idle period, queries never land on a connection the server terminated', async (t) => {
  const { url } = await testDatabase(t);
  const { sql, applicationName } = await pool(t, url);
  const db = new Database(sql, {
    log: testLogger(),
    slowQueryMs: 10_000,
    queryTimeoutMs: 10_000,
    prePingIdleMs: IDLE_MS,
  });
  for (let round = 1; round <= 3; round++) {
    await fill(db);
    await sleep(IDLE_MS + 100);
    t.equal(await terminate(url, applicationName), POOL_MAX, `round ${round}: every idle connection killed`);
    // At once, before the driver may have read the server's goodbye: each query would take a dead
    // connection of its own without the check.
    for (let i = 0; i < POOL_MAX + 1; i++) {
      t.same(await db.one('test.after', sql`select ${i}::int as i`), { i }, `round ${round}: query ${i}`);
    }
  }
});

t.test('concurrent requests after an idle period share the check and all succeed', async (t) => {
  const { url } = await testDatabase(t);
  const { sql, applicationName } = await pool(t, url);
  const db = new Database(sql, {
    log: testLogger(),
    slowQueryMs: 10_000,
    queryTimeoutMs: 10_000,
    prePingIdleMs: IDLE_MS,
  });
  await fill(db);
  await sleep(IDLE_MS + 100);
  await terminate(url, applicationName);
  const results = await Promise.all([
    db.one('test.a', sql`select 1 as n`),
    db.transaction(async (tx) => tx.one('test.b', tx.sql`select 2 as n`)),
    db.one('test.c', sql`select 3 as n`),
  ]);
  t.same(results, [{ n: 1 }, { n: 2 }, { n: 3 }]);
});

t.test('a transaction after an idle period starts on a live connection', async (t) => {
  const { url } = await testDatabase(t);
  const { sql, applicationName } = await pool(t, url);
  const db = new Database(sql, {
    log: testLogger(),
    slowQueryMs: 10_000,
    queryTimeoutMs: 10_000,
    prePingIdleMs: IDLE_MS,
  });
  await fill(db);
  await sleep(IDLE_MS + 100);
  await terminate(url, applicationName);
  const n = await db.transaction(async (tx) => {
    const a = await tx.one<{ n: number }>('test.tx1', tx.sql`select 1 as n`);
    const b = await tx.one<{ n: number }>('test.tx2', tx.sql`select 2 as n`);
    return a.n + b.n;
  });
  t.equal(n, 3);
});

t.test('with the database down, the check gives up and the query fails as unavailable', async (t) => {
  // A pool to a port nothing listens on: every ping fails to connect; the query then fails
  // on its own with DatabaseUnavailable (503), not with an error of the check.
  const port = await freePort();
  const sql = createPool(
    {
      url: `postgres://nobody@127.0.0.1:${port}/none`,
      max: 2,
      idleTimeoutSeconds: 0,
      maxLifetimeSeconds: 0,
      connectTimeoutSeconds: 1,
      statementTimeoutMs: 1000,
      prepare: true,
      applicationName: 'dollarclub-preping-down',
    },
    testLogger(),
  );
  t.teardown(() => sql.end({ timeout: 1 }));
  const db = new Database(sql, {
    log: testLogger(),
    slowQueryMs: 10_000,
    queryTimeoutMs: 5_000,
    prePingIdleMs: 1,
  });
  await sleep(5);
  await t.rejects(db.one('test.down', sql`select 1 as n`), DatabaseUnavailableError);
});
