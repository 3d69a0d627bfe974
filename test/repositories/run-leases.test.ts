/**
 * The executor’s side of runs (RunLeaseRepository, `repos.leases`, over script_runs): claims (fair
 * between users, SKIP LOCKED), leases, output batches stored once, the records of
 * how runs end, and the script's latest-run summary kept by the same statements.
 * Also: history survives re-runs, and run 1's output is readable after run 3.
 */
import t from 'tap';
import { InvalidStateError, NotFoundError, ValidationError } from '../../src/domain/errors.ts';
import type { Repositories } from '../../src/repositories/index.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';
import { LEASE, makeScript, makeUser, queueRun, startRun } from '../helpers/fixtures.ts';

const ok = { exit_code: 0, execution_time_seconds: 1.5, memory_usage_mb: 20 };

async function summaryOf(repos: Repositories, id: number) {
  return repos.scripts.getById(id);
}

t.test(
  'a run goes queued → running → completed; the script summary follows in the same statements',
  async (t) => {
    const { repos } = await testDatabase(t);
    const user = await makeUser(repos);
    const script = await makeScript(repos, user.id);
    const run = await startRun(repos, script.id);
    t.match(run, { status: 'running' });
    t.notOk('executor_id' in run, 'no executor columns in a run');
    t.ok(run.started_at instanceof Date);
    t.match(await summaryOf(repos, script.id), { status: 'running', last_run_id: run.id, run_count: 1 });
    t.equal(await repos.output.appendLog(run.id, LEASE.executorId, 0, 'out\n'), true);
    const done = await repos.outcomes.complete(run.id, {
      exit_code: 0,
      execution_time_seconds: 2.0004,
      memory_usage_mb: 33.333,
      cpu_time_seconds: 1.23456,
      log_truncated: true,
    });
    t.match(done, {
      status: 'completed',
      exit_code: 0,
      execution_time_seconds: 2,
      memory_usage_mb: 33.33,
      cpu_time_seconds: 1.235,
      log_bytes: 4,
      log_truncated: true,
    });
    t.match(await summaryOf(repos, script.id), {
      status: 'completed',
      exit_code: 0,
      execution_time_seconds: 2,
      memory_usage_mb: 33.33,
      started_at: done.started_at,
      completed_at: done.completed_at,
    });
  },
);

t.test('history survives re-runs: run 1’s output and outcome are readable after run 3', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const ids: number[] = [];
  for (let i = 1; i <= 3; i++) {
    const run = await startRun(repos, script.id);
    await repos.output.appendLog(run.id, LEASE.executorId, 0, `run ${i}\n`);
    if (i === 2) await repos.outcomes.fail(run.id, 'exit code 2', { ...ok, exit_code: 2 });
    else await repos.outcomes.complete(run.id, { ...ok, exit_code: 0, execution_time_seconds: i });
    ids.push(run.id);
  }
  t.same((await repos.output.readLogs(ids[0]!)).logs, 'run 1\n');
  t.match(await repos.runs.getById(ids[0]!), { status: 'completed', execution_time_seconds: 1 });
  t.match(await repos.runs.getById(ids[1]!), {
    status: 'failed',
    exit_code: 2,
    error_message: 'exit code 2',
  });
  t.match(await summaryOf(repos, script.id), {
    status: 'completed',
    execution_time_seconds: 3,
    last_run_id: ids[2],
    run_count: 3,
  });
  t.same(
    (await repos.output.readScriptLogs(script.id)).logs,
    'run 3\n',
    'the script’s logs are its latest run’s',
  );
  const page = await repos.runs.list({ script_id: script.id }, null, 2);
  t.same(
    page.items.map((r) => r.id),
    [ids[2], ids[1]],
    'newest first',
  );
  const next = await repos.runs.list({ script_id: script.id }, page.next_cursor, 2);
  t.same(
    next.items.map((r) => r.id),
    [ids[0]],
  );
  t.equal(next.next_cursor, null);
  // A new run clears the summary's outcome, not the history.
  await queueRun(repos, script.id);
  t.match(await summaryOf(repos, script.id), { status: 'queued', exit_code: null, run_count: 4 });
  t.equal((await repos.output.readLogs(ids[0]!)).logs, 'run 1\n');
});

