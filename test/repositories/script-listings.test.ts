/** Listings of scripts (ScriptListingRepository, `repos.scriptListings`): pages, cursors, running and recent scripts. */
import t from 'tap';
import { ValidationError } from '../../src/domain/errors.ts';
import { encodeCursor } from '../../src/domain/paging.ts';
import { SCRIPT_SORTS, type ScriptSort } from '../../src/domain/script.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser, startRun } from '../helpers/fixtures.ts';

async function finish(
  repos: Awaited<ReturnType<typeof testDatabase>>['repos'],
  id: number,
  seconds: number,
  outcome: 'complete' | 'fail' = 'complete',
) {
  const run = await startRun(repos, id);
  const result = {
    exit_code: outcome === 'complete' ? 0 : 1,
    execution_time_seconds: seconds,
    memory_usage_mb: 10,
  };
  return outcome === 'complete'
    ? repos.outcomes.complete(run.id, result)
    : repos.outcomes.fail(run.id, 'exit code 1', result);
}

t.test('listPage filters by owner, status, execution time and age, in each sort order', async (t) => {
  const { repos, db } = await testDatabase(t);
  const alice = await makeUser(repos);
  const bob = await makeUser(repos);
  const a1 = await makeScript(repos, alice.id);
  const a2 = await makeScript(repos, alice.id);
  const a3 = await makeScript(repos, alice.id);
  const b1 = await makeScript(repos, bob.id);
  await finish(repos, a1.id, 5.5);
  await finish(repos, a2.id, 0.25);
  await finish(repos, b1.id, 9, 'fail');
  const sql = db.sql;
  await db.many(
    'test.age',
    sql`update scripts set created_at = now() - interval '10 days' where id = ${a1.id}`,
  );

  const ids = async (
    filters: Parameters<typeof repos.scriptListings.listPage>[0],
    sort: ScriptSort = '-created_at',
  ) => (await repos.scriptListings.listPage(filters, sort, { page: 1, per_page: 50 })).items.map((s) => s.id);

  t.same(await ids({ user_id: alice.id }), [a3.id, a2.id, a1.id], 'own scripts, newest first');
  t.same(await ids({ user_id: alice.id }, 'created_at'), [a1.id, a2.id, a3.id]);
  t.same(
    await ids({}, '-execution_time_seconds'),
    [b1.id, a1.id, a2.id, a3.id],
    'slowest first; never run last',
  );
  t.same(await ids({}, 'execution_time_seconds'), [a3.id, a2.id, a1.id, b1.id]);
  t.same(await ids({ status: 'completed' }), [a2.id, a1.id]);
  t.same(await ids({ min_execution_time: 1 }), [b1.id, a1.id]);
  t.same(await ids({ created_since: new Date(Date.now() - 86400_000) }), [b1.id, a3.id, a2.id]);
  t.same(await ids({ user_id: bob.id, status: 'completed' }), []);

  const page2 = await repos.scriptListings.listPage({}, '-created_at', { page: 2, per_page: 3 });
  t.match(page2, { total: 4, page: 2, per_page: 3, pages: 2 });
  t.equal(page2.items.length, 1);
});

t.test('listAfter walks every script once in every sort, matching the offset order', async (t) => {
  const { repos, db } = await testDatabase(t);
  const user = await makeUser(repos);
  const scripts = [];
  for (let i = 0; i < 9; i++) scripts.push(await makeScript(repos, user.id));
  // Equal keys (same created_at, same execution time) must still page without loss or repeat.
  const sql = db.sql;
  await db.many(
    'test.ties',
    sql`update scripts set created_at = '2026-01-01T00:00:00.123456Z' where id = any(${scripts.slice(0, 4).map((s) => s.id)})`,
  );
  for (const [i, s] of scripts.slice(4).entries()) await finish(repos, s.id, i % 2 === 0 ? 1.5 : 2.25);
  for (const sort of SCRIPT_SORTS) {
    const seen: number[] = [];
    let cursor: string | null = null;
    do {
      const page = await repos.scriptListings.listAfter({ user_id: user.id }, sort, cursor, 2);
      seen.push(...page.items.map((s) => s.id));
      cursor = page.next_cursor;
    } while (cursor !== null);
    const offset = await repos.scriptListings.listPage({ user_id: user.id }, sort, {
      page: 1,
      per_page: 100,
    });
    t.same(
      seen,
      offset.items.map((s) => s.id),
      `sort ${sort}`,
    );
  }
});

