import { type AddressInfo, createServer, type Socket } from 'node:net';
import postgres from 'postgres';
import t from 'tap';
import { createPool } from '../../src/db/client.ts';
import { Database } from '../../src/db/database.ts';
import { ConcurrentUpdateError } from '../../src/db/map-error.ts';
import {
  ConflictError,
  DatabaseUnavailableError,
  InvalidStateError,
  NotFoundError,
  ValidationError,
} from '../../src/domain/errors.ts';
import { Repositories } from '../../src/repositories/index.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { deadPool, testDatabase, testLogger, testPool } from '../helpers/db.ts';
import { makeScript, makeUser } from '../helpers/fixtures.ts';
import { captureLogger } from '../helpers/log-capture.ts';

t.test('sessions run in UTC with the configured statement_timeout and application_name', async (t) => {
  const { db } = await testDatabase(t);
  const sql = db.sql;
  const row = await db.one<{ tz: string; st: string; app: string }>(
    'test.settings',
    sql`select current_setting('TimeZone') as tz, current_setting('statement_timeout') as st,
          current_setting('application_name') as app`,
  );
  t.equal(row.tz, 'UTC');
  t.equal(row.st, '30s');
  t.match(row.app, /^dollarclub-test-/);
});

t.test(
  'timestamps are written as ISO 8601 text even where the server defaults to another DateStyle',
  async (t) => {
    const { db, name, url } = await testDatabase(t);
    await db.sql.unsafe(`alter database "${name}" set datestyle = 'SQL, DMY'`);
    const sql = createPool(
      {
        url,
        max: 1,
        idleTimeoutSeconds: 0,
        maxLifetimeSeconds: 0,
        connectTimeoutSeconds: 5,
        statementTimeoutMs: 5000,
        prepare: true,
        applicationName: 'dollarclub-test-datestyle',
      },
      testLogger(),
    );
    t.teardown(() => sql.end({ timeout: 5 }));
    const [row] = await sql`
    select current_setting('DateStyle') as style,
      timestamptz '2026-01-02 03:04:05.678+00' :: text as text
  `;
    t.same(row, { style: 'ISO, MDY', text: '2026-01-02 03:04:05.678+00' });
  },
);

t.test('int8, count(*) and numeric come back as JS numbers; timestamptz as Date', async (t) => {
  const { db } = await testDatabase(t);
  const sql = db.sql;
  const row = await db.one<{ big: number; n: number; num: number; ts: Date }>(
    'test.types',
    sql`select 9007199254740991::int8 as big, count(*) as n, 12.345::numeric(10,3) as num, now() as ts
        from generate_series(1, 3)`,
  );
  t.same(row, { big: 9007199254740991, n: 3, num: 12.345, ts: row.ts });
  t.ok(row.ts instanceof Date);
});

t.test('transaction commits when the callback returns', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await repos.transaction(async (tx) => {
    const u = await makeUser(tx);
    await makeScript(tx, u.id);
    return u;
  });
  const page = await repos.scriptListings.listPage({ user_id: user.id }, '-created_at', {
    page: 1,
    per_page: 5,
  });
  t.equal(page.total, 1);
});

t.test('transaction rolls back everything when the callback throws', async (t) => {
  const { repos, db } = await testDatabase(t);
  const boom = new Error('boom');
  await t.rejects(
    repos.transaction(async (tx) => {
      const u = await makeUser(tx, { email: 'rollback@example.com' });
      await makeScript(tx, u.id);
      throw boom;
    }),
    boom,
  );
  t.equal(await repos.users.findByEmail('rollback@example.com'), null);
  const sql = db.sql;
  t.same(await db.one('test.count', sql`select count(*) as n from scripts`), { n: 0 });
});

t.test('a nested transaction is a savepoint: its rollback keeps the outer work', async (t) => {
  const { repos } = await testDatabase(t);
  await repos.transaction(async (tx) => {
    await makeUser(tx, { email: 'outer@example.com' });
    await t.rejects(
      tx.transaction(async (inner) => {
        await makeUser(inner, { email: 'inner@example.com' });
        throw new Error('inner fails');
      }),
      { message: 'inner fails' },
    );
    // A database error inside the savepoint is mapped too, and the outer transaction survives it.
    await t.rejects(
      tx.transaction((inner) => makeUser(inner, { email: 'outer@example.com' })),
      ConflictError,
    );
  });
  t.ok(await repos.users.findByEmail('outer@example.com'));
  t.equal(await repos.users.findByEmail('inner@example.com'), null);
});