t.test('transitions the status machine does not allow are INVALID_STATE and change nothing', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const run = await queueRun(repos, script.id);
  await rejectsWith(t, repos.outcomes.complete(run.id, ok), InvalidStateError, { current: 'queued' });
  await rejectsWith(t, repos.outcomes.fail(run.id, 'x', ok), InvalidStateError);
  await repos.leases.start(run.id, LEASE);
  await rejectsWith(t, repos.leases.start(run.id, LEASE), InvalidStateError, { current: 'running' });
  await repos.outcomes.complete(run.id, ok);
  await rejectsWith(t, repos.runs.cancel(run.id), InvalidStateError, { current: 'completed' });
  await rejectsWith(t, repos.runs.cancelScript(script.id), InvalidStateError, { current: 'completed' });
  await rejectsWith(t, repos.outcomes.complete(2 ** 40, ok), NotFoundError);
  t.equal((await summaryOf(repos, script.id)).status, 'completed');
});

t.test('cancel: a run or a script’s live run, queued or running, for the owner only', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const other = await makeUser(repos);
  const a = await makeScript(repos, user.id);
  const b = await makeScript(repos, user.id);
  const queued = await queueRun(repos, a.id);
  await rejectsWith(t, repos.runs.cancel(queued.id, other.id), NotFoundError);
  t.match(await repos.runs.cancel(queued.id, user.id), { status: 'cancelled', error_message: 'cancelled' });
  t.match(await summaryOf(repos, a.id), { status: 'cancelled' });
  const running = await startRun(repos, b.id);
  await rejectsWith(t, repos.runs.cancelScript(b.id, other.id), NotFoundError);
  const script = await repos.runs.cancelScript(b.id, user.id);
  t.match(script, { id: b.id, status: 'cancelled', last_run_id: running.id });
  t.match(await repos.runs.getById(running.id), { status: 'cancelled' });
  await rejectsWith(t, repos.runs.cancelScript(b.id), InvalidStateError, { current: 'cancelled' });
  const fresh = await makeScript(repos, user.id);
  await rejectsWith(t, repos.runs.cancelScript(fresh.id), InvalidStateError, { current: 'uploaded' });
});

t.test('50 concurrent starts of one queued run: exactly one wins', async (t) => {
  const { repos } = await testDatabase(t, { poolMax: 25 });
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const run = await queueRun(repos, script.id);
  const results = await Promise.allSettled(
    Array.from({ length: 50 }, () => repos.leases.start(run.id, LEASE)),
  );
  t.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  t.equal(results.filter((r) => r.status === 'rejected' && r.reason instanceof InvalidStateError).length, 49);
});

t.test('metrics are validated before any write', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const run = await startRun(repos, script.id);
  for (const bad of [
    { ...ok, execution_time_seconds: -1 },
    { ...ok, memory_usage_mb: -0.5 },
    { ...ok, execution_time_seconds: Number.NaN },
    { ...ok, execution_time_seconds: 1e12 },
  ])
    await rejectsWith(t, repos.outcomes.complete(run.id, bad), ValidationError);
  t.equal((await repos.runs.getById(run.id)).status, 'running');
});

t.test('claim takes the oldest queued runs of one user, with a lease', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const a = await makeScript(repos, user.id);
  const b = await makeScript(repos, user.id);
  const c = await makeScript(repos, user.id);
  const runs = [];
  for (const s of [b, a, c]) runs.push(await queueRun(repos, s.id));
  const lease = { executorId: 'exec-1', seconds: 30 };
  const first = await repos.leases.claim(lease, 2);
  t.same(
    first.map((r) => r.id),
    [runs[0]!.id, runs[1]!.id],
    'the two queued first',
  );
  t.match(first[0], {
    script_id: b.id,
    user_id: user.id,
    file_extension: '.py',
  });
  t.equal((await summaryOf(repos, b.id)).status, 'running');
  t.same(
    (await repos.leases.claim(lease, 5)).map((r) => r.id),
    [runs[2]!.id],
  );
  t.same(await repos.leases.claim(lease, 5), [], 'nothing left');
  t.same(await repos.runs.queueDepth(), { queued: 0, running: 3 });
});

