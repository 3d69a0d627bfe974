import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { compose } from '../../src/compose.ts';
import { migrationNames } from '../../src/db/migrate.ts';
import { build } from '../../src/http/app.ts';
import { Metrics } from '../../src/metrics.ts';
import { listenForAuthChanges } from '../../src/services/auth-listener.ts';
import { signUp, signUpAdmin, testApp } from '../helpers/app.ts';
import { testLogger } from '../helpers/db.ts';

const REGISTER = '/api/v1/auth/register';
const LOGIN = '/api/v1/auth/login';
const LOGOUT = '/api/v1/auth/logout';
const ME = '/api/v1/me';

const TOKEN_PATTERN = /^dc_[A-Za-z0-9_-]{43}$/;

const PUBLIC_USER_FIELDS = [
  'auth_provider',
  'created_at',
  'email',
  'ibkr_connected_at',
  'ibkr_user_id',
  'id',
  'is_active',
  'is_ibkr_connected',
  'is_verified',
  'last_login_at',
  'role',
  'updated_at',
  'username',
];

function bearer(token: string) {
  return { authorization: `Bearer ${token}` };
}

t.test('register answers 201 with the user and a token; the email is trimmed and lower-cased', async (t) => {
  const { app, database } = await testApp(t);
  const res = await app.inject({
    method: 'POST',
    url: REGISTER,
    payload: { email: '  Alice@Example.COM ', username: 'alice', password: 'correct horse battery' },
  });
  t.equal(res.statusCode, 201);
  t.match(res.headers['content-type'], /^application\/json/);
  const body = res.json();
  t.same(Object.keys(body).sort(), ['token', 'user']);
  t.equal(body.user.email, 'alice@example.com');
  t.match(body.user, {
    username: 'alice',
    auth_provider: 'email',
    role: 'user',
    is_active: true,
    is_verified: false,
    is_ibkr_connected: false,
    ibkr_user_id: null,
    ibkr_connected_at: null,
    last_login_at: null,
  });
  t.match(body.user.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, 'ISO 8601 in UTC');
  t.same(Object.keys(body.user).sort(), PUBLIC_USER_FIELDS, 'no hashed_password, no token field');
  t.notMatch(res.body, /argon2|hashed_password|ibkr_access_token|ibkr_refresh_token/);
  t.match(body.token, TOKEN_PATTERN, 'an opaque dc_ token of 32 random bytes');
  const [row] = await database.sql`select email, hashed_password from users where id = ${body.user.id}`;
  t.equal(row?.email, 'alice@example.com');
  t.match(row?.hashed_password, /^\$argon2id\$/, 'the password is stored as an argon2id hash');

  const me = await app.inject({ method: 'GET', url: ME, headers: bearer(body.token) });
  t.equal(me.statusCode, 200, 'the token signs the new user in');
  t.equal(me.json().id, body.user.id);
});

t.test('register hands out a different token every time', async (t) => {
  const { app } = await testApp(t);
  const a = await signUp(app);
  const b = await signUp(app);
  t.not(a.token, b.token);
  const login = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: a.user.email, password: a.password },
  });
  t.not(login.json().token, a.token, 'a login issues a new token');
});

t.test('register refuses a registered email in any case with 409 EMAIL_TAKEN', async (t) => {
  const { app, database } = await testApp(t);
  await signUp(app, { email: 'bob@example.com' });
  for (const email of ['bob@example.com', 'BOB@Example.com', '  Bob@EXAMPLE.COM  ']) {
    const res = await app.inject({
      method: 'POST',
      url: REGISTER,
      payload: { email, username: 'bob_two', password: 'another password' },
    });
    t.equal(res.statusCode, 409, email);
    t.match(res.headers['content-type'], /^application\/problem\+json/);
    t.match(res.json(), { status: 409, code: 'EMAIL_TAKEN', title: 'Conflict' });
  }
  const [row] = await database.sql`select count(*)::int as n from users`;
  t.equal(row?.n, 1, 'no second account');
});

