/**
 * POST /auth/google and GET /auth/providers over a key server on 127.0.0.1:
 * sign-up and sign-in by Google account (never by email), every bad token a 401
 * without a session, the key server down or slow a 503.
 */
import t, { type Test } from 'tap';
import { signUp, testApp } from '../helpers/app.ts';
import { assertSessionCookies } from '../helpers/cookies.ts';
import {
  CLIENT_ID,
  deadUrl,
  forgedIdTokens,
  idToken,
  jwksServer,
  makeKey,
  newGoogleUser,
} from '../helpers/google.ts';

const GOOGLE = '/api/v1/auth/google';
const PROVIDERS = '/api/v1/auth/providers';

const [keyA, stranger] = await Promise.all([makeKey('key-a'), makeKey('key-x')]);

async function googleApp(t: Test, env: Record<string, string> = {}) {
  const server = await jwksServer(t, [keyA]);
  const app = await testApp(t, {
    GOOGLE_CLIENT_ID: CLIENT_ID,
    GOOGLE_JWKS_URL: server.url,
    GOOGLE_JWKS_TIMEOUT_MS: '30000',
    ...env,
  });
  return { ...app, server };
}

async function tokenCount(database: { sql: (strings: TemplateStringsArray) => Promise<unknown[]> }) {
  const [row] = (await database.sql`select count(*)::int as n from api_tokens`) as Array<{ n: number }>;
  return row!.n;
}

t.test('providers: google is null without GOOGLE_CLIENT_ID, and sign-in is 404', async (t) => {
  const { app } = await testApp(t);
  const res = await app.inject(PROVIDERS);
  t.equal(res.statusCode, 200);
  t.same(res.json(), { email: true, google: null });
  const google = await app.inject({ method: 'POST', url: GOOGLE, payload: { id_token: 'anything' } });
  t.equal(google.statusCode, 404);
  t.match(google.headers['content-type'], /^application\/problem\+json/);
  t.equal(google.json().code, 'NOT_FOUND');
});

