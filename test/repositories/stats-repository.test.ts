import t from 'tap';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser, startRun } from '../helpers/fixtures.ts';

type Repos = Awaited<ReturnType<typeof testDatabase>>['repos'];

async function run(repos: Repos, id: number, seconds: number, outcome: 'complete' | 'fail' | 'start') {
  const started = await startRun(repos, id);
  if (outcome === 'start') return;
  const result = {
    exit_code: outcome === 'complete' ? 0 : 1,
    execution_time_seconds: seconds,
    memory_usage_mb: 5,
  };
  if (outcome === 'complete') await repos.outcomes.complete(started.id, result);
  else await repos.outcomes.fail(started.id, 'exit 1', result);
}

t.test('statistics of an empty database are zeros, never missing keys', async (t) => {
  const { repos } = await testDatabase(t);
  t.same(await repos.stats.scriptStats(), {
    total_scripts: 0,
    running_scripts: 0,
    by_status: { uploaded: 0, queued: 0, running: 0, completed: 0, failed: 0, cancelled: 0 },
    total_size_mb: 0,
    avg_execution_time: null,
    uploads_last_7_days: 0,
  });
  t.same(await repos.stats.performance(), {
    avg_time: null,
    max_time: null,
    min_time: null,
    total_scripts: 0,
  });
  t.same(await repos.stats.userStats(), {
    total: 0,
    active: 0,
    verified: 0,
    ibkr_connected: 0,
    by_provider: { email: 0, google: 0 },
    registrations_last_30_days: 0,
  });
  t.same(await repos.stats.topUsers(10), []);
  t.same(await repos.stats.userScriptCounts({ page: 1, per_page: 10 }), {
    items: [],
    total: 0,
    page: 1,
    per_page: 10,
    pages: 0,
  });
  t.same(
    (await repos.stats.scriptsByStatus()).map((r) => [r.status, r.count]),
    [
      ['uploaded', 0],
      ['queued', 0],
      ['running', 0],
      ['completed', 0],
      ['failed', 0],
      ['cancelled', 0],
    ],
  );
});

t.test('script statistics: counts by status, size, average time, recent uploads', async (t) => {
  const { repos, db } = await testDatabase(t);
  const user = await makeUser(repos);
  const s = [];
  for (let i = 0; i < 5; i++) s.push(await makeScript(repos, user.id, { file_size: 1048576 }));
  await run(repos, s[0]!.id, 2, 'complete');
  await run(repos, s[1]!.id, 4, 'complete');
  await run(repos, s[2]!.id, 9, 'fail');
  await run(repos, s[3]!.id, 0, 'start');
  const sql = db.sql;
  await db.many(
    'test.age',
    sql`update scripts set created_at = now() - interval '8 days' where id = ${s[4]!.id}`,
  );

  t.same(await repos.stats.scriptStats(), {
    total_scripts: 5,
    running_scripts: 1,
    by_status: { uploaded: 1, queued: 0, running: 1, completed: 2, failed: 1, cancelled: 0 },
    total_size_mb: 5,
    avg_execution_time: 5,
    uploads_last_7_days: 4,
  });
  const byStatus = await repos.stats.scriptsByStatus();
  t.same(
    byStatus.find((r) => r.status === 'completed'),
    { status: 'completed', count: 2, avg_time: 3, total_size: 2097152 },
  );
  t.same(
    byStatus.find((r) => r.status === 'queued'),
    { status: 'queued', count: 0, avg_time: null, total_size: 0 },
  );
  t.same(await repos.stats.performance(), { avg_time: 3, max_time: 4, min_time: 2, total_scripts: 2 });
});

t.test('user statistics: totals, active, verified, IBKR, by provider, recent registrations', async (t) => {
  const { repos, db } = await testDatabase(t);
  const a = await makeUser(repos);
  const b = await makeUser(repos);
  await makeUser(repos, {
    auth_provider: 'google',
    google_id: 'g1',
    hashed_password: null,
    is_verified: true,
  });
  await repos.users.deactivate(a.id);
  await repos.ibkr.link(b.id, {
    ibkr_user_id: 'U9',
    access_token_encrypted: null,
    refresh_token_encrypted: null,
    token_expires_at: null,
  });
  const sql = db.sql;
  await db.many('test.age', sql`update users set created_at = now() - interval '40 days' where id = ${a.id}`);
  t.same(await repos.stats.userStats(), {
    total: 3,
    active: 2,
    verified: 1,
    ibkr_connected: 1,
    by_provider: { email: 2, google: 1 },
    registrations_last_30_days: 2,
  });
  const byProvider = await repos.stats.usersByProvider();
  t.same(
    byProvider.map((r) => [r.auth_provider, r.user_count]),
    [
      ['email', 2],
      ['google', 1],
    ],
  );
  t.ok(byProvider[0]?.avg_created_at instanceof Date);
});

t.test('top users by script count, and every user with its count (zero included)', async (t) => {
  const { repos } = await testDatabase(t);
  const none = await makeUser(repos, { username: 'none' });
  const one = await makeUser(repos, { username: 'one' });
  const three = await makeUser(repos, { username: 'three' });
  await makeScript(repos, one.id);
  for (let i = 0; i < 3; i++) await makeScript(repos, three.id);
  t.same(await repos.stats.topUsers(10), [
    { user_id: three.id, username: 'three', script_count: 3 },
    { user_id: one.id, username: 'one', script_count: 1 },
  ]);
  t.same(await repos.stats.topUsers(1), [{ user_id: three.id, username: 'three', script_count: 3 }]);
  const page = await repos.stats.userScriptCounts({ page: 1, per_page: 2 });
  t.same(page, {
    items: [
      { user_id: none.id, username: 'none', email: none.email, script_count: 0 },
      { user_id: one.id, username: 'one', email: one.email, script_count: 1 },
    ],
    total: 3,
    page: 1,
    per_page: 2,
    pages: 2,
  });
  t.same(
    (await repos.stats.userScriptCounts({ page: 2, per_page: 2 })).items.map((r) => r.script_count),
    [3],
  );
});

t.test('the database reports its version, migrations and this process connections', async (t) => {
  const { repos } = await testDatabase(t);
  const status = await repos.system.status();
  t.match(status.server_version, /^\d+/);
  t.ok(status.applied_migrations.length >= 1);
  t.match(status.applied_migrations[0], /users-and-scripts$/);
  t.ok(status.connections >= 1);
  t.ok(status.idle_connections <= status.connections);
  await repos.system.ping();
});