t.test('a serialization failure reruns the transaction, a bounded number of times', async (t) => {
  const { db } = await testDatabase(t);
  let attempts = 0;
  const result = await db.transaction(async (tx) => {
    attempts++;
    const sql = tx.sql;
    if (attempts < 3)
      await tx.many('test.fail', sql`do $$ begin raise exception 'conflict' using errcode = '40001'; end $$`);
    return 'done';
  });
  t.equal(result, 'done');
  t.equal(attempts, 3);

  let forever = 0;
  await t.rejects(
    db.transaction(
      async (tx) => {
        forever++;
        const sql = tx.sql;
        await tx.many(
          'test.fail',
          sql`do $$ begin raise exception 'conflict' using errcode = '40001'; end $$`,
        );
      },
      { retries: 2 },
    ),
    ConcurrentUpdateError,
  );
  t.equal(forever, 3, 'one run plus two retries');
});

t.test('a real deadlock is detected, retried, and both transactions commit', async (t) => {
  const { db, repos } = await testDatabase(t);
  const a = await makeUser(repos);
  const b = await makeUser(repos);
  let attempts = 0;
  // Each transaction locks one row, waits until the other has its row, then wants the other's.
  let arrived = 0;
  let release: () => void = () => {};
  const bothLocked = new Promise<void>((resolve) => {
    release = resolve;
  });
  const swap = (first: number, second: number) =>
    db.transaction(async (tx) => {
      attempts++;
      const sql = tx.sql;
      await tx.many('test.lock1', sql`update users set is_verified = not is_verified where id = ${first}`);
      if (++arrived === 2) release();
      await bothLocked;
      await tx.many('test.lock2', sql`update users set is_verified = not is_verified where id = ${second}`);
    });
  await Promise.all([swap(a.id, b.id), swap(b.id, a.id)]);
  t.equal(attempts, 3, 'the deadlock victim ran twice');
  const [ua, ub] = [await repos.users.getById(a.id), await repos.users.getById(b.id)];
  t.same([ua.is_verified, ub.is_verified], [false, false], 'each user flipped twice');
});

t.test('PostgreSQL errors become domain errors by SQLSTATE and constraint', async (t) => {
  const { db, repos } = await testDatabase(t);
  const user = await makeUser(repos, { email: 'taken@example.com' });
  await t.rejects(makeUser(repos, { email: 'taken@example.com' }), {
    constructor: ConflictError,
    code: 'EMAIL_TAKEN',
    constraint: 'uq_users_email',
  });
  await rejectsWith(t, makeScript(repos, 999_999), NotFoundError, { resource: 'user' });
  await t.rejects(makeScript(repos, user.id, { file_size: 0 }), {
    constructor: ValidationError,
    errors: [{ path: '/file', message: 'must not be empty' }],
  });
  const sql = db.sql;
  await t.rejects(db.many('test.overflow', sql`select 99999999999::numeric(10,3)`), ValidationError);
  await t.rejects(db.many('test.badint', sql`select 'abc'::int`), ValidationError);
  const script = await makeScript(repos, user.id);
  await t.rejects(
    db.many(
      'test.transition',
      sql`update scripts set status = 'completed', completed_at = now() where id = ${script.id}`,
    ),
    InvalidStateError,
  );
  await t.rejects(db.many('test.syntax', sql`selec 1`), {
    constructor: postgres.PostgresError,
    code: '42601',
  });
});

t.test('an unreachable server is DatabaseUnavailable', async (t) => {
  const sql = await deadPool(t, 'test-unreachable');
  const db = new Database(sql, { log: testLogger(), slowQueryMs: 1000, queryTimeoutMs: 5000 });
  await t.rejects(db.many('test.ping', sql`select 1`), DatabaseUnavailableError);
});

