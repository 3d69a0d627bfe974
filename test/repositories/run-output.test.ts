/**
 * RunOutputRepository.appendLog stores each batch of a run at most once (issue 7
 * item 11): an executor that lost the answer to an append sends the same seq again,
 * and that retry neither fails nor adds a second chunk. The primary key itself is
 * broken in raw SQL in test/db/run-constraints.test.ts; this is the repository's
 * `on conflict do nothing` that relies on it.
 */
import t from 'tap';
import { testDatabase } from '../helpers/db.ts';
import { LEASE, makeScript, makeUser, startRun } from '../helpers/fixtures.ts';

t.test('a batch appended again under its seq is not stored twice; the first one stands', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const run = await startRun(repos, script.id);
  const e = LEASE.executorId;
  t.equal(await repos.output.appendLog(run.id, e, 0, 'first\n'), true);
  // The retry carries other text only so that the test sees which one was kept.
  t.equal(await repos.output.appendLog(run.id, e, 0, 'retried\n'), true, 'the retry does not throw');
  t.equal(await repos.output.appendLog(run.id, e, 1, 'second\n'), true);
  t.equal(await repos.output.appendLog(run.id, e, 1, 'second\n'), true, 'a retry of the same text');
  const chunks = await sql<{ seq: number; data: string }[]>`
    select seq, data from run_log_chunks where run_id = ${run.id} order by seq
  `;
  t.same(chunks, [
    { seq: 0, data: 'first\n' },
    { seq: 1, data: 'second\n' },
  ]);
  t.same(await repos.output.readLogs(run.id), { status: 'running', logs: 'first\nsecond\n' }, 'read once');
});

t.test('the same batch appended by many connections at once: one chunk, every call true', async (t) => {
  const { repos, sql } = await testDatabase(t, { poolMax: 10 });
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const run = await startRun(repos, script.id);
  const answers = await Promise.all(
    Array.from({ length: 10 }, () => repos.output.appendLog(run.id, LEASE.executorId, 0, 'once\n')),
  );
  t.same(answers, Array(10).fill(true));
  const [count] = await sql<{ n: number }[]>`
    select count(*)::int as n from run_log_chunks where run_id = ${run.id}
  `;
  t.equal(count?.n, 1);
  t.equal((await repos.output.readLogs(run.id)).logs, 'once\n');
});
