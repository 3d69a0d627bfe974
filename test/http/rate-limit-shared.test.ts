/**
 * Rate limits live in PostgreSQL (rate_limits): two app instances over one database
 * (two API processes) allow a limit once between them, not once each.
 */
import t, { type Test } from 'tap';
import { compose } from '../../src/compose.ts';
import { migrationNames } from '../../src/db/migrate.ts';
import { build } from '../../src/http/app.ts';
import { Metrics } from '../../src/metrics.ts';
import { signUp, testApp } from '../helpers/app.ts';
import { testLogger } from '../helpers/db.ts';

const LOGIN = '/api/v1/auth/login';
const REGISTER = '/api/v1/auth/register';

async function twoApps(t: Test) {
  const a = await testApp(t, { AUTH_RATE_LIMIT_MAX: '3', AUTH_RATE_LIMIT_WINDOW_SECONDS: '600' });
  const log = testLogger();
  const composition = compose({
    config: a.config,
    sql: a.database.sql,
    log,
    metrics: new Metrics({ defaultMetrics: false }),
    migrations: await migrationNames(),
  });
  const b = await build({ ctx: composition.ctx, logger: log, activity: composition.activity });
  t.teardown(() => b.close());
  return { a, b };
}

t.test('two API instances share one login limit', async (t) => {
  const { a, b } = await twoApps(t);
  const account = await signUp(a.app);
  const attempt = (app: typeof b) =>
    app.inject({
      method: 'POST',
      url: LOGIN,
      payload: { email: account.user.email, password: 'wrong password' },
    });
  const statuses = [];
  for (const app of [a.app, b, a.app, b, a.app, b]) statuses.push((await attempt(app)).statusCode);
  t.same(statuses, [401, 401, 401, 429, 429, 429], 'three attempts in all, whichever instance answers');
  const limited = await attempt(b);
  t.match(limited.json(), { code: 'RATE_LIMITED' });
  t.ok(Number(limited.headers['retry-after']) > 0, 'Retry-After counts down the shared window');

  const [row] = await a.database.sql`select hits from rate_limits where key like ${'POST %login|%'}`;
  t.equal(row?.hits, 7, 'one row counts every hit');

  // Register has its own counter (one signUp above used one of its three).
  const register = await b.inject({
    method: 'POST',
    url: REGISTER,
    payload: { email: 'second@example.com', username: 'second', password: 'correct horse battery' },
  });
  t.equal(register.statusCode, 201, 'another route is counted apart');

  // The window ends (moved into the past here, instead of waiting): counting starts again.
  await a.database.sql`update rate_limits set expires_at = now() - interval '1 second'`;
  t.equal((await attempt(b)).statusCode, 401, 'a new window allows attempts again');
  const [fresh] = await a.database.sql`select hits from rate_limits where key like ${'POST %login|%'}`;
  t.equal(fresh?.hits, 1);

  await a.database.sql`update rate_limits set expires_at = now() - interval '1 second'`;
  t.equal(await a.repos.rateLimits.prune(), 2, 'maintenance prunes ended windows');
});

t.test('concurrent hits through both instances are each counted once', async (t) => {
  const { a, b } = await twoApps(t);
  const results = await Promise.all(
    Array.from({ length: 12 }, (_, i) =>
      (i % 2 === 0 ? a.app : b).inject({
        method: 'POST',
        url: LOGIN,
        payload: { email: `nobody${i}@example.com`, password: 'wrong password' },
      }),
    ),
  );
  const codes = results.map((r) => r.statusCode).sort();
  t.same(codes, [401, 401, 401, ...Array(9).fill(429)], 'exactly three get through');
  const [row] = await a.database.sql`select hits from rate_limits where key like ${'POST %login|%'}`;
  t.equal(row?.hits, 12);
});
