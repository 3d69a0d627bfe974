/**
 * RunRepository.tryQueue / queue: a queued run and the script's summary in one
 * statement, the per-user cap, one live run per script under concurrency, and
 * queueing inside a caller's transaction (the scheduler's case).
 */
import t from 'tap';
import { InvalidStateError, NotFoundError, TooManyRunningError } from '../../src/domain/errors.ts';
import { RunRepository } from '../../src/repositories/run-repository.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser } from '../helpers/fixtures.ts';

t.test('queue inserts a queued run and updates the summary in the same statement', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const run = await repos.runs.queue(script.id, { maxActive: 5 });
  t.match(run, {
    script_id: script.id,
    user_id: user.id,
    trigger: 'manual',
    schedule_id: null,
    status: 'queued',
    script_sha256: script.sha256,
    exit_code: null,
    cpu_time_seconds: null,
    log_bytes: 0,
    log_truncated: false,
    started_at: null,
    completed_at: null,
  });
  t.ok(run.queued_at instanceof Date);
  t.same(await repos.runs.getById(run.id), run, 'read back the same');
  const [summary] = await repos.db.sql<{ status: string; last_run_id: number; run_count: number }[]>`
    select status, last_run_id, run_count from scripts where id = ${script.id}
  `;
  t.same(summary, { status: 'queued', last_run_id: run.id, run_count: 1 });
});

t.test('refusals: someone else’s script, a live run, the per-user cap', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const other = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  t.same(await repos.runs.tryQueue(script.id, { ownerId: other.id, maxActive: 5 }), { refused: 'not_found' });
  t.same(await repos.runs.tryQueue(2 ** 40, { maxActive: 5 }), { refused: 'not_found' });
  await rejectsWith(t, repos.runs.queue(script.id, { ownerId: other.id, maxActive: 5 }), NotFoundError);
  await repos.runs.queue(script.id, { ownerId: user.id, maxActive: 5 });
  t.same(await repos.runs.tryQueue(script.id, { maxActive: 5 }), { refused: 'live', status: 'queued' });
  await rejectsWith(t, repos.runs.queue(script.id, { maxActive: 5 }), InvalidStateError);
  const second = await makeScript(repos, user.id);
  t.same(await repos.runs.tryQueue(second.id, { maxActive: 1 }), { refused: 'limit', limit: 1 });
  await rejectsWith(t, repos.runs.queue(second.id, { maxActive: 1 }), TooManyRunningError);
  const [count] = await repos.db.sql<{ n: number }[]>`select count(*) as n from script_runs`;
  t.equal(count?.n, 1, 'no refused attempt left a run');
});

t.test('a schedule run carries its trigger and schedule id', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const schedule = await repos.schedules.create({
    script_id: script.id,
    cron: '* * * * *',
    timezone: 'UTC',
    enabled: true,
    next_run_at: new Date(),
  });
  const run = await repos.runs.queue(script.id, {
    maxActive: 5,
    trigger: 'schedule',
    scheduleId: schedule.id,
  });
  t.match(run, { trigger: 'schedule', schedule_id: schedule.id });
});

t.test('concurrent queues of one script: exactly one winner', async (t) => {
  const { repos } = await testDatabase(t, { poolMax: 20 });
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const results = await Promise.all(
    Array.from({ length: 20 }, () => repos.runs.tryQueue(script.id, { maxActive: 100 })),
  );
  t.equal(results.filter((r) => 'run' in r).length, 1, 'one run queued');
  t.equal(results.filter((r) => 'refused' in r && r.refused === 'live').length, 19, 'the others refused');
  const [count] = await repos.db.sql<{ n: number }[]>`select count(*) as n from script_runs`;
  t.equal(count?.n, 1);
});

t.test('concurrent queues of many scripts of one user hold the cap', async (t) => {
  const { repos } = await testDatabase(t, { poolMax: 20 });
  const user = await makeUser(repos);
  const scripts = await Promise.all(Array.from({ length: 12 }, () => makeScript(repos, user.id)));
  const results = await Promise.all(scripts.map((s) => repos.runs.tryQueue(s.id, { maxActive: 3 })));
  t.equal(results.filter((r) => 'run' in r).length, 3);
  t.equal(results.filter((r) => 'refused' in r && r.refused === 'limit').length, 9);
});

t.test('queueing inside a caller’s transaction commits or rolls back with it', async (t) => {
  const { repos, db } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  await t.rejects(
    repos.transaction(async (tx) => {
      const r = await tx.runs.tryQueue(script.id, { maxActive: 5, trigger: 'schedule' });
      t.ok('run' in r, 'queued inside');
      throw new Error('the schedule could not be advanced');
    }),
    /could not be advanced/,
  );
  t.equal(await repos.runs.findById(1), null);
  t.equal((await repos.scripts.getById(script.id)).status, 'uploaded', 'summary rolled back too');
  // A refusal inside a transaction does not spoil it (the queue step is a savepoint).
  const outcome = await db.transaction(async (tx) => {
    const runs = new RunRepository(tx);
    const first = await runs.tryQueue(script.id, { maxActive: 5 });
    const again = await runs.tryQueue(script.id, { maxActive: 5 });
    const [n] = await tx.sql<{ n: number }[]>`select count(*) as n from script_runs`;
    return { first: 'run' in first, again, n: n?.n };
  });
  t.same(outcome, { first: true, again: { refused: 'live', status: 'queued' }, n: 1 });
});
