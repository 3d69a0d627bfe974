import t from 'tap';
import {
  InvalidStateError,
  NotFoundError,
  TooManyRunningError,
  ValidationError,
} from '../../src/domain/errors.js';
import { rejectsWith } from '../helpers/assert.js';
import { testDatabase } from '../helpers/db.js';
import { LEASE, makeScript, makeUser } from '../helpers/fixtures.js';

const ok = { exit_code: 0, execution_time_seconds: 1.5, memory_usage_mb: 20 };

t.test('a run goes uploaded → queued → running → completed and records its metrics', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const queued = await repos.executions.queue(script.id, { maxActive: 5 });
  t.match(queued, { status: 'queued', started_at: null, completed_at: null });
  const running = await repos.executions.startExecution(script.id, LEASE);
  t.equal(running.status, 'running');
  t.ok(running.started_at instanceof Date);
  const done = await repos.executions.complete(script.id, {
    exit_code: 0,
    execution_time_seconds: 2.0004,
    memory_usage_mb: 33.333,
  });
  t.match(done, { status: 'completed', exit_code: 0, execution_time_seconds: 2, memory_usage_mb: 33.33 });
  t.ok(done.completed_at! >= done.started_at!);
});

t.test('re-queueing a finished script clears the previous outcome', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  await repos.executions.queue(script.id, { maxActive: 5 });
  await repos.executions.startExecution(script.id, LEASE);
  await repos.executions.fail(script.id, 'exit code 3', { ...ok, exit_code: 3 });
  const again = await repos.executions.queue(script.id, { maxActive: 5 });
  t.match(again, {
    status: 'queued',
    exit_code: null,
    error_message: null,
    execution_time_seconds: null,
    memory_usage_mb: null,
    started_at: null,
    completed_at: null,
  });
});

t.test('transitions the status machine does not allow are INVALID_STATE and change nothing', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  await rejectsWith(t, repos.executions.startExecution(script.id, LEASE), InvalidStateError, {
    current: 'uploaded',
  });
  await rejectsWith(t, repos.executions.complete(script.id, ok), InvalidStateError);
  await rejectsWith(t, repos.executions.fail(script.id, 'x', ok), InvalidStateError);
  await rejectsWith(t, repos.executions.cancel(script.id), InvalidStateError, { current: 'uploaded' });
  await repos.executions.queue(script.id, { maxActive: 5 });
  await rejectsWith(t, repos.executions.queue(script.id, { maxActive: 5 }), InvalidStateError, {
    current: 'queued',
  });
  await rejectsWith(t, repos.executions.complete(script.id, ok), InvalidStateError, { current: 'queued' });
  await repos.executions.startExecution(script.id, LEASE);
  await rejectsWith(t, repos.executions.queue(script.id, { maxActive: 5 }), InvalidStateError, {
    current: 'running',
  });
  await repos.executions.complete(script.id, ok);
  await rejectsWith(t, repos.executions.cancel(script.id), InvalidStateError, { current: 'completed' });
  t.equal((await repos.scripts.getById(script.id)).status, 'completed');
  await rejectsWith(t, repos.executions.startExecution(999_999, LEASE), NotFoundError);
  await rejectsWith(t, repos.executions.cancel(999_999), NotFoundError);
  await rejectsWith(t, repos.executions.queue(999_999, { maxActive: 5 }), NotFoundError);
});

t.test('cancel works from queued and from running, for the owner only', async (t) => {
  const { repos } = await testDatabase(t);
  const owner = await makeUser(repos);
  const stranger = await makeUser(repos);
  const a = await makeScript(repos, owner.id);
  const b = await makeScript(repos, owner.id);
  await repos.executions.queue(a.id, { maxActive: 5 });
  await rejectsWith(t, repos.executions.cancel(a.id, stranger.id), NotFoundError);
  const cancelledQueued = await repos.executions.cancel(a.id, owner.id);
  t.match(cancelledQueued, { status: 'cancelled', started_at: null });
  t.ok(cancelledQueued.completed_at instanceof Date);
  await repos.executions.queue(b.id, { maxActive: 5 });
  await repos.executions.startExecution(b.id, LEASE);
  t.equal((await repos.executions.cancel(b.id)).status, 'cancelled');
});