t.test('concurrent registrations of one email: exactly one wins, the others get 409', async (t) => {
  const { app, database } = await testApp(t);
  const emails = [
    'race@example.com',
    'RACE@example.com',
    'Race@Example.com',
    ' race@example.com',
    'race@EXAMPLE.COM',
  ];
  const answers = await Promise.all(
    emails.map((email, i) =>
      app.inject({
        method: 'POST',
        url: REGISTER,
        payload: { email, username: `racer_${i}`, password: 'correct horse battery' },
      }),
    ),
  );
  const statuses = answers.map((r) => r.statusCode).sort();
  t.same(statuses, [201, 409, 409, 409, 409]);
  for (const res of answers.filter((r) => r.statusCode === 409)) t.equal(res.json().code, 'EMAIL_TAKEN');
  const [row] = await database.sql`select count(*)::int as n from users where email = 'race@example.com'`;
  t.equal(row?.n, 1);
  const [tokens] = await database.sql`select count(*)::int as n from api_tokens`;
  t.equal(tokens?.n, 1, 'the losers left no token behind');
});

t.test('register answers 400 VALIDATION_FAILED naming the field of a bad value', async (t) => {
  const { app, database } = await testApp(t);
  const good = { email: 'carol@example.com', username: 'carol', password: 'correct horse battery' };
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['an email without @', { email: 'not-an-email' }, 'email'],
    ['an email with a space inside', { email: 'carol smith@example.com' }, 'email'],
    ['a blank email', { email: '     ' }, 'email'],
    ['a missing email', { email: undefined }, 'email'],
    ['a username with a space', { username: 'a b c' }, 'username'],
    ['a too short username', { username: 'ab' }, 'username'],
    ['a too long username', { username: 'x'.repeat(101) }, 'username'],
    ['a username with punctuation', { username: 'carol!' }, 'username'],
    ['a password of 7 characters', { password: '1234567' }, 'password'],
    ['a password of 257 characters', { password: 'p'.repeat(257) }, 'password'],
    ['a password of 2000 characters', { password: 'p'.repeat(2000) }, 'password'],
    ['a password that is an object', { password: { value: 'correct horse battery' } }, 'password'],
    ['a username that is null', { username: null }, 'username'],
  ];
  for (const [label, change, field] of cases) {
    const res = await app.inject({ method: 'POST', url: REGISTER, payload: { ...good, ...change } });
    t.equal(res.statusCode, 400, label);
    t.match(res.headers['content-type'], /^application\/problem\+json/, label);
    const body = res.json();
    t.match(body, { status: 400, code: 'VALIDATION_FAILED', title: 'Bad Request' }, label);
    t.ok(Array.isArray(body.errors) && body.errors.length > 0, `${label}: errors are listed`);
    t.ok(
      body.errors.some((e: { path: string }) => e.path.endsWith(`/${field}`)),
      `${label}: an error names /${field} (${JSON.stringify(body.errors)})`,
    );
  }
  const [row] = await database.sql`select count(*)::int as n from users`;
  t.equal(row?.n, 0, 'nobody was created');
});

t.test('register accepts passwords of exactly 8 and 256 characters', async (t) => {
  const { app } = await testApp(t);
  for (const password of ['p'.repeat(8), 'p'.repeat(256), '🔑'.repeat(8)]) {
    const res = await app.inject({
      method: 'POST',
      url: REGISTER,
      payload: { email: `pw${password.length}@example.com`, username: `pw_${password.length}`, password },
    });
    t.equal(res.statusCode, 201, `${[...password].length} characters`);
  }
});

t.test('register refuses unknown body properties with 400 and creates nobody', async (t) => {
  const { app, database } = await testApp(t);
  const extras: Array<Record<string, unknown>> = [
    { role: 'admin' },
    { is_active: false },
    { hashed_password: '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA' },
    { is_verified: true },
    { id: 1 },
  ];
  for (const extra of extras) {
    const [name] = Object.keys(extra);
    const res = await app.inject({
      method: 'POST',
      url: REGISTER,
      payload: {
        email: 'mallory@example.com',
        username: 'mallory',
        password: 'correct horse battery',
        ...extra,
      },
    });
    t.equal(res.statusCode, 400, `${name} is refused`);
    t.match(res.json(), { code: 'VALIDATION_FAILED' });
    t.ok(
      res.json().errors.some((e: { path: string }) => e.path.endsWith(`/${name}`)),
      `the error names ${name}`,
    );
  }
  const [row] = await database.sql`select count(*)::int as n from users`;
  t.equal(row?.n, 0, 'no user was created');
});