t.test('with GOOGLE_CLIENT_ID', async (t) => {
  const { app, database, server, repos, cache } = await googleApp(t);

  await t.test('providers names the client id', async (t) => {
    t.same((await app.inject(PROVIDERS)).json(), { email: true, google: { client_id: CLIENT_ID } });
  });

  await t.test(
    'the first sign-in creates a verified Google user (201), the next signs it in (200)',
    async (t) => {
      const person = newGoogleUser();
      const first = await app.inject({
        method: 'POST',
        url: GOOGLE,
        payload: {
          id_token: await idToken({ key: keyA, claims: { ...person, email: person.email.toUpperCase() } }),
        },
      });
      t.equal(first.statusCode, 201, first.body);
      const created = first.json();
      t.same(Object.keys(created).sort(), ['token', 'user']);
      t.match(created.user, {
        email: person.email,
        auth_provider: 'google',
        is_verified: true,
        role: 'user',
        username: 'Ada_Lovelace',
      });
      t.ok(created.user.last_login_at);
      const me = await app.inject({
        url: '/api/v1/me',
        headers: { authorization: `Bearer ${created.token}` },
      });
      t.equal(me.statusCode, 200);
      t.equal(me.json().id, created.user.id);

      // The same Google account, now with a changed email and name: the same user, by `sub`.
      const again = await app.inject({
        method: 'POST',
        url: GOOGLE,
        payload: {
          id_token: await idToken({
            key: keyA,
            claims: { sub: person.sub, email: 'renamed@gmail.example.com' },
          }),
        },
      });
      t.equal(again.statusCode, 200);
      t.equal(again.json().user.id, created.user.id);
      t.equal(again.json().user.email, person.email, 'the stored email is kept');
      t.not(again.json().token, created.token, 'a new token');
      const [row] =
        await database.sql`select google_id, hashed_password from users where id = ${created.user.id}`;
      t.same(row, { google_id: person.sub, hashed_password: null });
    },
  );

  await t.test('cookie: true starts a browser session exactly as a password sign-in does', async (t) => {
    const person = newGoogleUser();
    const signIn = async () =>
      app.inject({
        method: 'POST',
        url: GOOGLE,
        payload: { id_token: await idToken({ key: keyA, claims: person }), cookie: true },
      });
    const first = await signIn();
    t.equal(first.statusCode, 201, first.body);
    const created = await assertSessionCookies(t, first, database.sql);
    const me = await app.inject({
      url: '/api/v1/me',
      cookies: { dc_session: created.session, dc_csrf: created.csrf },
    });
    t.equal(me.statusCode, 200);
    t.equal(me.json().id, first.json().user.id, 'the cookie signs in the Google user');
    const again = await signIn();
    t.equal(again.statusCode, 200, again.body);
    const second = await assertSessionCookies(t, again, database.sql);
    t.not(second.session, created.session, 'a new session');
  });

  await t.test('an email owned by a password account is EMAIL_TAKEN, never a sign-in to it', async (t) => {
    const owner = await signUp(app);
    const before = await tokenCount(database);
    const res = await app.inject({
      method: 'POST',
      url: GOOGLE,
      payload: { id_token: await idToken({ key: keyA, claims: { email: owner.user.email } }) },
    });
    t.equal(res.statusCode, 409);
    t.equal(res.json().code, 'EMAIL_TAKEN');
    t.equal(await tokenCount(database), before, 'no session');
    t.notOk(res.headers['set-cookie']);
  });

  await t.test('another Google account with the same email is EMAIL_TAKEN too', async (t) => {
    const person = newGoogleUser();
    const first = await app.inject({
      method: 'POST',
      url: GOOGLE,
      payload: { id_token: await idToken({ key: keyA, claims: person }) },
    });
    t.equal(first.statusCode, 201);
    const other = await app.inject({
      method: 'POST',
      url: GOOGLE,
      payload: {
        id_token: await idToken({ key: keyA, claims: { sub: `${person.sub}9`, email: person.email } }),
      },
    });
    t.equal(other.statusCode, 409);
    t.equal(other.json().code, 'EMAIL_TAKEN');
  });

  await t.test('a deactivated Google user is refused (403)', async (t) => {
    const person = newGoogleUser();
    const first = await app.inject({
      method: 'POST',
      url: GOOGLE,
      payload: { id_token: await idToken({ key: keyA, claims: person }) },
    });
    await repos.users.deactivate(first.json().user.id);
    cache.evictUser(first.json().user.id);
    const res = await app.inject({
      method: 'POST',
      url: GOOGLE,
      payload: { id_token: await idToken({ key: keyA, claims: person }) },
    });
    t.equal(res.statusCode, 403);
    t.equal(res.json().code, 'ACCOUNT_INACTIVE');
  });

  await t.test('two first sign-ins at once make one user', async (t) => {
    const person = newGoogleUser();
    const token = await idToken({ key: keyA, claims: person });
    const answers = await Promise.all(
      [1, 2, 3, 4, 5].map(() => app.inject({ method: 'POST', url: GOOGLE, payload: { id_token: token } })),
    );
    t.same(answers.map((a) => a.statusCode).sort(), [200, 200, 200, 200, 201]);
    t.equal(new Set(answers.map((a) => a.json().user.id)).size, 1);
  });

  await t.test('every bad token: 401 INVALID_ID_TOKEN, no session, never a 500', async (t) => {
    const now = Math.floor(Date.now() / 1000);
    const before = await tokenCount(database);
    const [users] = await database.sql<{ n: number }[]>`select count(*)::int as n from users`;
    const cases: Array<[string, string]> = [
      ['unknown kid', await idToken({ key: stranger })],
      ['wrong audience', await idToken({ key: keyA, claims: { aud: 'other.apps.googleusercontent.com' } })],
      ['wrong issuer', await idToken({ key: keyA, claims: { iss: 'https://evil.example' } })],
      ['expired', await idToken({ key: keyA, iat: now - 3500, exp: now - 120 })],
      ['not yet valid', await idToken({ key: keyA, claims: { nbf: now + 300 } })],
      ['email not verified', await idToken({ key: keyA, claims: { email_verified: false } })],
      ['an email that is not one', await idToken({ key: keyA, claims: { email: 'not an email' } })],
      ['garbage', 'garbage'],
      ['100 KB of garbage', 'g'.repeat(100 * 1024)],
      // Under key-a's kid but not signed by it: another key, alg none, HS256 with the public key.
      ...(await forgedIdTokens(keyA, stranger)),
    ];
    for (const [name, token] of cases) {
      const res = await app.inject({
        method: 'POST',
        url: GOOGLE,
        payload: { id_token: token, cookie: true },
      });
      t.equal(res.statusCode, 401, name);
      t.match(res.headers['content-type'], /^application\/problem\+json/, name);
      t.equal(res.json().code, 'INVALID_ID_TOKEN', name);
      t.notOk(res.headers['set-cookie'], `${name}: no cookie`);
      t.notMatch(res.body, /Error|at .*\.ts|jose/i, `${name}: nothing internal in the answer`);
    }
    t.equal(await tokenCount(database), before, 'no session was created');
    const [usersAfter] = await database.sql<{ n: number }[]>`select count(*)::int as n from users`;
    t.equal(usersAfter?.n, users?.n, 'no user was created');
  });

  await t.test('a malformed body is a 400', async (t) => {
    for (const payload of [{}, { id_token: '' }, { id_token: 7 }, { id_token: 'x', extra: 1 }]) {
      const res = await app.inject({ method: 'POST', url: GOOGLE, payload });
      t.equal(res.statusCode, 400, JSON.stringify(payload));
      t.equal(res.json().code, 'VALIDATION_FAILED');
    }
  });

  t.ok(server.fetches >= 1, 'keys came from the local key server');
});

t.test('the key server down or slow: 503 GOOGLE_UNAVAILABLE, no session', async (t) => {
  const down = await testApp(t, {
    GOOGLE_CLIENT_ID: CLIENT_ID,
    GOOGLE_JWKS_URL: await deadUrl(),
    GOOGLE_JWKS_TIMEOUT_MS: '300',
  });
  const token = await idToken({ key: keyA });
  const res = await down.app.inject({ method: 'POST', url: GOOGLE, payload: { id_token: token } });
  t.equal(res.statusCode, 503);
  t.equal(res.json().code, 'GOOGLE_UNAVAILABLE');
  t.ok(res.headers['retry-after']);
  t.notOk(res.headers['set-cookie']);

  const slow = await googleApp(t, { GOOGLE_JWKS_TIMEOUT_MS: '300' });
  slow.server.mode = 'hang';
  const answer = await slow.app.inject({ method: 'POST', url: GOOGLE, payload: { id_token: token } });
  t.equal(answer.statusCode, 503);
  t.equal(answer.json().code, 'GOOGLE_UNAVAILABLE');
  t.equal(await tokenCount(slow.database), 0);
});
