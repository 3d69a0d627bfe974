import t from 'tap';
import { AuthCache, type AuthIdentity } from '../../src/services/auth-cache.ts';

/** A clock the test moves by hand. */
function clock(start = 1_000_000) {
  let now = start;
  return {
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

const alice: AuthIdentity = { user_id: 1, role: 'user' };
const bob: AuthIdentity = { user_id: 2, role: 'admin' };
const FAR = new Date(Date.UTC(2100, 0, 1));

t.test('an entry is served for ttl milliseconds, then forgotten', async (t) => {
  const c = clock();
  const cache = new AuthCache(1000, 100, c.now);
  t.equal(cache.enabled, true);
  cache.set('k', alice, FAR);
  t.same(cache.get('k'), alice);
  c.advance(999);
  t.same(cache.get('k'), alice, 'still there 1 ms before the ttl');
  c.advance(1);
  t.equal(cache.get('k'), null, 'gone at the ttl');
  t.equal(cache.size, 0, 'an expired entry is removed when found');
  t.equal(cache.get('unknown'), null);
});

t.test('an entry never outlives its token, even with a longer ttl', async (t) => {
  const c = clock();
  const cache = new AuthCache(60_000, 100, c.now);
  cache.set('k', alice, new Date(c.now() + 500));
  c.advance(499);
  t.same(cache.get('k'), alice);
  c.advance(1);
  t.equal(cache.get('k'), null, 'gone when the token expires');
  cache.set('expired', alice, new Date(c.now() - 1));
  t.equal(cache.get('expired'), null, 'a token that has already expired is never served');
});

t.test('setting a key again replaces its entry and restarts its ttl', async (t) => {
  const c = clock();
  const cache = new AuthCache(1000, 100, c.now);
  cache.set('k', alice, FAR);
  c.advance(800);
  cache.set('k', { user_id: 1, role: 'admin' }, FAR);
  t.equal(cache.size, 1);
  c.advance(800);
  t.same(cache.get('k'), { user_id: 1, role: 'admin' });
});

t.test('evictUser forgets every key of that user and only that user', async (t) => {
  const c = clock();
  const cache = new AuthCache(10_000, 100, c.now);
  cache.set('a1', alice, FAR);
  cache.set('a2', alice, FAR);
  cache.set('b1', bob, FAR);
  cache.evictUser(alice.user_id);
  t.equal(cache.get('a1'), null);
  t.equal(cache.get('a2'), null);
  t.same(cache.get('b1'), bob, "another user's entry stays");
  t.equal(cache.size, 1);
  cache.evictUser(alice.user_id);
  cache.evictUser(999);
  t.equal(cache.size, 1, 'evicting a user with nothing cached is harmless');
  cache.set('a3', alice, FAR);
  t.same(cache.get('a3'), alice, 'the user can be cached again');
  cache.evictUser(alice.user_id);
  t.equal(cache.get('a3'), null, 'and evicted again');
});

t.test('a key moved to another user is evicted with its new user only', async (t) => {
  const c = clock();
  const cache = new AuthCache(10_000, 100, c.now);
  cache.set('k', alice, FAR);
  cache.set('k', bob, FAR);
  cache.evictUser(alice.user_id);
  t.same(cache.get('k'), bob);
  cache.evictUser(bob.user_id);
  t.equal(cache.get('k'), null);
});

t.test('evictKey forgets one key and leaves the user’s others', async (t) => {
  const c = clock();
  const cache = new AuthCache(10_000, 100, c.now);
  cache.set('a1', alice, FAR);
  cache.set('a2', alice, FAR);
  cache.evictKey('a1');
  t.equal(cache.get('a1'), null);
  t.same(cache.get('a2'), alice);
  cache.evictKey('nothing');
  t.equal(cache.size, 1, 'an unknown key is harmless');
  cache.evictUser(alice.user_id);
  t.equal(cache.get('a2'), null, 'evictUser still finds the remaining key');
  t.equal(cache.size, 0);
});

t.test('clear forgets everything', async (t) => {
  const c = clock();
  const cache = new AuthCache(10_000, 100, c.now);
  cache.set('a1', alice, FAR);
  cache.set('b1', bob, FAR);
  cache.clear();
  t.equal(cache.size, 0);
  t.equal(cache.get('a1'), null);
  t.equal(cache.get('b1'), null);
  cache.set('a1', alice, FAR);
  t.same(cache.get('a1'), alice, 'usable after clear');
  cache.evictUser(alice.user_id);
  t.equal(cache.size, 0, 'and its per-user index was rebuilt');
});

t.test('past maxEntries the oldest entry is dropped', async (t) => {
  const c = clock();
  const cache = new AuthCache(10_000, 3, c.now);
  cache.set('k1', alice, FAR);
  cache.set('k2', bob, FAR);
  cache.set('k3', alice, FAR);
  cache.set('k4', bob, FAR);
  t.equal(cache.size, 3);
  t.equal(cache.get('k1'), null, 'the oldest went');
  t.same(cache.get('k2'), bob);
  t.same(cache.get('k3'), alice);
  t.same(cache.get('k4'), bob);

  cache.set('k2', bob, FAR);
  cache.set('k5', alice, FAR);
  t.same(cache.get('k2'), bob, 'a key set again counts as new');
  t.equal(cache.get('k3'), null, 'so the next oldest went instead');
  t.equal(cache.size, 3);

  cache.evictUser(alice.user_id);
  t.same([cache.get('k2'), cache.get('k4'), cache.get('k5')], [bob, bob, null], 'the user index stays right');
});

t.test('ttl 0 disables the cache', async (t) => {
  const c = clock();
  const cache = new AuthCache(0, 100, c.now);
  t.equal(cache.enabled, false);
  cache.set('k', alice, FAR);
  t.equal(cache.size, 0);
  t.equal(cache.get('k'), null);
});

t.test('set with a generation stores nothing when the user was evicted since', async (t) => {
  const cache = new AuthCache(10_000, 100, clock().now);
  const before = cache.generation();
  cache.evictUser(alice.user_id);
  t.equal(cache.set('a1', alice, FAR, before), false, 'refused');
  t.equal(cache.get('a1'), null);
  t.equal(cache.set('b1', bob, FAR, before), true, 'another user is not concerned');
  t.same(cache.get('b1'), bob);
  t.equal(
    cache.set('a1', alice, FAR, cache.generation()),
    true,
    'a lookup begun after the eviction is stored',
  );
  t.same(cache.get('a1'), alice);
});

t.test('set with a generation stores nothing when the key was evicted since', async (t) => {
  const cache = new AuthCache(10_000, 100, clock().now);
  const before = cache.generation();
  cache.evictKey('a1');
  t.equal(cache.set('a1', alice, FAR, before), false, 'the evicted key is refused');
  t.equal(cache.set('a2', alice, FAR, before), true, 'another key of the same user is not concerned');
  t.equal(cache.size, 1);
});

t.test('set with a generation stores nothing when the cache was cleared since', async (t) => {
  const cache = new AuthCache(10_000, 100, clock().now);
  const before = cache.generation();
  cache.clear();
  t.equal(cache.set('a1', alice, FAR, before), false);
  t.equal(cache.set('b1', bob, FAR, before), false, 'clear concerns everyone');
  t.equal(cache.size, 0);
  t.equal(cache.set('a1', alice, FAR, cache.generation()), true);
});

t.test('an eviction before the generation was taken does not refuse', async (t) => {
  const cache = new AuthCache(10_000, 100, clock().now);
  cache.evictUser(alice.user_id);
  cache.evictKey('a1');
  const after = cache.generation();
  t.equal(cache.set('a1', alice, FAR, after), true);
  t.same(cache.get('a1'), alice);
});

t.test('the eviction records are bounded, and dropping one only refuses more', async (t) => {
  const cache = new AuthCache(10_000, 2, clock().now);
  const before = cache.generation();
  cache.evictUser(1);
  const middle = cache.generation();
  cache.evictUser(2);
  cache.evictUser(3); // past maxEntries: the record of user 1 goes, the floor rises to it
  t.equal(cache.set('k1', { user_id: 1, role: 'user' }, FAR, before), false, 'user 1 is still refused');
  t.equal(cache.set('k4', { user_id: 4, role: 'user' }, FAR, before), false, 'so is anyone before the floor');
  t.equal(cache.set('k1', { user_id: 1, role: 'user' }, FAR, middle), true, 'after it, user 1 is fine');
  t.equal(cache.set('k2', { user_id: 2, role: 'user' }, FAR, middle), false, 'user 2 is still refused');
});