t.test('queue is refused to someone else, and counts only the owner queued + running runs', async (t) => {
  const { repos } = await testDatabase(t);
  const owner = await makeUser(repos);
  const other = await makeUser(repos);
  const scripts = [];
  for (let i = 0; i < 4; i++) scripts.push(await makeScript(repos, owner.id));
  const foreign = await makeScript(repos, other.id);
  await rejectsWith(
    t,
    repos.executions.queue(scripts[0]!.id, { ownerId: other.id, maxActive: 5 }),
    NotFoundError,
  );
  await repos.executions.queue(scripts[0]!.id, { ownerId: owner.id, maxActive: 2 });
  await repos.executions.queue(scripts[1]!.id, { ownerId: owner.id, maxActive: 2 });
  await repos.executions.startExecution(scripts[1]!.id, LEASE);
  await rejectsWith(t, repos.executions.queue(scripts[2]!.id, { maxActive: 2 }), TooManyRunningError, {
    limit: 2,
  });
  t.equal((await repos.scripts.getById(scripts[2]!.id)).status, 'uploaded', 'refused without a change');
  t.equal(
    (await repos.executions.queue(foreign.id, { maxActive: 2 })).status,
    'queued',
    'other users are not counted',
  );
  await repos.executions.complete(scripts[1]!.id, ok);
  t.equal(
    (await repos.executions.queue(scripts[2]!.id, { maxActive: 2 })).status,
    'queued',
    'a slot freed up',
  );
});

t.test('the per-user cap holds when many queue requests arrive at once', async (t) => {
  const { repos } = await testDatabase(t, { poolMax: 20 });
  const maxActive = 5;
  for (let round = 0; round < 5; round++) {
    const user = await makeUser(repos);
    const scripts = [];
    for (let i = 0; i < 15; i++) scripts.push(await makeScript(repos, user.id));
    const results = await Promise.allSettled(
      scripts.map((s) => repos.executions.queue(s.id, { ownerId: user.id, maxActive })),
    );
    const won = results.filter((r) => r.status === 'fulfilled').length;
    const capped = results.filter(
      (r) => r.status === 'rejected' && r.reason instanceof TooManyRunningError,
    ).length;
    t.same([won, capped], [maxActive, 15 - maxActive], `round ${round}: exactly ${maxActive} queued`);
    const active = await repos.scripts.listPage({ user_id: user.id, status: 'queued' }, '-created_at', {
      page: 1,
      per_page: 50,
    });
    t.equal(active.total, maxActive, 'and the table agrees');
  }
});

t.test(
  '50 concurrent startExecution calls on one queued script: exactly one wins, every round',
  async (t) => {
    const { repos } = await testDatabase(t, { poolMax: 25 });
    const user = await makeUser(repos);
    for (let round = 0; round < 20; round++) {
      const script = await makeScript(repos, user.id);
      await repos.executions.queue(script.id, { maxActive: 100 });
      const results = await Promise.allSettled(
        Array.from({ length: 50 }, () => repos.executions.startExecution(script.id, LEASE)),
      );
      const winners = results.filter((r) => r.status === 'fulfilled');
      const losers = results.filter((r) => r.status === 'rejected' && r.reason instanceof InvalidStateError);
      if (winners.length !== 1 || losers.length !== 49) {
        t.fail(`round ${round}: ${winners.length} winners, ${losers.length} invalid-state losers`);
        return;
      }
      await repos.executions.complete(script.id, ok);
    }
    t.pass('20 rounds, one winner each, 49 INVALID_STATE each');
  },
);

t.test('metrics are validated before any write', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  await repos.executions.queue(script.id, { maxActive: 5 });
  await repos.executions.startExecution(script.id, LEASE);
  for (const bad of [
    { ...ok, execution_time_seconds: -1 },
    { ...ok, memory_usage_mb: -0.5 },
    { ...ok, execution_time_seconds: Number.NaN },
    { ...ok, execution_time_seconds: 1e12 },
  ])
    await rejectsWith(t, repos.executions.complete(script.id, bad), ValidationError);
  t.equal((await repos.scripts.getById(script.id)).status, 'running');
});

