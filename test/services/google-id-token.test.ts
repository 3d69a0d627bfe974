/**
 * The Google ID token check against a key server on 127.0.0.1: every way a token
 * can be wrong is INVALID_ID_TOKEN; a key server that is down, slow or broken is
 * GOOGLE_UNAVAILABLE; keys are cached as Cache-Control says and refetched once on an
 * unknown kid.
 */
import { SignJWT } from 'jose';
import t from 'tap';
import {
  freshnessMs,
  GoogleIdTokenVerifier,
  InvalidIdTokenError,
  KeysUnavailableError,
} from '../../src/services/google-id-token.ts';
import {
  b64url,
  CLIENT_ID,
  deadUrl,
  forgedIdTokens,
  ISSUER,
  idToken,
  jwksServer,
  makeKey,
} from '../helpers/google.ts';

const [keyA, keyB, stranger] = await Promise.all([makeKey('key-a'), makeKey('key-b'), makeKey('key-x')]);

function verifier(url: string, options: Partial<{ timeoutMs: number; cooldownMs: number }> = {}) {
  return new GoogleIdTokenVerifier({
    clientId: CLIENT_ID,
    jwksUrl: url,
    timeoutMs: options.timeoutMs ?? 30_000,
    cooldownMs: options.cooldownMs ?? 30_000,
  });
}

t.test('a valid token gives the subject, the email and the name', async (t) => {
  const server = await jwksServer(t, [keyA]);
  const token = await idToken({ key: keyA, claims: { sub: '1234567890', email: 'ada@gmail.example.com' } });
  const identity = await verifier(server.url).verify(token);
  t.same(identity, { sub: '1234567890', email: 'ada@gmail.example.com', name: 'Ada Lovelace' });
  // Google's other issuer spelling, and a token 59 s past its expiry (the allowed skew).
  const now = Math.floor(Date.now() / 1000);
  const other = await idToken({ key: keyA, claims: { iss: 'accounts.google.com' } });
  const late = await idToken({ key: keyA, iat: now - 3000, exp: now - 50 });
  await t.resolves(verifier(server.url).verify(other));
  await t.resolves(verifier(server.url).verify(late));
});

t.test('every bad token is INVALID_ID_TOKEN', async (t) => {
  const server = await jwksServer(t, [keyA, keyB]);
  const check = verifier(server.url);
  const now = Math.floor(Date.now() / 1000);
  const good = await idToken({ key: keyA });
  const [head, body] = good.split('.');
  const cases: Array<[string, string]> = [
    ...(await forgedIdTokens(keyA, keyB)),
    [
      'wrong audience',
      await idToken({ key: keyA, claims: { aud: 'someone-elses-client.apps.googleusercontent.com' } }),
    ],
    ['audience list without ours', await idToken({ key: keyA, claims: { aud: ['x', 'y'] } })],
    [
      'wrong issuer',
      await idToken({ key: keyA, claims: { iss: 'https://accounts.google.com.evil.example' } }),
    ],
    ['no issuer', await idToken({ key: keyA, claims: { iss: undefined } })],
    ['expired', await idToken({ key: keyA, iat: now - 3500, exp: now - 120 })],
    ['no expiry', await idToken({ key: keyA, claims: { exp: undefined } })],
    ['issued more than an hour ago', await idToken({ key: keyA, iat: now - 7200, exp: now + 600 })],
    ['issued in the future', await idToken({ key: keyA, iat: now + 600 })],
    ['not yet valid', await idToken({ key: keyA, claims: { nbf: now + 300 } })],
    ['unknown kid', await idToken({ key: stranger })],
    [
      'no kid',
      await new SignJWT({ iss: ISSUER, aud: CLIENT_ID, sub: '1', email: 'a@b.example', email_verified: true })
        .setProtectedHeader({ alg: 'RS256' })
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(keyA.privateKey),
    ],
    ['email_verified false', await idToken({ key: keyA, claims: { email_verified: false } })],
    ['email_verified "true" (a string)', await idToken({ key: keyA, claims: { email_verified: 'true' } })],
    ['no email_verified', await idToken({ key: keyA, claims: { email_verified: undefined } })],
    ['no email', await idToken({ key: keyA, claims: { email: undefined } })],
    ['no subject', await idToken({ key: keyA, claims: { sub: undefined } })],
    [
      'a subject that is not a string',
      await idToken({ key: keyA, claims: { sub: 42 as unknown as string } }),
    ],
    ['garbage', 'garbage'],
    ['three dots of garbage', 'a.b.c'],
    ['JSON that is not a JWT', '{"alg":"RS256"}'],
    ['a header that is not JSON', `${b64url('not json')}.${body}.${good.split('.')[2]}`],
    ['100 KB of garbage', 'x'.repeat(100 * 1024)],
    ['100 KB in a JWT shape', `${head}.${'A'.repeat(100 * 1024)}.${good.split('.')[2]}`],
    ['the empty string', ''],
  ];
  for (const [name, token] of cases) {
    await t.rejects(check.verify(token), InvalidIdTokenError, name);
    await t.rejects(check.verify(token), { code: 'INVALID_ID_TOKEN' }, name);
  }
  await t.resolves(check.verify(good), 'the untouched token is fine');
});