t.test('the client-side time limit ends a query that does not answer', async (t) => {
  const { sql } = await testDatabase(t);
  const db = new Database(sql, { log: testLogger(), slowQueryMs: 10_000, queryTimeoutMs: 300 });
  await t.rejects(db.many('test.sleep', sql`select pg_sleep(5)`), {
    constructor: DatabaseUnavailableError,
    message: /did not answer test.sleep within 300 ms/,
  });
  // The cancel reached the server: the pool's connection is usable again (asked with a patient
  // limit: this checks the connection, not how fast a loaded machine answers).
  const patient = new Database(sql, { log: testLogger(), slowQueryMs: 10_000, queryTimeoutMs: 30_000 });
  t.same(await patient.one('test.after', sql`select 1 as ok`), { ok: 1 });
});

t.test('a frozen server: every query fails at its deadline, though the cancel cannot reach it', async (t) => {
  // Accepts connections and never says a word (not even to the cancel request).
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  const { port } = server.address() as AddressInfo;
  const sql = createPool(
    {
      url: `postgres://postgres@127.0.0.1:${port}/frozen`,
      max: 2,
      idleTimeoutSeconds: 0,
      maxLifetimeSeconds: 0,
      connectTimeoutSeconds: 30,
      statementTimeoutMs: 1000,
      prepare: true,
      applicationName: 'dollarclub-test-frozen',
    },
    testLogger(),
  );
  t.teardown(() => sql.end({ timeout: 0 }));
  const activity = { inFlight: 0 };
  const outcomes: boolean[] = [];
  const db = new Database(sql, {
    log: testLogger(),
    slowQueryMs: 10_000,
    queryTimeoutMs: 300,
    activity,
    onQuery: (_name, _seconds, ok) => outcomes.push(ok),
  });
  // More queries than connections: some wait for a connection that never opens.
  const results = await Promise.allSettled(
    Array.from({ length: 5 }, (_, i) => db.one(`test.frozen${i}`, sql`select ${i}::int as i`)),
  );
  for (const result of results) {
    t.equal(result.status, 'rejected');
    t.type((result as PromiseRejectedResult).reason, DatabaseUnavailableError);
    t.match((result as PromiseRejectedResult).reason.message, /within 300 ms/);
  }
  t.same(outcomes, [false, false, false, false, false], 'a metric per query, as failures');
  t.equal(activity.inFlight, 0, 'none is counted as under way any more');
  await t.rejects(
    db.transaction(async (tx) => tx.one('test.frozenTx', tx.sql`select 1`)),
    DatabaseUnavailableError,
    'a transaction too',
  );
  t.equal(activity.inFlight, 0);
});

t.test('deadlines: queries that answer in time are untouched by those that do not', async (t) => {
  const { sql } = await testDatabase(t, { poolMax: 4 });
  const seen: Array<[string, boolean]> = [];
  const db = new Database(sql, {
    log: testLogger(),
    slowQueryMs: 10_000,
    queryTimeoutMs: 1500,
    onQuery: (name, _seconds, ok) => seen.push([name, ok]),
  });
  const slow = [db.many('test.slow', sql`select pg_sleep(5)`), db.many('test.slow', sql`select pg_sleep(5)`)];
  const fast = Array.from({ length: 20 }, (_, i) => db.one('test.fast', sql`select ${i}::int as i`));
  const settled = await Promise.allSettled([...slow, ...fast]);
  t.same(
    settled.slice(0, 2).map((r) => r.status === 'rejected' && r.reason instanceof DatabaseUnavailableError),
    [true, true],
    'the slow ones end at their limit',
  );
  t.same(
    settled.slice(2).map((r) => (r.status === 'fulfilled' ? r.value : r.reason)),
    Array.from({ length: 20 }, (_, i) => ({ i })),
    'the others answer normally',
  );
  // Past the limit of the fast ones: the shared deadline check never touches a settled query.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  t.same(
    seen.filter(([name]) => name === 'test.fast'),
    Array.from({ length: 20 }, () => ['test.fast', true]),
    'one metric per fast query, ok',
  );
  t.same(
    seen.filter(([name]) => name === 'test.slow'),
    [
      ['test.slow', false],
      ['test.slow', false],
    ],
  );
});