t.test(
  'claim takes the oldest queued scripts, marks them running with a lease, skips the rest',
  async (t) => {
    const { repos } = await testDatabase(t);
    const user = await makeUser(repos);
    const a = await makeScript(repos, user.id);
    const b = await makeScript(repos, user.id);
    const c = await makeScript(repos, user.id);
    for (const s of [b, a, c]) await repos.executions.queue(s.id, { maxActive: 10 });
    const lease = { executorId: 'exec-1', seconds: 30 };
    const first = await repos.executions.claim(lease, 2);
    t.same(
      first.map((r) => r.id).sort((x, y) => x - y),
      [a.id, b.id].sort((x, y) => x - y),
      'the two queued first (b, then a), not c',
    );
    t.match(first[0], { user_id: user.id, file_extension: '.py', file_path: /^\/nonexistent\// });
    t.equal((await repos.scripts.getById(b.id)).status, 'running');
    t.same(
      (await repos.executions.claim(lease, 5)).map((r) => r.id),
      [c.id],
    );
    t.same(await repos.executions.claim(lease, 5), [], 'nothing left');
    t.same(await repos.executions.queueDepth(), { queued: 0, running: 3 });
  },
);

t.test('claim skips the ids it is told to exclude (runs its executor is still finishing)', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const finishing = await makeScript(repos, user.id);
  const other = await makeScript(repos, user.id);
  for (const s of [finishing, other]) await repos.executions.queue(s.id, { maxActive: 10 });
  const lease = { executorId: 'exec-1', seconds: 30 };
  t.same(
    (await repos.executions.claim(lease, 5, [finishing.id])).map((r) => r.id),
    [other.id],
  );
  t.equal((await repos.scripts.getById(finishing.id)).status, 'queued', 'left in the queue');
  t.same(
    (await repos.executions.claim({ executorId: 'exec-2', seconds: 30 }, 5)).map((r) => r.id),
    [finishing.id],
    'another executor takes it',
  );
});

t.test(
  'failUnstarted fails the executor’s running rows except those it keeps, and nobody else’s',
  async (t) => {
    const { repos } = await testDatabase(t);
    const user = await makeUser(repos);
    const scripts = [];
    for (let i = 0; i < 4; i++) scripts.push(await makeScript(repos, user.id));
    const [started, lost, theirs, done] = scripts.map((s) => s.id) as [number, number, number, number];
    for (const id of [started, lost, done]) await repos.executions.queue(id, { maxActive: 10 });
    const mine = { executorId: 'exec-1', seconds: 30 };
    t.equal((await repos.executions.claim(mine, 3)).length, 3);
    await repos.executions.complete(done, ok, 'exec-1');
    await repos.executions.queue(theirs, { maxActive: 10 });
    await repos.executions.claim({ executorId: 'exec-2', seconds: 30 }, 1);

    t.same(await repos.executions.failUnstarted('exec-1', [started]), [lost]);
    t.match(await repos.scripts.getById(lost), {
      status: 'failed',
      error_message: /did not start it; the script did not run/,
      exit_code: null,
      execution_time_seconds: null,
      memory_usage_mb: null,
    });
    t.equal((await repos.scripts.getById(started)).status, 'running', 'a run it started is kept');
    t.equal((await repos.scripts.getById(theirs)).status, 'running', 'another executor’s run is untouched');
    t.equal((await repos.scripts.getById(done)).status, 'completed', 'a finished run is untouched');
    t.same(await repos.executions.failUnstarted('exec-1', [started]), [], 'a second call finds nothing');
  },
);

t.test(
  'leases: renewal answers what is still held; lapsed leases are failed with their output',
  async (t) => {
    const { repos, db } = await testDatabase(t);
    const user = await makeUser(repos);
    const mine = await makeScript(repos, user.id);
    const cancelled = await makeScript(repos, user.id);
    for (const s of [mine, cancelled]) await repos.executions.queue(s.id, { maxActive: 10 });
    const lease = { executorId: 'exec-1', seconds: 30 };
    await repos.executions.claim(lease, 2);
    await repos.executions.cancel(cancelled.id);
    t.same(await repos.executions.renewLeases([mine.id, cancelled.id], lease), [mine.id]);
    t.same(await repos.executions.renewLeases([mine.id], { executorId: 'someone-else', seconds: 30 }), []);
    t.same(await repos.executions.renewLeases([], lease), []);
    t.equal(await repos.executions.appendLog(mine.id, 'exec-1', 'partial output\n'), true);
    t.same(await repos.executions.failExpiredLeases(), [], 'nothing lapsed yet');
    const sql = db.sql;
    await db.many(
      'test.lapse',
      sql`update scripts set lease_expires_at = now() - interval '1 second' where id = ${mine.id}`,
    );
    t.same(await repos.executions.failExpiredLeases(), [mine.id]);
    const failed = await repos.scripts.getById(mine.id);
    t.match(failed, { status: 'failed', error_message: /stopped renewing its lease/ });
    t.same(await repos.executions.readLogs(mine.id), { status: 'failed', logs: 'partial output\n' });
  },
);

t.test('appendLog and the finishing statement: output is folded into execution_logs once', async (t) => {
  const { repos, db } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  await repos.executions.queue(script.id, { maxActive: 10 });
  await repos.executions.startExecution(script.id, LEASE);
  t.equal(await repos.executions.appendLog(script.id, LEASE.executorId, 'one\n'), true);
  t.equal(
    await repos.executions.appendLog(script.id, LEASE.executorId, ''),
    true,
    'nothing to write is fine',
  );
  t.equal(await repos.executions.appendLog(script.id, 'not-the-owner', 'x\n'), false);
  t.equal(await repos.executions.appendLog(script.id, LEASE.executorId, 'two\n'), true);
  const following = await repos.executions.followLogs(script.id, 0);
  t.match(following, { status: 'running', final: null });
  t.same(
    following.chunks.map((c) => c.data),
    ['one\n', 'two\n'],
  );
  const after = await repos.executions.followLogs(script.id, following.chunks[0]!.id);
  t.same(
    after.chunks.map((c) => c.data),
    ['two\n'],
  );
  await rejectsWith(t, repos.executions.complete(script.id, ok, 'not-the-owner'), InvalidStateError);
  await repos.executions.complete(script.id, ok, LEASE.executorId);
  const sql = db.sql;
  t.same(
    await db.one(
      'test.logs',
      sql`select execution_logs, (select count(*) from script_log_chunks) as chunks from scripts`,
    ),
    {
      execution_logs: 'one\ntwo\n',
      chunks: 0,
    },
  );
  t.equal(
    await repos.executions.appendLog(script.id, LEASE.executorId, 'late\n'),
    false,
    'nothing after the end',
  );
  t.match(await repos.executions.followLogs(script.id, 0), {
    status: 'completed',
    chunks: [],
    final: 'one\ntwo\n',
  });
  const owner = await makeUser(repos);
  await rejectsWith(t, repos.executions.readLogs(script.id, owner.id), NotFoundError);
  await rejectsWith(t, repos.executions.followLogs(script.id, 0, owner.id), NotFoundError);
});

t.test(
  'recordCancelledRun adds the killed run’s measurements and last output, once, for its executor',
  async (t) => {
    const { repos } = await testDatabase(t);
    const user = await makeUser(repos);
    const script = await makeScript(repos, user.id);
    await repos.executions.queue(script.id, { maxActive: 10 });
    await repos.executions.startExecution(script.id, LEASE);
    await repos.executions.appendLog(script.id, LEASE.executorId, 'before\n');
    await repos.executions.cancel(script.id);
    t.equal(await repos.executions.recordCancelledRun(script.id, 'not-the-owner', ok), false);
    t.equal(await repos.executions.recordCancelledRun(script.id, LEASE.executorId, ok, 'after\n'), true);
    t.match(await repos.scripts.getById(script.id), {
      status: 'cancelled',
      exit_code: 0,
      execution_time_seconds: 1.5,
      memory_usage_mb: 20,
    });
    t.equal((await repos.executions.readLogs(script.id)).logs, 'before\nafter\n');
    const queuedAgain = await repos.executions.queue(script.id, { maxActive: 10 });
    t.equal(queuedAgain.exit_code, null, 'a new run starts clean');
    t.equal((await repos.executions.readLogs(script.id)).logs, '', 'and without the old output');
  },
);
