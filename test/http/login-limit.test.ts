/**
 * Guessing passwords (issue 7, item 4): the per-address limit sees the client behind
 * a trusted proxy and not an address the client wrote into X-Forwarded-For, and the
 * per-account limit (in PostgreSQL) holds however the attempts are spread.
 */
import t from 'tap';
import { trustProxyOf } from '../../src/config.ts';
import { signUp, testApp } from '../helpers/app.ts';

const LOGIN = '/api/v1/auth/login';

t.test('behind TRUST_PROXY=1 a client cannot pick its address with X-Forwarded-For', async (t) => {
  const env = { TRUST_PROXY: '1', AUTH_RATE_LIMIT_MAX: '3', AUTH_RATE_LIMIT_WINDOW_SECONDS: '600' };
  const { app, config } = await testApp(t, env, { trustProxy: trustProxyOf(env.TRUST_PROXY) });
  t.equal(config.TRUST_PROXY, '1');
  const statuses: number[] = [];
  for (let i = 0; i < 5; i++) {
    const res = await app.inject({
      method: 'POST',
      url: LOGIN,
      // What the client sent first, then what the one proxy appended: the client's real address.
      headers: { 'x-forwarded-for': `198.51.100.${i}, 203.0.113.7` },
      remoteAddress: '10.0.0.2',
      payload: { email: `nobody${i}@example.com`, password: 'wrong password' },
    });
    statuses.push(res.statusCode);
  }
  t.same(statuses, [401, 401, 401, 429, 429], 'the fourth attempt from 203.0.113.7 is limited');

  const other = await app.inject({
    method: 'POST',
    url: LOGIN,
    headers: { 'x-forwarded-for': '203.0.113.8' },
    remoteAddress: '10.0.0.2',
    payload: { email: 'nobody@example.com', password: 'wrong password' },
  });
  t.equal(other.statusCode, 401, 'another client behind the same proxy is not');
});

t.test('a proxy list trusts only those addresses', async (t) => {
  const env = { TRUST_PROXY: '10.0.0.0/8', AUTH_RATE_LIMIT_MAX: '2', AUTH_RATE_LIMIT_WINDOW_SECONDS: '600' };
  const { app } = await testApp(t, env, { trustProxy: trustProxyOf(env.TRUST_PROXY) });
  const statuses: number[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({
      method: 'POST',
      url: LOGIN,
      headers: { 'x-forwarded-for': `198.51.100.${i}` },
      // Not a trusted proxy: its X-Forwarded-For is ignored, the peer is the client.
      remoteAddress: '192.0.2.50',
      payload: { email: `x${i}@example.com`, password: 'wrong password' },
    });
    statuses.push(res.statusCode);
  }
  t.same(statuses, [401, 401, 429]);
});

t.test('failed sign-ins lock the account for every address; success resets the count', async (t) => {
  const { app, database } = await testApp(t, { LOGIN_MAX_FAILURES: '3', LOGIN_LOCK_SECONDS: '600' });
  const victim = await signUp(app);
  const bystander = await signUp(app);
  const attempt = (email: string, password: string, i: number) =>
    app.inject({
      method: 'POST',
      url: LOGIN,
      remoteAddress: `192.0.2.${i}`, // a different address every time
      payload: { email, password },
    });
  for (let i = 0; i < 3; i++)
    t.equal((await attempt(victim.user.email, 'wrong password', i)).statusCode, 401, `guess ${i + 1}`);

  const locked = await attempt(victim.user.email.toUpperCase(), victim.password, 10);
  t.equal(locked.statusCode, 429, 'locked, even with the right password, in any case');
  t.match(locked.headers['content-type'], /^application\/problem\+json/);
  t.match(locked.json(), { status: 429, code: 'TOO_MANY_LOGIN_ATTEMPTS' });
  const retryAfter = Number(locked.headers['retry-after']);
  t.ok(retryAfter >= 1 && retryAfter <= 600, `Retry-After ${retryAfter}`);
  t.notMatch(locked.body, /token/);

  t.equal((await attempt(bystander.user.email, bystander.password, 11)).statusCode, 200, 'others are not');
  for (let i = 0; i < 3; i++) await attempt('nobody@example.com', 'wrong password', 20 + i);
  t.equal(
    (await attempt('nobody@example.com', 'wrong password', 30)).json().code,
    'TOO_MANY_LOGIN_ATTEMPTS',
    'an unknown email locks the same way (no hint of which emails exist)',
  );

  // The lock ends (moved into the past rather than waited for).
  await database.sql`
    update login_attempts set locked_until = now() - interval '1 second', window_started_at = now() - interval '1 hour'
    where email = ${victim.user.email}
  `;
  t.equal((await attempt(victim.user.email, 'wrong password', 40)).statusCode, 401, 'a fresh count');
  t.equal((await attempt(victim.user.email, 'wrong password', 41)).statusCode, 401);
  t.equal((await attempt(victim.user.email, victim.password, 42)).statusCode, 200, 'within the limit');
  const rows = await database.sql`select 1 from login_attempts where email = ${victim.user.email}`;
  t.equal(rows.length, 0, 'a successful sign-in clears the count');
  for (let i = 0; i < 3; i++)
    t.equal(
      (await attempt(victim.user.email, 'wrong password', 50 + i)).statusCode,
      401,
      'three more allowed',
    );
});

t.test('parallel guesses cannot all pass the check: exactly the limit is tried', async (t) => {
  const { app, database } = await testApp(t, { LOGIN_MAX_FAILURES: '3' });
  const victim = await signUp(app);
  const answers = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      app.inject({
        method: 'POST',
        url: LOGIN,
        remoteAddress: `198.51.100.${i}`,
        payload: { email: victim.user.email, password: `guess number ${i}` },
      }),
    ),
  );
  const statuses = answers.map((r) => r.statusCode).sort();
  t.same(statuses, [...Array(3).fill(401), ...Array(17).fill(429)]);
  const [row] =
    await database.sql`select failures::int as failures, locked_until > now() as locked from login_attempts`;
  t.same(row, { failures: 4, locked: true });
});
