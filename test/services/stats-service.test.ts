/**
 * StatsService over a database of its own whose content the test knows: each
 * statistic answers from it, and the defaults the API relies on (top 10 users, the
 * first page of 20 counts) apply when the request leaves them out.
 */
import t from 'tap';
import { PER_PAGE_DEFAULT } from '../../src/domain/paging.ts';
import type { User } from '../../src/domain/user.ts';
import { StatsService, TOP_USERS_DEFAULT } from '../../src/services/stats-service.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser, startRun } from '../helpers/fixtures.ts';

const { repos } = await testDatabase(t);
const stats = new StatsService(repos);

// Twelve users; user i keeps i scripts (0 … 11), so the top users are in a known order.
const users: User[] = [];
const scriptIds: number[] = [];
for (let i = 0; i < 12; i++) {
  const user = await makeUser(repos, { username: `stats_${String(i).padStart(2, '0')}_${process.pid}` });
  for (let s = 0; s < i; s++) scriptIds.push((await makeScript(repos, user.id)).id);
  users.push(user);
}
const SCRIPTS = (11 * 12) / 2;
// One run that completed in 2 s, one still running.
const finished = await startRun(repos, scriptIds[0]!);
await repos.outcomes.complete(finished.id, { exit_code: 0, execution_time_seconds: 2, memory_usage_mb: 1 });
await startRun(repos, scriptIds[1]!);

t.test('script statistics count what the database holds', async (t) => {
  t.same(await stats.scripts(), {
    total_scripts: SCRIPTS,
    running_scripts: 1,
    by_status: { uploaded: SCRIPTS - 2, queued: 0, running: 1, completed: 1, failed: 0, cancelled: 0 },
    total_size_mb: 0.01, // 66 scripts of 100 bytes, in MB to two decimals
    avg_execution_time: 2,
    uploads_last_7_days: SCRIPTS,
  });
  t.same(
    (await stats.scriptsByStatus()).map((r) => [r.status, r.count, r.avg_time]),
    [
      ['uploaded', SCRIPTS - 2, null],
      ['queued', 0, null],
      ['running', 1, null],
      ['completed', 1, 2],
      ['failed', 0, null],
      ['cancelled', 0, null],
    ],
  );
  t.same(await stats.performance(), { avg_time: 2, max_time: 2, min_time: 2, total_scripts: 1 });
});

t.test('user statistics count what the database holds', async (t) => {
  t.same(await stats.users(), {
    total: 12,
    active: 12,
    verified: 0,
    ibkr_connected: 0,
    by_provider: { email: 12, google: 0 },
    registrations_last_30_days: 12,
  });
  t.same(
    (await stats.usersByProvider()).map((p) => [p.auth_provider, p.user_count]),
    [
      ['email', 12],
      ['google', 0],
    ],
  );
});

t.test(
  `topUsers: the ${TOP_USERS_DEFAULT} users with the most scripts by default, or as many as asked`,
  async (t) => {
    const top = await stats.topUsers();
    t.equal(top.length, TOP_USERS_DEFAULT);
    t.same(
      top.map((u) => [u.user_id, u.script_count]),
      users
        .slice(2)
        .reverse()
        .map((u, i) => [u.id, 11 - i]),
      'most scripts first',
    );
    t.same(
      (await stats.topUsers(2)).map((u) => u.user_id),
      [users[11]!.id, users[10]!.id],
    );
  },
);

t.test('userScriptCounts: the first page by default, zero counts included', async (t) => {
  const { items, ...first } = await stats.userScriptCounts({});
  t.same(first, { total: 12, page: 1, per_page: PER_PAGE_DEFAULT, pages: 1 });
  t.equal(items.length, 12, 'every user, those without scripts too');
  t.ok(
    items.some((u) => u.user_id === users[0]!.id && u.script_count === 0),
    'a user without scripts counts 0',
  );
  const paged = await stats.userScriptCounts({ page: 3, per_page: 5 });
  t.same({ ...paged, items: paged.items.length }, { items: 2, total: 12, page: 3, per_page: 5, pages: 3 });
});