t.test('fair claim: user A queues 20, user B 1 after them; B’s run starts before A’s third', async (t) => {
  const { repos } = await testDatabase(t);
  const alice = await makeUser(repos);
  const bob = await makeUser(repos);
  const aliceRuns: number[] = [];
  for (let i = 0; i < 20; i++)
    aliceRuns.push((await queueRun(repos, (await makeScript(repos, alice.id)).id, 20)).id);
  const bobRun = (await queueRun(repos, (await makeScript(repos, bob.id)).id, 20)).id;
  // One slot at a time, as a busy executor frees them (A's runs keep running).
  const order: number[] = [];
  for (let i = 0; i < 4; i++) {
    const [claimed] = await repos.leases.claim({ executorId: 'exec-1', seconds: 30 }, 1);
    order.push(claimed!.id);
  }
  t.same(order, [aliceRuns[0], bobRun, aliceRuns[1], aliceRuns[2]], 'A, then B (fewest running), then A');
  t.ok(order.indexOf(bobRun) < order.indexOf(aliceRuns[2]!), 'B before A’s third');

  // All free slots in one statement: shared out by turn, not first come first served.
  const { repos: r2 } = await testDatabase(t);
  const a2 = await makeUser(r2);
  const b2 = await makeUser(r2);
  const c2 = await makeUser(r2);
  const first: number[] = [];
  for (let i = 0; i < 5; i++) first.push((await queueRun(r2, (await makeScript(r2, a2.id)).id, 20)).id);
  const b2run = (await queueRun(r2, (await makeScript(r2, b2.id)).id, 20)).id;
  const c2run = (await queueRun(r2, (await makeScript(r2, c2.id)).id, 20)).id;
  const claimed = await r2.leases.claim({ executorId: 'exec-2', seconds: 30 }, 4);
  t.same(
    claimed.map((c) => c.id).sort((x, y) => x - y),
    [first[0]!, first[1]!, b2run, c2run].sort((x, y) => x - y),
    'each user’s first run, then A’s second',
  );
});

t.test(
  'failUnstarted fails the executor’s running runs except those it keeps, and nobody else’s',
  async (t) => {
    const { repos } = await testDatabase(t);
    const user = await makeUser(repos);
    const scripts = [];
    for (let i = 0; i < 4; i++) scripts.push((await makeScript(repos, user.id)).id);
    const [started, lost, theirs, done] = scripts as [number, number, number, number];
    const runOf = new Map<number, number>();
    for (const id of [started, lost, done]) runOf.set(id, (await queueRun(repos, id)).id);
    const mine = { executorId: 'exec-1', seconds: 30 };
    t.equal((await repos.leases.claim(mine, 3)).length, 3);
    await repos.outcomes.complete(runOf.get(done)!, ok, 'exec-1');
    runOf.set(theirs, (await queueRun(repos, theirs)).id);
    await repos.leases.claim({ executorId: 'exec-2', seconds: 30 }, 1);
    t.same(await repos.leases.failUnstarted('exec-1', [runOf.get(started)!]), [runOf.get(lost)]);
    t.match(await summaryOf(repos, lost), {
      status: 'failed',
      error_message: /did not start it; the script did not run/,
      exit_code: null,
    });
    t.equal((await summaryOf(repos, started)).status, 'running', 'a run it started is kept');
    t.equal((await summaryOf(repos, theirs)).status, 'running', 'another executor’s run is untouched');
    t.equal((await summaryOf(repos, done)).status, 'completed', 'a finished run is untouched');
    t.same(
      await repos.leases.failUnstarted('exec-1', [runOf.get(started)!]),
      [],
      'a second call finds nothing',
    );
  },
);

t.test(
  'leases: renewal answers what is still held; lapsed leases are failed with their output',
  async (t) => {
    const { repos, sql } = await testDatabase(t);
    const user = await makeUser(repos);
    const mine = await makeScript(repos, user.id);
    const cancelled = await makeScript(repos, user.id);
    const lease = { executorId: 'exec-1', seconds: 30 };
    const m = await queueRun(repos, mine.id);
    const c = await queueRun(repos, cancelled.id);
    await repos.leases.claim(lease, 2);
    await repos.runs.cancel(c.id);
    t.same(await repos.leases.renewLeases([m.id, c.id], lease), [m.id]);
    t.same(await repos.leases.renewLeases([m.id], { executorId: 'someone-else', seconds: 30 }), []);
    t.same(await repos.leases.renewLeases([], lease), []);
    t.equal(await repos.output.appendLog(m.id, 'exec-1', 0, 'partial output\n'), true);
    t.same(await repos.leases.failExpiredLeases(), [], 'nothing lapsed yet');
    await sql`update script_runs set lease_expires_at = now() - interval '1 second' where id = ${m.id}`;
    t.same(await repos.leases.failExpiredLeases(), [m.id]);
    t.match(await summaryOf(repos, mine.id), {
      status: 'failed',
      error_message: /stopped renewing its lease/,
    });
    t.match(await repos.runs.getById(m.id), { status: 'failed', log_bytes: 15 });
    t.same(await repos.output.readLogs(m.id), { status: 'failed', logs: 'partial output\n' });
  },
);

