/**
 * Browser sessions without a browser (test/browser/ has the real one): the cookies
 * `cookie: true` sets, the CSRF check of cookie-authenticated unsafe requests,
 * logout clearing both cookies, and CORS only for CORS_ORIGINS.
 */
import t from 'tap';
import { csrfTokenFor } from '../../src/http/session-cookies.ts';
import { multipartFile, testApp } from '../helpers/app.ts';
import { assertSessionCookies, cookiesOf } from '../helpers/cookies.ts';

const REGISTER = '/api/v1/auth/register';
const LOGIN = '/api/v1/auth/login';
const LOGOUT = '/api/v1/auth/logout';
const ME = '/api/v1/me';

let n = 0;
function person() {
  n++;
  return {
    email: `browser${process.pid}_${n}@example.com`,
    username: `browser_${n}`,
    password: 'correct horse battery',
  };
}

t.test('cookie sessions', async (t) => {
  const { app, database } = await testApp(t);

  await t.test(
    'register with cookie: true sets the session and CSRF cookies, no token in the body',
    async (t) => {
      const res = await app.inject({ method: 'POST', url: REGISTER, payload: { ...person(), cookie: true } });
      t.equal(res.statusCode, 201);
      await assertSessionCookies(t, res, database.sql);
    },
  );

  await t.test('without cookie: true nothing changes: the token in the body, no cookie', async (t) => {
    const res = await app.inject({ method: 'POST', url: REGISTER, payload: person() });
    t.equal(res.statusCode, 201);
    t.same(Object.keys(res.json()).sort(), ['token', 'user']);
    t.notOk(res.headers['set-cookie']);
  });

  const who = person();
  await app.inject({ method: 'POST', url: REGISTER, payload: who });
  const login = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: who.email, password: who.password, cookie: true },
  });
  t.equal(login.statusCode, 200);
  const { session, csrf } = await assertSessionCookies(t, login, database.sql);
  const jar = { dc_session: session, dc_csrf: csrf };

  await t.test('a GET authenticates with the cookie alone', async (t) => {
    const res = await app.inject({ url: ME, cookies: jar });
    t.equal(res.statusCode, 200);
    t.equal(res.json().email, who.email);
  });

  await t.test('an unsafe request needs X-CSRF-Token equal to the session’s CSRF token', async (t) => {
    const attempts: Array<[string, Record<string, string>, Record<string, string>]> = [
      ['no header', {}, jar],
      ['a wrong header', { 'x-csrf-token': 'x'.repeat(43) }, jar],
      ['an empty header', { 'x-csrf-token': '' }, jar],
      // A planted dc_csrf cookie and a header to match it: bound to the session, so refused.
      [
        'a planted cookie and header',
        { 'x-csrf-token': 'planted' },
        { dc_session: session, dc_csrf: 'planted' },
      ],
      ['the CSRF token of another session', { 'x-csrf-token': csrfTokenFor(`dc_${'A'.repeat(43)}`) }, jar],
    ];
    for (const [name, headers, cookies] of attempts) {
      const res = await app.inject({
        method: 'PATCH',
        url: ME,
        headers,
        cookies,
        payload: { username: 'changed' },
      });
      t.equal(res.statusCode, 403, name);
      t.equal(res.json().code, 'CSRF_FAILED', name);
    }
    const upload = multipartFile('x.py', 'print(1)\n');
    const form = await app.inject({
      method: 'POST',
      url: '/api/v1/scripts',
      headers: upload.headers,
      cookies: jar,
      payload: upload.payload,
    });
    t.equal(form.statusCode, 403, 'an upload (a form a page could post) without the token');
    t.equal((await app.inject({ url: ME, cookies: jar })).json().username, who.username, 'nothing changed');

    const ok = await app.inject({
      method: 'PATCH',
      url: ME,
      headers: { 'x-csrf-token': csrf },
      cookies: jar,
      payload: { username: 'changed' },
    });
    t.equal(ok.statusCode, 200);
    t.equal(ok.json().username, 'changed');
    const uploaded = await app.inject({
      method: 'POST',
      url: '/api/v1/scripts',
      headers: { ...upload.headers, 'x-csrf-token': csrf },
      cookies: jar,
      payload: upload.payload,
    });
    t.equal(uploaded.statusCode, 201);
  });

  await t.test('a bearer client needs no CSRF token, with or without cookies around', async (t) => {
    const res = await app.inject({
      method: 'PATCH',
      url: ME,
      headers: { authorization: `Bearer ${session}` },
      cookies: { dc_session: 'junk' },
      payload: { username: 'bearer_change' },
    });
    t.equal(res.statusCode, 200);
  });

  await t.test('a cookie that is no session is a 401', async (t) => {
    for (const value of ['junk', `dc_${'B'.repeat(43)}`]) {
      const res = await app.inject({ url: ME, cookies: { dc_session: value } });
      t.equal(res.statusCode, 401, value);
    }
    t.equal((await app.inject({ url: ME })).statusCode, 401, 'no cookie, no header');
  });

  await t.test('logout needs the CSRF token, then revokes the session and clears both cookies', async (t) => {
    const forged = await app.inject({ method: 'POST', url: LOGOUT, cookies: jar });
    t.equal(forged.statusCode, 403);
    t.equal((await app.inject({ url: ME, cookies: jar })).statusCode, 200, 'still signed in');
    const res = await app.inject({
      method: 'POST',
      url: LOGOUT,
      cookies: jar,
      headers: { 'x-csrf-token': csrf },
    });
    t.equal(res.statusCode, 204);
    const cleared = cookiesOf(res.headers['set-cookie']);
    for (const name of ['dc_session', 'dc_csrf']) {
      t.equal(cleared.get(name)?.value, '', `${name} emptied`);
      t.equal(new Date(cleared.get(name)!.attributes.get('expires')!).getTime(), 0, `${name} expired`);
      t.equal(cleared.get(name)!.attributes.get('path'), '/');
    }
    t.equal((await app.inject({ url: ME, cookies: jar })).statusCode, 401, 'the session is over');
  });
});