t.test('statement_timeout on the server is DatabaseUnavailable too', async (t) => {
  const { db } = await testDatabase(t);
  await t.rejects(
    db.transaction(async (tx) => {
      const sql = tx.sql;
      await tx.many('test.timeout', sql`set local statement_timeout = 100`);
      await tx.many('test.sleep', sql`select pg_sleep(2)`);
    }),
    DatabaseUnavailableError,
  );
});

t.test('queries are logged at debug with name, SQL and duration; never parameter values', async (t) => {
  const { sql } = await testDatabase(t);
  const { log, lines } = captureLogger('debug');
  const db = new Database(sql, { log, slowQueryMs: 10_000, queryTimeoutMs: 5000 });
  const secret = 'hunter2-secret-value';
  await db.many('test.param', sql`select ${secret}::text as v`);
  const line = lines.find((l) => l.query === 'test.param');
  t.ok(line, 'a line for the query');
  t.equal(line?.level, 20, 'at debug');
  t.equal(line?.sql, 'select $1::text as v');
  t.type(line?.ms, 'number');
  t.notMatch(JSON.stringify(lines), secret);
});

t.test('a query slower than SLOW_QUERY_MS is logged at warn', async (t) => {
  const { sql } = await testDatabase(t);
  const { log, lines } = captureLogger('info');
  // A wide margin on both sides: a loaded machine may slow `select 1` by tens of milliseconds.
  const db = new Database(sql, { log, slowQueryMs: 1000, queryTimeoutMs: 5000 });
  await db.many('test.fast', sql`select 1`);
  await db.many('test.slow', sql`select pg_sleep(1.2)`);
  t.same(
    lines.map((l) => [l.level, l.query]),
    [[40, 'test.slow']],
    'only the slow one, at warn; the fast one is below info',
  );
});

t.test('every query reports its name, duration and outcome to the observer', async (t) => {
  const { sql } = await testDatabase(t);
  const seen: Array<[string, boolean]> = [];
  const db = new Database(sql, {
    log: testLogger(),
    slowQueryMs: 10_000,
    queryTimeoutMs: 5000,
    onQuery: (name, seconds, ok) => {
      t.ok(seconds >= 0);
      seen.push([name, ok]);
    },
  });
  await db.many('test.ok', sql`select 1`);
  await t.rejects(db.many('test.bad', sql`select 1/0`));
  t.same(seen, [
    ['test.ok', true],
    ['test.bad', false],
  ]);
});

t.test('a transaction that ran out of time never commits afterwards', async (t) => {
  const { sql } = await testDatabase(t, { poolMax: 1 });
  const db = new Database(sql, { log: testLogger(), slowQueryMs: 10_000, queryTimeoutMs: 300 });
  const patient = new Database(sql, { log: testLogger(), slowQueryMs: 10_000, queryTimeoutMs: 30_000 });
  const repos = new Repositories(db);
  // 1. Its work is slow (here: the callback itself): the caller gets 503 first, then the
  //    callback's last statement finishes — and the transaction rolls back instead of committing.
  let callbackDone!: () => void;
  const finished = new Promise<void>((resolve) => {
    callbackDone = resolve;
  });
  await t.rejects(
    repos.transaction(async (tx) => {
      await new Promise((resolve) => setTimeout(resolve, 600));
      try {
        return await makeUser(tx, { email: 'late@example.com' });
      } finally {
        callbackDone();
      }
    }),
    DatabaseUnavailableError,
  );
  await finished;
  // 2. It waits for a connection (the only one is busy): it runs later, but sends nothing.
  const busy = patient.many('test.busy', sql`select pg_sleep(1)`);
  await t.rejects(
    repos.transaction((tx) => makeUser(tx, { email: 'queued@example.com' })),
    DatabaseUnavailableError,
  );
  await busy;
  await new Promise((resolve) => setTimeout(resolve, 300));
  const rows = await patient.many<{ email: string }>(
    'test.users',
    sql`select email from users where email in ('late@example.com', 'queued@example.com')`,
  );
  t.same(rows, [], 'neither transaction committed');
});

