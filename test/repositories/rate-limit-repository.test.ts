/**
 * rate_limits (RateLimitRepository, `repos.rateLimits`): a fixed window per key, counted
 * by one upsert per hit; expired windows start again and are pruned. Time is moved by
 * rewriting expires_at in SQL, never by waiting.
 */
import t from 'tap';
import { testDatabase } from '../helpers/db.ts';

t.test('hits count within a window, per key; an ended window starts again', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const first = await repos.rateLimits.hit('GET /x|1.2.3.4', 60_000);
  t.equal(first.current, 1);
  t.ok(first.ttl > 0 && first.ttl <= 60_000, `the time left is within the window (${first.ttl} ms)`);
  t.equal((await repos.rateLimits.hit('GET /x|1.2.3.4', 60_000)).current, 2);
  t.equal((await repos.rateLimits.hit('GET /x|5.6.7.8', 60_000)).current, 1, 'another key counts apart');

  await sql`update rate_limits set expires_at = now() - interval '1 second' where key = 'GET /x|1.2.3.4'`;
  const again = await repos.rateLimits.hit('GET /x|1.2.3.4', 60_000);
  t.equal(again.current, 1, 'a new window');
  t.ok(again.ttl > 0, 'that ends in the future');
});

t.test('prune deletes the counters whose window has ended', async (t) => {
  const { repos, sql } = await testDatabase(t);
  for (const key of ['a', 'b', 'c']) await repos.rateLimits.hit(key, 60_000);
  await sql`update rate_limits set expires_at = now() - interval '1 second' where key in ('a', 'b')`;
  t.equal(await repos.rateLimits.prune(), 2);
  const left = await sql<{ key: string }[]>`select key from rate_limits`;
  t.same(
    left.map((r) => r.key),
    ['c'],
  );
  t.equal(await repos.rateLimits.prune(), 0);
});