t.test('a cursor from another sort, or tampered with, is INVALID_CURSOR', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  for (let i = 0; i < 3; i++) await makeScript(repos, user.id);
  const page = await repos.scriptListings.listAfter({}, '-created_at', null, 1);
  t.type(page.next_cursor, 'string');
  const bad = [
    page.next_cursor!.slice(0, -2),
    encodeCursor(['-created_at', 5, 1]),
    encodeCursor(['created_at', 'not a time', 1]),
    encodeCursor(['-created_at', 'x'.repeat(100), 1]),
    encodeCursor(['bogus', 1, 1]),
  ];
  await t.rejects(repos.scriptListings.listAfter({}, 'created_at', page.next_cursor, 1), {
    code: 'INVALID_CURSOR',
  });
  for (const cursor of bad.slice(0, 2).concat(bad.slice(3))) {
    await t.rejects(repos.scriptListings.listAfter({}, '-created_at', cursor, 1), {
      constructor: ValidationError,
      code: 'INVALID_CURSOR',
    });
  }
  // A well-formed cursor whose timestamp is not one (or not a real date) is a tampered cursor.
  await t.rejects(repos.scriptListings.listAfter({}, 'created_at', bad[2]!, 1), { code: 'INVALID_CURSOR' });
  for (const time of ['2026-02-30 00:00:00+00', '2026-13-01 00:00:00+00', '2026-01-01 24:00:00+00'])
    await t.rejects(
      repos.scriptListings.listAfter({}, 'created_at', encodeCursor(['created_at', time, 1]), 1),
      {
        code: 'INVALID_CURSOR',
      },
    );
});

t.test('listRunning lists running scripts, optionally of one owner', async (t) => {
  const { repos } = await testDatabase(t);
  const alice = await makeUser(repos);
  const bob = await makeUser(repos);
  const a = await makeScript(repos, alice.id);
  const b = await makeScript(repos, bob.id);
  await makeScript(repos, bob.id);
  for (const s of [a, b]) await startRun(repos, s.id);
  t.same(
    (await repos.scriptListings.listRunning()).map((s) => s.id),
    [a.id, b.id],
  );
  t.same(
    (await repos.scriptListings.listRunning(bob.id)).map((s) => s.id),
    [b.id],
  );
});

t.test('listRecentWithUser embeds each owner, newest first, within the period and limit', async (t) => {
  const { repos, db } = await testDatabase(t);
  const alice = await makeUser(repos, { email: 'alice@example.com', username: 'alice' });
  const old = await makeScript(repos, alice.id);
  const s1 = await makeScript(repos, alice.id);
  const s2 = await makeScript(repos, alice.id);
  const sql = db.sql;
  await db.many(
    'test.age',
    sql`update scripts set created_at = now() - interval '8 days' where id = ${old.id}`,
  );
  const recent = await repos.scriptListings.listRecentWithUser(new Date(Date.now() - 7 * 86400_000), 10);
  t.same(
    recent.map((s) => s.id),
    [s2.id, s1.id],
  );
  t.same(recent[0]?.user, { id: alice.id, email: 'alice@example.com', username: 'alice' });
  t.equal((await repos.scriptListings.listRecentWithUser(new Date(0), 1)).length, 1);
});

t.test('page items are scripts and nothing else: no total, no sort key, as getById reads them', async (t) => {
  const { repos } = await testDatabase(t);
  const alice = await makeUser(repos);
  const made = [await makeScript(repos, alice.id), await makeScript(repos, alice.id)];
  const byId = await Promise.all(made.map((s) => repos.scripts.getById(s.id)));
  const expected = [...byId].reverse();
  const offset = await repos.scriptListings.listPage({ user_id: alice.id }, '-created_at', {
    page: 1,
    per_page: 20,
  });
  t.strictSame(offset.items, expected, 'offset page: the rows without their total');
  const keyset = await repos.scriptListings.listAfter({ user_id: alice.id }, '-created_at', null, 20);
  t.strictSame(keyset.items, expected, 'keyset page: the rows without their sort key');
  t.strictSame(Object.keys(offset.items[0] ?? {}), Object.keys(byId[0] ?? {}), 'the same columns, in order');
});
