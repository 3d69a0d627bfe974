/**
 * AuthService.authenticate against evictions that happen while its query is under
 * way: a token revoked during the lookup must not be cached. First with a token
 * lookup the test holds and releases by hand, then against PostgreSQL, with the
 * revocation committed and its NOTIFY handled while the lookup's answer is held back.
 */
import t from 'tap';
import type { Repositories } from '../../src/repositories/index.ts';
import type { TokenIdentity } from '../../src/repositories/token-repository.ts';
import { AuthCache } from '../../src/services/auth-cache.ts';
import { listenForAuthChanges } from '../../src/services/auth-listener.ts';
import { AuthService } from '../../src/services/auth-service.ts';
import { newToken, tokenHash } from '../../src/services/tokens.ts';
import { signUp, testApp } from '../helpers/app.ts';
import { testLogger } from '../helpers/db.ts';

const FAR = new Date(Date.UTC(2100, 0, 1));

/** An AuthService whose token lookups wait until the test answers them. */
function heldLookups() {
  const pending: Array<(identity: TokenIdentity | null) => void> = [];
  let queries = 0;
  const repos = {
    tokens: {
      authenticate: () => {
        queries++;
        return new Promise<TokenIdentity | null>((resolve) => pending.push(resolve));
      },
    },
  } as unknown as Repositories;
  const cache = new AuthCache(60_000);
  const auth = new AuthService(repos, cache, 3_600_000);
  return {
    cache,
    auth,
    queries: () => queries,
    /** Answers the oldest held lookup once it has been asked; false when none is asked within a second. */
    async answer(identity: TokenIdentity | null): Promise<boolean> {
      const deadline = Date.now() + 1000;
      while (pending.length === 0) {
        if (Date.now() > deadline) return false;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      pending.shift()!(identity);
      return true;
    },
  };
}

const alice = { user_id: 1, role: 'user' as const, expires_at: FAR };

t.test('without an eviction the answer is cached and the next request makes no query', async (t) => {
  const h = heldLookups();
  const token = newToken();
  const first = h.auth.authenticate(token);
  await h.answer(alice);
  t.match(await first, { user_id: 1, role: 'user' });
  t.match(await h.auth.authenticate(token), { user_id: 1 }, 'served from the cache');
  t.equal(h.queries(), 1);
});

t.test('cached answers a known token at once, and nothing else', async (t) => {
  const h = heldLookups();
  const token = newToken();
  t.equal(h.auth.cached(token), null, 'a token not looked up yet is not known');
  t.equal(h.auth.cached('not a token'), null, 'nor is what cannot be a token');
  const first = h.auth.authenticate(token);
  await h.answer(alice);
  await first;
  const known = h.auth.cached(token);
  t.same(known, { user_id: 1, role: 'user', token_key: tokenHash(token)!.toString('base64') });
  t.equal(h.auth.cached(newToken()), null, 'another token is not');
  h.cache.evictUser(1);
  t.equal(h.auth.cached(token), null, 'nor the token once its user is evicted');
  t.equal(h.queries(), 1, 'cached never queries');
});

for (const [name, evict] of [
  [
    'the user is evicted (deactivation, password change, NOTIFY)',
    (h: ReturnType<typeof heldLookups>) => h.cache.evictUser(1),
  ],
  [
    'the key is evicted (logout)',
    (h: ReturnType<typeof heldLookups>, token: string) =>
      h.cache.evictKey(tokenHash(token)!.toString('base64')),
  ],
  [
    'the cache is cleared (the notification connection came back)',
    (h: ReturnType<typeof heldLookups>) => h.cache.clear(),
  ],
] as const) {
  t.test(`an answer is not cached when ${name} during the lookup`, async (t) => {
    const h = heldLookups();
    const token = newToken();
    const first = h.auth.authenticate(token);
    evict(h, token);
    await h.answer(alice);
    t.match(await first, { user_id: 1 }, 'the request itself is answered: the token was valid when read');
    t.equal(h.cache.size, 0, 'nothing cached');
    const second = h.auth.authenticate(token);
    t.ok(await h.answer(null), 'the next request asks the database again');
    await t.rejects(second, { code: 'UNAUTHENTICATED' }, 'which says the token is revoked by now');
    t.equal(h.queries(), 2);
  });
}

t.test('an eviction of another user during the lookup does not stop caching', async (t) => {
  const h = heldLookups();
  const token = newToken();
  const first = h.auth.authenticate(token);
  h.cache.evictUser(2);
  await h.answer(alice);
  await first;
  t.equal(h.cache.size, 1);
});

t.test(
  'against PostgreSQL: a token revoked (and NOTIFY heard) during the lookup is refused next time',
  async (t) => {
    const ta = await testApp(t, { AUTH_CACHE_TTL_SECONDS: '60' });
    const { app, repos, cache, database } = ta;
    const listener = await listenForAuthChanges(database.sql, cache, testLogger());
    t.teardown(() => listener.unlisten());
    const account = await signUp(app);

    // The lookup's answer is held back until another session's revocation has committed
    // and its auth_changed notification has evicted the user here.
    const tokens = repos.tokens;
    const lookup = tokens.authenticate.bind(tokens);
    let raced = false;
    tokens.authenticate = async (hash) => {
      const answer = await lookup(hash);
      if (!raced) {
        raced = true;
        const evict = cache.evictUser.bind(cache);
        const heard = new Promise<void>((resolve) => {
          cache.evictUser = (userId) => {
            evict(userId);
            if (userId === account.user.id) resolve();
          };
        });
        await database.sql`update api_tokens set revoked_at = now() where user_id = ${account.user.id}`;
        await heard;
      }
      return answer;
    };

    const during = await app.inject({ url: '/api/v1/me', headers: account.headers });
    t.equal(during.statusCode, 200, 'the request whose lookup preceded the revocation is answered');
    t.ok(raced, 'the revocation happened during the lookup');
    const after = await app.inject({ url: '/api/v1/me', headers: account.headers });
    t.equal(after.statusCode, 401, 'the revoked token was not cached');
    t.match(after.json(), { code: 'UNAUTHENTICATED' });
  },
);

t.test(
  'a login whose password is changed between its check and its sign-in gets no session (and one checked against a deactivated account neither)',
  async (t) => {
    const ta = await testApp(t);
    const { repos } = ta;
    for (const [name, interfere] of [
      [
        'a password change',
        (id: number, hash: string) => repos.users.replacePassword(id, hash, `${hash}-changed`),
      ],
      ['a deactivation', (id: number) => repos.users.deactivate(id)],
    ] as const) {
      const account = await signUp(ta.app);
      const findCredentials = repos.users.findCredentials.bind(repos.users);
      // The slow password check happens between these two: the change commits then.
      const raced = Object.create(repos.users) as typeof repos.users;
      raced.findCredentials = async (email: string) => {
        const found = await findCredentials(email);
        if (found?.hashed_password) await interfere(found.id, found.hashed_password);
        return found;
      };
      const auth = new AuthService(
        Object.assign(Object.create(repos), { users: raced }) as Repositories,
        new AuthCache(0),
        3_600_000,
      );
      await t.rejects(
        auth.login(account.user.email, account.password),
        { code: 'UNAUTHENTICATED' },
        `${name}: 401`,
      );
      const [row] = await ta.database.sql`
        select last_login_at, (select count(*) from api_tokens where user_id = ${account.user.id}) as tokens
        from users where id = ${account.user.id}
      `;
      t.same(row, { last_login_at: null, tokens: 1 }, `${name}: no sign-in recorded, no token but the first`);
    }
  },
);