t.test('register refuses a body that is not JSON or not an object with 400', async (t) => {
  const { app } = await testApp(t);
  const broken = await app.inject({
    method: 'POST',
    url: REGISTER,
    headers: { 'content-type': 'application/json' },
    payload: '{"email": ',
  });
  t.equal(broken.statusCode, 400);
  t.match(broken.headers['content-type'], /^application\/problem\+json/);
  const array = await app.inject({ method: 'POST', url: REGISTER, payload: [1, 2] });
  t.equal(array.statusCode, 400);
  const proto = await app.inject({
    method: 'POST',
    url: REGISTER,
    headers: { 'content-type': 'application/json' },
    payload: '{"email":"x@example.com","username":"xxx","password":"12345678","__proto__":{"role":"admin"}}',
  });
  t.equal(proto.statusCode, 400, 'prototype poisoning is refused');
});

t.test('login answers 200 with the user and a new token, and records last_login_at', async (t) => {
  const { app, database } = await testApp(t);
  const account = await signUp(app, { email: 'dave@example.com' });
  t.equal(account.user.last_login_at, null);
  const res = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: '  DAVE@example.com', password: account.password },
  });
  t.equal(res.statusCode, 200);
  const body = res.json();
  t.same(Object.keys(body).sort(), ['token', 'user']);
  t.equal(body.user.id, account.user.id);
  t.same(Object.keys(body.user).sort(), PUBLIC_USER_FIELDS);
  t.match(body.token, TOKEN_PATTERN);
  t.type(body.user.last_login_at, 'string', 'the answer carries last_login_at');
  const [row] = await database.sql`select last_login_at from users where id = ${account.user.id}`;
  const lastLogin = row?.last_login_at as unknown;
  t.ok(lastLogin instanceof Date, 'the row has last_login_at');
  t.equal(lastLogin instanceof Date ? lastLogin.toISOString() : lastLogin, body.user.last_login_at);
  const me = await app.inject({ method: 'GET', url: ME, headers: bearer(body.token) });
  t.equal(me.statusCode, 200, 'the new token works');
  const old = await app.inject({ method: 'GET', url: ME, headers: account.headers });
  t.equal(old.statusCode, 200, 'and the token from register still does');
});

t.test('login answers the same 401 for an unknown email and a wrong password', async (t) => {
  const { app, database } = await testApp(t);
  const account = await signUp(app, { email: 'erin@example.com' });
  const unknown = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: 'nobody@example.com', password: account.password },
  });
  const wrong = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: 'erin@example.com', password: 'not the password' },
  });
  for (const res of [unknown, wrong]) {
    t.equal(res.statusCode, 401);
    t.equal(res.headers['www-authenticate'], 'Bearer');
    t.match(res.headers['content-type'], /^application\/problem\+json/);
    t.match(res.json(), { status: 401, code: 'UNAUTHENTICATED' });
  }
  const pick = (b: Record<string, unknown>) => ({
    type: b.type,
    title: b.title,
    status: b.status,
    code: b.code,
    detail: b.detail,
  });
  t.same(pick(unknown.json()), pick(wrong.json()), 'nothing tells the two apart');
  const [row] = await database.sql`select last_login_at from users where id = ${account.user.id}`;
  t.equal(row?.last_login_at, null, 'a failed login records nothing');
});

t.test('login refuses a missing field or an unknown property with 400', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  const missing = await app.inject({ method: 'POST', url: LOGIN, payload: { email: account.user.email } });
  t.equal(missing.statusCode, 400);
  t.match(missing.json(), { code: 'VALIDATION_FAILED', errors: [{ path: /\/password$/ }] });
  const extra = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: account.user.email, password: account.password, role: 'admin' },
  });
  t.equal(extra.statusCode, 400);
  t.match(extra.json(), { code: 'VALIDATION_FAILED', errors: [{ path: /\/role$/ }] });
});

t.test('login answers 403 to a deactivated user once the password is right', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const admin = await signUpAdmin(test);
  const account = await signUp(app);
  const patch = await app.inject({
    method: 'PATCH',
    url: `/api/v1/users/${account.user.id}`,
    headers: admin.headers,
    payload: { is_active: false },
  });
  t.equal(patch.statusCode, 200);
  t.equal(patch.json().is_active, false);
  const res = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: account.user.email, password: account.password },
  });
  t.equal(res.statusCode, 403);
  t.match(res.headers['content-type'], /^application\/problem\+json/);
  t.match(res.json(), { status: 403, title: 'Forbidden', code: 'ACCOUNT_INACTIVE' });
  t.notOk(res.json().token, 'no token');
  const wrong = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: account.user.email, password: 'not the password' },
  });
  t.equal(wrong.statusCode, 401, 'a wrong password still gets the 401 that reveals nothing');
  const [row] = await test.database.sql`
    select count(*)::int as n from api_tokens where user_id = ${account.user.id}
  `;
  t.equal(row?.n, 1, 'only the token from register exists');
});