t.test('Secure cookies over HTTPS (behind a trusted proxy)', async (t) => {
  const { app } = await testApp(t, { TRUST_PROXY: '1' }, { trustProxy: 1 });
  const res = await app.inject({
    method: 'POST',
    url: REGISTER,
    headers: { 'x-forwarded-proto': 'https' },
    payload: { ...person(), cookie: true },
  });
  t.equal(res.statusCode, 201);
  const cookies = cookiesOf(res.headers['set-cookie']);
  t.ok(cookies.get('dc_session')!.attributes.has('secure'));
  t.ok(cookies.get('dc_csrf')!.attributes.has('secure'));
});

t.test('CORS', async (t) => {
  const allowed = 'http://127.0.0.1:5173';
  const { app } = await testApp(t, { CORS_ORIGINS: ` ${allowed}, https://app.example.com ` });

  await t.test('a listed origin is echoed, with credentials and the exposed headers', async (t) => {
    const res = await app.inject({ url: '/api/v1/auth/providers', headers: { origin: allowed } });
    t.equal(res.statusCode, 200);
    t.equal(res.headers['access-control-allow-origin'], allowed);
    t.equal(res.headers['access-control-allow-credentials'], 'true');
    t.match(res.headers['access-control-expose-headers'], /x-request-id/);
    t.match(res.headers.vary, /Origin/i);
  });

  await t.test('a preflight of a listed origin is answered and cached', async (t) => {
    const res = await app.inject({
      method: 'OPTIONS',
      url: '/api/v1/me',
      headers: {
        origin: allowed,
        'access-control-request-method': 'PATCH',
        'access-control-request-headers': 'content-type, x-csrf-token',
      },
    });
    t.equal(res.statusCode, 204);
    t.equal(res.headers['access-control-allow-origin'], allowed);
    t.equal(res.headers['access-control-allow-credentials'], 'true');
    t.match(res.headers['access-control-allow-methods'], /PATCH/);
    t.match(res.headers['access-control-allow-headers'], /x-csrf-token/);
    t.equal(res.headers['access-control-max-age'], '600');
  });

  await t.test('any other origin gets no CORS header at all', async (t) => {
    for (const origin of ['http://127.0.0.1:6666', 'https://app.example.com.evil.example', 'null']) {
      const res = await app.inject({ url: '/api/v1/auth/providers', headers: { origin } });
      t.equal(res.statusCode, 200);
      const cors = Object.keys(res.headers).filter((h) => h.startsWith('access-control-'));
      t.same(cors, [], origin);
      const preflight = await app.inject({
        method: 'OPTIONS',
        url: '/api/v1/me',
        headers: { origin, 'access-control-request-method': 'PATCH' },
      });
      t.equal(preflight.statusCode, 404, `${origin}: preflight refused`);
      t.notOk(preflight.headers['access-control-allow-origin']);
    }
  });
});

t.test('without CORS_ORIGINS there are no CORS headers', async (t) => {
  const { app } = await testApp(t);
  const res = await app.inject({
    url: '/api/v1/auth/providers',
    headers: { origin: 'http://127.0.0.1:5173' },
  });
  t.same(
    Object.keys(res.headers).filter((h) => h.startsWith('access-control-')),
    [],
  );
  const preflight = await app.inject({
    method: 'OPTIONS',
    url: '/api/v1/me',
    headers: { origin: 'http://127.0.0.1:5173', 'access-control-request-method': 'PATCH' },
  });
  t.equal(preflight.statusCode, 404);
  t.notOk(preflight.headers['access-control-allow-origin']);
});
