import t from 'tap';
import { testDatabase } from '../helpers/db.js';
import { makeScript, makeUser } from '../helpers/fixtures.js';

t.test('smoke', async (t) => {
  const { repos } = await testDatabase(t);
  const u = await makeUser(repos);
  const s = await makeScript(repos, u.id);
  t.equal(typeof u.id, 'number');
  const page = await repos.scripts.listPage({ user_id: u.id }, '-created_at', { page: 1, per_page: 10 });
  t.equal(page.total, 1);
  t.same(page.items[0], s);
  const q = await repos.executions.queue(s.id, { maxActive: 5 });
  t.equal(q.status, 'queued');
  const r = await repos.executions.startExecution(s.id);
  t.equal(r.status, 'running');
  await t.rejects(repos.executions.startExecution(s.id), { code: 'INVALID_STATE' });
  const c = await repos.executions.complete(s.id, {
    exit_code: 0,
    execution_time_seconds: 1.23456,
    memory_usage_mb: 12.345,
  });
  t.equal(c.execution_time_seconds, 1.235);
  t.equal(c.memory_usage_mb, 12.35);
  console.log(
    await repos.stats.scriptStats(),
    await repos.stats.userStats(),
    await repos.stats.scriptsByStatus(),
  );
  const cp = await repos.scripts.listAfter({}, '-created_at', null, 10);
  t.equal(cp.items.length, 1);
  const w = await repos.users.findWithScripts(u.id);
  t.ok(w?.scripts[0]?.created_at instanceof Date);
});