t.test('login answers 429 with Retry-After after AUTH_RATE_LIMIT_MAX attempts', async (t) => {
  const { app } = await testApp(t, { AUTH_RATE_LIMIT_MAX: '3', AUTH_RATE_LIMIT_WINDOW_SECONDS: '600' });
  const account = await signUp(app);
  for (let i = 1; i <= 3; i++) {
    const res = await app.inject({
      method: 'POST',
      url: LOGIN,
      payload: { email: account.user.email, password: 'wrong password' },
    });
    t.equal(res.statusCode, 401, `attempt ${i} is answered`);
  }
  const limited = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: account.user.email, password: account.password },
  });
  t.equal(limited.statusCode, 429, 'even the right password is refused now');
  t.ok(limited.headers['retry-after'], 'Retry-After is set');
  t.ok(Number(limited.headers['retry-after']) > 0, 'Retry-After is a number of seconds');
  t.match(limited.headers['content-type'], /^application\/problem\+json/);
  t.match(limited.json(), { status: 429, title: 'Too Many Requests', code: 'RATE_LIMITED' });
  t.notOk(limited.json().token);
});

t.test('register is rate limited as well', async (t) => {
  const { app } = await testApp(t, { AUTH_RATE_LIMIT_MAX: '2', AUTH_RATE_LIMIT_WINDOW_SECONDS: '600' });
  await signUp(app);
  await signUp(app);
  const res = await app.inject({
    method: 'POST',
    url: REGISTER,
    payload: { email: 'third@example.com', username: 'third', password: 'correct horse battery' },
  });
  t.equal(res.statusCode, 429);
  t.ok(res.headers['retry-after']);
  t.match(res.json(), { code: 'RATE_LIMITED' });
});

t.test('logout answers 204 and the same token is then refused with 401', async (t) => {
  const { app, database } = await testApp(t);
  const account = await signUp(app);
  const before = await app.inject({ method: 'GET', url: ME, headers: account.headers });
  t.equal(before.statusCode, 200, 'the token works (and is now cached)');
  const res = await app.inject({ method: 'POST', url: LOGOUT, headers: account.headers });
  t.equal(res.statusCode, 204);
  t.equal(res.body, '');
  const after = await app.inject({ method: 'GET', url: ME, headers: account.headers });
  t.equal(after.statusCode, 401);
  t.equal(after.headers['www-authenticate'], 'Bearer');
  t.match(after.json(), { code: 'UNAUTHENTICATED' });
  const [row] = await database.sql`select revoked_at from api_tokens where user_id = ${account.user.id}`;
  t.ok(row?.revoked_at instanceof Date, 'the token row is marked revoked');
});

t.test('logout revokes only the token in use', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  const login = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: account.user.email, password: account.password },
  });
  const second = login.json().token as string;
  t.equal((await app.inject({ method: 'POST', url: LOGOUT, headers: account.headers })).statusCode, 204);
  t.equal((await app.inject({ method: 'GET', url: ME, headers: bearer(second) })).statusCode, 200);
});

t.test('logging out twice: the second logout is 401', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  const first = await app.inject({ method: 'POST', url: LOGOUT, headers: account.headers });
  t.equal(first.statusCode, 204);
  const second = await app.inject({ method: 'POST', url: LOGOUT, headers: account.headers });
  t.equal(second.statusCode, 401);
  t.match(second.json(), { code: 'UNAUTHENTICATED' });
});

t.test('logout without a token is 401', async (t) => {
  const { app } = await testApp(t);
  const res = await app.inject({ method: 'POST', url: LOGOUT });
  t.equal(res.statusCode, 401);
  t.equal(res.headers['www-authenticate'], 'Bearer');
});

