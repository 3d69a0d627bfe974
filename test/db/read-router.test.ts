/**
 * ReadRouter when a server is not what it should be, without a real replica (those
 * cases are test/db/replica.test.ts's): a "replica" that is a primary, and a primary
 * that does not answer. Either way reads stay on the primary and the router logs why.
 */
import t from 'tap';
import { Database } from '../../src/db/database.ts';
import { ReadRouter } from '../../src/db/read-router.ts';
import { deadPool, testDatabase, testLogger } from '../helpers/db.ts';
import { captureLogger } from '../helpers/log-capture.ts';

t.test('a replica URL that points at a primary is down: reads stay on the primary', async (t) => {
  const { db } = await testDatabase(t);
  const { log, lines } = captureLogger('info');
  const replica = new Database(db.sql, db.options);
  const router = new ReadRouter({ primary: db, replica, maxLagSeconds: 5, log });
  t.same(await router.probe(), { state: 'down', lag_seconds: null, max_lag_seconds: 5 });
  t.equal(router.reader(), db, 'the primary answers reads');
  t.match(lines, [{ msg: 'read replica unreachable: reading from the primary' }]);
  t.match(
    String((lines[0]?.err as { message?: string } | undefined)?.message),
    /is not a replica/,
    'the log says why',
  );
});

t.test(
  'a primary that does not answer: the probe measures nothing, a write’s position is unknown',
  async (t) => {
    const { db: replica } = await testDatabase(t);
    const deadSql = await deadPool(t, 'test-primary-down');
    const primary = new Database(deadSql, { log: testLogger(), slowQueryMs: 10_000, queryTimeoutMs: 5000 });
    const { log, lines } = captureLogger('debug');
    const router = new ReadRouter({ primary, replica, maxLagSeconds: 5, log });

    t.same(
      await router.probe(),
      { state: 'unknown', lag_seconds: null, max_lag_seconds: 5 },
      'nothing measured',
    );
    t.match(lines.at(-1), { msg: 'replica probe: the primary did not answer' });

    await router.wrote({ userId: 7, writes: true });
    t.match(lines.at(-1), { msg: 'read-your-writes: no write position; the user reads from the primary' });
    t.equal(router.reader(), primary);
  },
);