t.test('keys are kept as Cache-Control says', async (t) => {
  const server = await jwksServer(t, [keyA]);
  const check = verifier(server.url);
  await check.verify(await idToken({ key: keyA }));
  await check.verify(await idToken({ key: keyA }));
  t.equal(server.fetches, 1, 'max-age=3600: one fetch for two sign-ins');

  const uncached = await jwksServer(t, [keyA]);
  uncached.cacheControl = 'no-cache, no-store, max-age=0';
  const strict = verifier(uncached.url);
  await strict.verify(await idToken({ key: keyA }));
  await strict.verify(await idToken({ key: keyA }));
  t.equal(uncached.fetches, 2, 'no-store: fetched for each sign-in');

  t.equal(
    freshnessMs(new Headers({ 'cache-control': 'public, max-age=19680, must-revalidate, no-transform' })),
    19_680_000,
  );
  t.equal(
    freshnessMs(new Headers({ 'cache-control': 'public, max-age=100', age: '40' })),
    60_000,
    'Age counts',
  );
  t.equal(freshnessMs(new Headers({ 'cache-control': 'max-age=100', age: '400' })), 0);
  t.equal(freshnessMs(new Headers({ 'cache-control': 'max-age=9999999' })), 24 * 3_600_000, 'at most a day');
  t.equal(freshnessMs(new Headers({ 'cache-control': 'no-cache' })), 0);
  t.equal(freshnessMs(new Headers({ 'cache-control': 'max-age=abc' })), null);
  t.equal(freshnessMs(new Headers({})), null);
});

t.test('an unknown kid refetches the keys once: a rotated key is found, a stranger is not', async (t) => {
  const server = await jwksServer(t, [keyA]);
  const check = verifier(server.url, { cooldownMs: 0 });
  await check.verify(await idToken({ key: keyA }));
  t.equal(server.fetches, 1);
  server.keys = [keyA, keyB]; // Google publishes a new key
  const identity = await check.verify(await idToken({ key: keyB }));
  t.ok(identity.sub);
  t.equal(server.fetches, 2, 'one refetch found the new key');
  await check.verify(await idToken({ key: keyB }));
  t.equal(server.fetches, 2, 'and it is cached since');
  await t.rejects(check.verify(await idToken({ key: stranger })), { code: 'INVALID_ID_TOKEN' });
  t.equal(server.fetches, 3, 'an unknown kid: exactly one refetch');
});

t.test('a key the server no longer publishes is refused once the cached set goes stale', async (t) => {
  const server = await jwksServer(t, [keyA, keyB]);
  server.cacheControl = 'max-age=0';
  const check = verifier(server.url);
  await check.verify(await idToken({ key: keyA }));
  server.keys = [keyB]; // key A retired
  await t.rejects(check.verify(await idToken({ key: keyA })), { code: 'INVALID_ID_TOKEN' });
  t.ok(await check.verify(await idToken({ key: keyB })));
});

t.test('within the cooldown an unknown kid does not refetch (no hammering the key server)', async (t) => {
  const server = await jwksServer(t, [keyA]);
  const check = verifier(server.url, { cooldownMs: 3_600_000 });
  await check.verify(await idToken({ key: keyA }));
  for (let i = 0; i < 5; i++)
    await t.rejects(check.verify(await idToken({ key: stranger })), { code: 'INVALID_ID_TOKEN' });
  t.equal(server.fetches, 1);
});

t.test('a key server that is down, slow, failing or broken: GOOGLE_UNAVAILABLE, promptly', async (t) => {
  const token = await idToken({ key: keyA });
  const down = verifier(await deadUrl(), { timeoutMs: 500 });
  await t.rejects(down.verify(token), KeysUnavailableError, 'connection refused');
  await t.rejects(down.verify(token), { code: 'GOOGLE_UNAVAILABLE' });
  for (const mode of ['hang', 'hang-body', 'error', 'garbage'] as const) {
    const server = await jwksServer(t, [keyA]);
    server.mode = mode;
    await t.rejects(
      verifier(server.url, { timeoutMs: 300 }).verify(token),
      { code: 'GOOGLE_UNAVAILABLE' },
      mode,
    );
  }
  // A bad token is still a bad token while the key server is down: checked before any fetch.
  await t.rejects(down.verify('garbage'), { code: 'INVALID_ID_TOKEN' });
  await t.rejects(down.verify('x'.repeat(100 * 1024)), { code: 'INVALID_ID_TOKEN' });
});

t.test('keys in hand keep working while the key server is down, until they go stale', async (t) => {
  const server = await jwksServer(t, [keyA]);
  const check = verifier(server.url);
  await check.verify(await idToken({ key: keyA }));
  server.mode = 'hang';
  t.ok(await check.verify(await idToken({ key: keyA })), 'cached keys, no fetch needed');
  t.equal(server.fetches, 1);
});