t.test('a missing or malformed Authorization header is 401 problem+json', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  const changed = account.token.slice(0, -1) + (account.token.endsWith('A') ? 'B' : 'A');
  const headers: Array<[string, Record<string, string>]> = [
    ['no header', {}],
    ['an empty header', { authorization: '' }],
    ['Bearer and nothing', { authorization: 'Bearer ' }],
    ['the token without Bearer', { authorization: account.token }],
    ['another scheme', { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }],
    ['Token scheme', { authorization: `Token ${account.token}` }],
    ['a garbage token', { authorization: 'Bearer garbage' }],
    ['two tokens', { authorization: `Bearer ${account.token} ${account.token}` }],
    ['the token with one character changed', { authorization: `Bearer ${changed}` }],
    ['a well-formed token nobody was given', { authorization: `Bearer dc_${'A'.repeat(43)}` }],
    ['a token one character too long', { authorization: `Bearer ${account.token}x` }],
  ];
  for (const [label, h] of headers) {
    const res = await app.inject({ method: 'GET', url: ME, headers: h });
    t.equal(res.statusCode, 401, label);
    t.equal(res.headers['www-authenticate'], 'Bearer', label);
    t.match(res.headers['content-type'], /^application\/problem\+json/, label);
    t.match(res.json(), { type: /\S/, title: 'Unauthorized', status: 401, code: 'UNAUTHENTICATED' }, label);
  }
  const ok = await app.inject({
    method: 'GET',
    url: ME,
    headers: { authorization: `bearer ${account.token}` },
  });
  t.equal(ok.statusCode, 200, 'the scheme is case-insensitive (RFC 9110)');
});

t.test('an expired token is 401', async (t) => {
  const { app, database } = await testApp(t, { AUTH_CACHE_TTL_SECONDS: '0' });
  const account = await signUp(app);
  t.equal((await app.inject({ method: 'GET', url: ME, headers: account.headers })).statusCode, 200);
  await database.sql`
    update api_tokens
    set created_at = now() - interval '2 hours', expires_at = now() - interval '1 second'
    where user_id = ${account.user.id}
  `;
  const res = await app.inject({ method: 'GET', url: ME, headers: account.headers });
  t.equal(res.statusCode, 401);
  t.equal(res.headers['www-authenticate'], 'Bearer');
  t.match(res.json(), { code: 'UNAUTHENTICATED' });
});

t.test('a lookup that fails with no error at all still stops the request before its handler', async (t) => {
  const { app, ctx } = await testApp(t, { AUTH_CACHE_TTL_SECONDS: '0' });
  const account = await signUp(app);
  let handled = false;
  ctx.auth.authenticate = () => Promise.reject(undefined);
  const users = ctx.users;
  const get = users.get.bind(users);
  users.get = (...args) => {
    handled = true;
    return get(...args);
  };
  const res = await app.inject({ method: 'GET', url: ME, headers: account.headers });
  t.equal(res.statusCode, 500, 'an error of the server, not an answer without a caller');
  t.match(res.json(), { code: 'INTERNAL' });
  t.notOk(handled, 'the route never ran');
});

t.test('a token expires after TOKEN_TTL_HOURS', async (t) => {
  const { app, database } = await testApp(t, { TOKEN_TTL_HOURS: '2' });
  const account = await signUp(app);
  const [row] = await database.sql`
    select extract(epoch from expires_at - created_at)::float8 as seconds
    from api_tokens where user_id = ${account.user.id}
  `;
  t.ok(Math.abs((row?.seconds as number) - 2 * 3600) < 60, `expires about 2 hours later (${row?.seconds}s)`);
});

t.test('the database keeps only a 32-byte SHA-256 of a token, never the token', async (t) => {
  const { app, database } = await testApp(t);
  const account = await signUp(app);
  const rows = await database.sql`select token_hash from api_tokens where user_id = ${account.user.id}`;
  t.equal(rows.length, 1);
  const hash = rows[0]?.token_hash as Buffer;
  t.ok(Buffer.isBuffer(hash));
  t.equal(hash.length, 32);
  t.not(hash.toString('utf8'), account.token);
  t.notOk(hash.equals(Buffer.from(account.token)), 'not the token bytes');
  t.ok(hash.equals(createHash('sha256').update(account.token).digest()), 'its SHA-256');
  const [found] = await database.sql`
    select count(*)::int as n from api_tokens
    where position(convert_to(${account.token}, 'UTF8') in token_hash) > 0
  `;
  t.equal(found?.n, 0, 'the token appears nowhere in the table');
});