t.test(
  'one() with no row is an error naming the query; the query itself still counts as answered',
  async (t) => {
    const { sql } = await testDatabase(t);
    const seen: Array<[string, boolean]> = [];
    const db = new Database(sql, {
      log: testLogger(),
      slowQueryMs: 10_000,
      queryTimeoutMs: 30_000,
      onQuery: (name, _seconds, ok) => seen.push([name, ok]),
    });
    await t.rejects(db.one('test.none', sql`select 1 as n where false`), {
      constructor: Error,
      message: 'query test.none returned no row',
    });
    t.equal(await db.maybeOne('test.maybe', sql`select 1 as n where false`), null, 'maybeOne: null');
    t.same(seen, [
      ['test.none', true],
      ['test.maybe', true],
    ]);
  },
);

t.test('a query a replica cannot answer runs again on the primary, tagged or unsafe', async (t) => {
  const { sql: primarySql } = await testDatabase(t);
  const primary = new Database(primarySql, {
    log: testLogger(),
    slowQueryMs: 10_000,
    queryTimeoutMs: 30_000,
  });
  // The "replica": nothing listens on its port, so every query fails as unavailable.
  const replicaSql = await deadPool(t, 'test-replica-down');
  const failures: unknown[] = [];
  const replica = new Database(replicaSql, {
    log: testLogger(),
    slowQueryMs: 10_000,
    queryTimeoutMs: 10_000,
    fallback: { db: primary, failed: (error) => failures.push(error) },
  });
  const name = 'answered by the primary';
  t.same(await replica.one('test.tagged', replicaSql`select ${name}::text as by`), { by: name });
  t.same(
    await replica.many('test.unsafe', replicaSql.unsafe('select $1::int + 1 as n', [41])),
    [{ n: 42 }],
    'an unsafe query is rebuilt with its text and parameters',
  );
  t.equal(failures.length, 2, 'each failure is reported');
  t.type(failures[0], DatabaseUnavailableError);

  // An error of the query itself is the caller's, not a reason to ask the primary.
  const bad = new Database(primarySql, {
    log: testLogger(),
    slowQueryMs: 10_000,
    queryTimeoutMs: 30_000,
    fallback: { db: primary, failed: (error) => failures.push(error) },
  });
  await t.rejects(bad.many('test.syntax', primarySql`selec 1`), { code: '42601' });
  t.equal(failures.length, 2, 'not reported, not run again');
});

/**
 * The server ends a connection while a statement runs on it (pg_terminate_backend; a fast
 * shutdown does the same). The statement under way fails as unavailable (it may have
 * committed: not run again). The driver then hands the server's 57P01, stale, to the next
 * statement sent on that connection once it reconnects, a statement the server never saw:
 * Database runs that one once more, and a transaction again as a whole.
 */
for (const next of ['statement', 'transaction'] as const) {
  t.test(`after the server ended the connection under a statement, the next ${next} succeeds`, async (t) => {
    const { url } = await testDatabase(t);
    const applicationName = `dollarclub-terminated-${next}-${process.pid}`;
    const sql = testPool(t, { url, applicationName });
    const { log, lines } = captureLogger('info');
    const db = new Database(sql, { log, slowQueryMs: 60_000, queryTimeoutMs: 30_000 });
    const admin = postgres(url, { max: 1, onnotice: () => {} });
    t.teardown(() => admin.end());
    const sleeping = db.one('test.sleep', sql`select pg_sleep(5) as slept`);
    const caught = sleeping.catch((error: unknown) => error);
    for (let i = 0; i < 400; i++) {
      const [row] = await admin`
        select count(*)::int as n from pg_stat_activity
        where application_name = ${applicationName} and state = 'active' and query like '%pg_sleep%'`;
      if (row?.n === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    const [killed] = await admin`
      select count(*)::int as n from (
        select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${applicationName}
      ) k`;
    t.equal(killed?.n, 1, 'the pool’s one connection was ended by the server');
    t.type(await caught, DatabaseUnavailableError, 'the statement under way fails as unavailable');
    const answer =
      next === 'statement'
        ? await db.one<{ n: number }>('test.next', sql`select 1 as n`)
        : await db.transaction((tx) => tx.one<{ n: number }>('test.next', tx.sql`select 1 as n`));
    t.same(answer, { n: 1 }, `the next ${next} gets its answer`);
    const retried = lines.filter((l) => /connection ended by the server/.test(l.msg ?? '')).length;
    t.comment(`${retried} retry logged (the driver's stale 57P01: 1 with postgres 3.4.9)`);
  });
}