t.test('output batches: in seq order, each stored once, nothing after the end', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const user = await makeUser(repos);
  const stranger = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const run = await startRun(repos, script.id);
  const e = LEASE.executorId;
  t.equal(await repos.output.appendLog(run.id, e, 0, 'one\n'), true);
  t.equal(await repos.output.appendLog(run.id, e, 0, 'one\n'), true, 'a retried batch (lost answer)');
  t.equal(await repos.output.appendLog(run.id, e, 1, ''), true, 'nothing to write is fine');
  t.equal(await repos.output.appendLog(run.id, 'not-the-owner', 1, 'x\n'), false);
  t.equal(await repos.output.appendLog(run.id, e, 1, 'two\n'), true);
  const following = await repos.output.followLogs(run.id, -1);
  t.match(following, { status: 'running', finished: false });
  t.same(following.chunks, [
    { seq: 0, data: 'one\n' },
    { seq: 1, data: 'two\n' },
  ]);
  t.same((await repos.output.followLogs(run.id, 0)).chunks, [{ seq: 1, data: 'two\n' }]);
  // The last record: batch 1 again (its answer was lost) and batch 2 (never sent).
  await rejectsWith(t, repos.outcomes.complete(run.id, ok, 'not-the-owner'), InvalidStateError);
  const done = await repos.outcomes.complete(run.id, ok, e, [
    { seq: 1, data: 'two\n' },
    { seq: 2, data: 'three\n' },
  ]);
  t.equal(done.log_bytes, 14);
  t.equal((await repos.output.readLogs(run.id)).logs, 'one\ntwo\nthree\n', 'no batch twice');
  const [count] = await sql<
    { n: number }[]
  >`select count(*) as n from run_log_chunks where run_id = ${run.id}`;
  t.equal(count?.n, 3);
  t.equal(await repos.output.appendLog(run.id, e, 3, 'late\n'), false, 'nothing after the end');
  t.match(await repos.output.followLogs(run.id, 2), { status: 'completed', chunks: [], finished: true });
  await rejectsWith(t, repos.output.readLogs(run.id, stranger.id), NotFoundError);
  await rejectsWith(t, repos.output.followLogs(run.id, -1, stranger.id), NotFoundError);
});

t.test(
  'recordCancelledRun adds the killed run’s measurements and last output, once, for its executor',
  async (t) => {
    const { repos } = await testDatabase(t);
    const user = await makeUser(repos);
    const script = await makeScript(repos, user.id);
    const run = await startRun(repos, script.id);
    await repos.output.appendLog(run.id, LEASE.executorId, 0, 'before\n');
    await repos.runs.cancel(run.id);
    t.equal(await repos.outcomes.recordCancelledRun(run.id, 'not-the-owner', ok), false);
    const last = [{ seq: 1, data: 'after\n' }];
    t.equal(await repos.outcomes.recordCancelledRun(run.id, LEASE.executorId, ok, last), true);
    t.equal(
      await repos.outcomes.recordCancelledRun(run.id, LEASE.executorId, ok, last),
      true,
      'again: no duplicate',
    );
    t.match(await summaryOf(repos, script.id), {
      status: 'cancelled',
      exit_code: 0,
      execution_time_seconds: 1.5,
      memory_usage_mb: 20,
    });
    t.equal((await repos.output.readLogs(run.id)).logs, 'before\nafter\n');
    const again = await queueRun(repos, script.id);
    t.equal((await repos.output.readLogs(again.id)).logs, '', 'a new run starts without output');
    t.equal((await repos.output.readLogs(run.id)).logs, 'before\nafter\n', 'the old one keeps its own');
  },
);