t.test("a deactivated user's tokens stop working at once, cached or not", async (t) => {
  const test = await testApp(t);
  const { app, cache } = test;
  const admin = await signUpAdmin(test);
  const account = await signUp(app);
  t.equal((await app.inject({ method: 'GET', url: ME, headers: account.headers })).statusCode, 200);
  t.ok(cache.size > 0, 'the token was cached');
  const patch = await app.inject({
    method: 'PATCH',
    url: `/api/v1/users/${account.user.id}`,
    headers: admin.headers,
    payload: { is_active: false },
  });
  t.equal(patch.statusCode, 200);
  const res = await app.inject({ method: 'GET', url: ME, headers: account.headers });
  t.equal(res.statusCode, 401, 'refused on the very next request');
  t.match(res.json(), { code: 'UNAUTHENTICATED' });
  const admins = await app.inject({ method: 'GET', url: ME, headers: admin.headers });
  t.equal(admins.statusCode, 200, "other users' tokens are unaffected");

  const reactivate = await app.inject({
    method: 'PATCH',
    url: `/api/v1/users/${account.user.id}`,
    headers: admin.headers,
    payload: { is_active: true },
  });
  t.equal(reactivate.statusCode, 200);
  const again = await app.inject({ method: 'GET', url: ME, headers: account.headers });
  t.equal(again.statusCode, 200, 'a reactivated user signs in with the same token');
});

t.test('a demoted admin loses admin routes at once', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const root = await signUpAdmin(test);
  const other = await signUpAdmin(test);
  t.equal(
    (await app.inject({ method: 'GET', url: '/api/v1/users', headers: other.headers })).statusCode,
    200,
  );
  const patch = await app.inject({
    method: 'PATCH',
    url: `/api/v1/users/${other.user.id}`,
    headers: root.headers,
    payload: { role: 'user' },
  });
  t.equal(patch.statusCode, 200);
  const res = await app.inject({ method: 'GET', url: '/api/v1/users', headers: other.headers });
  t.equal(res.statusCode, 401, 'the role change ended its sessions');
  const login = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: other.user.email, password: other.password },
  });
  const again = await app.inject({
    method: 'GET',
    url: '/api/v1/users',
    headers: { authorization: `Bearer ${login.json().token}` },
  });
  t.equal(again.statusCode, 403);
  t.match(again.json(), { code: 'FORBIDDEN' });
});

t.test(
  'a token revoked through another process is refused there once the notification arrives',
  async (t) => {
    const a = await testApp(t);
    const log = testLogger();
    const composition = compose({
      config: a.config,
      sql: a.database.sql,
      log,
      metrics: new Metrics({ defaultMetrics: false }),
      migrations: await migrationNames(),
    });
    const appB = await build({ ctx: composition.ctx, logger: log, activity: composition.activity });
    t.teardown(() => appB.close());
    const listener = await listenForAuthChanges(a.database.sql, composition.cache, log);
    t.teardown(() => listener.unlisten());

    const account = await signUp(a.app);
    const first = await appB.inject({ method: 'GET', url: ME, headers: account.headers });
    t.equal(first.statusCode, 200, 'app B accepts the token');
    t.equal(composition.cache.size, 1, 'and caches it');

    const logout = await a.app.inject({ method: 'POST', url: LOGOUT, headers: account.headers });
    t.equal(logout.statusCode, 204, 'revoked through app A');

    let status = 0;
    for (let i = 0; i < 50; i++) {
      status = (await appB.inject({ method: 'GET', url: ME, headers: account.headers })).statusCode;
      if (status === 401) break;
      await sleep(100);
    }
    t.equal(status, 401, 'app B refuses the token');
    t.equal(composition.cache.size, 0, "app B's cache no longer holds it");
  },
);

t.test(
  'a user deactivated through another process is refused there once the notification arrives',
  async (t) => {
    const a = await testApp(t);
    const log = testLogger();
    const composition = compose({
      config: a.config,
      sql: a.database.sql,
      log,
      metrics: new Metrics({ defaultMetrics: false }),
      migrations: await migrationNames(),
    });
    const appB = await build({ ctx: composition.ctx, logger: log, activity: composition.activity });
    t.teardown(() => appB.close());
    const listener = await listenForAuthChanges(a.database.sql, composition.cache, log);
    t.teardown(() => listener.unlisten());

    const account = await signUp(a.app);
    t.equal((await appB.inject({ method: 'GET', url: ME, headers: account.headers })).statusCode, 200);
    // A change made by hand, outside any app, counts too.
    await a.database.sql`update users set is_active = false where id = ${account.user.id}`;

    let status = 0;
    for (let i = 0; i < 50; i++) {
      status = (await appB.inject({ method: 'GET', url: ME, headers: account.headers })).statusCode;
      if (status === 401) break;
      await sleep(100);
    }
    t.equal(status, 401);
  },
);
