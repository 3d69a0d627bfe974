/**
 * RunService against a real database: who may reach which run (someone else's run or
 * script is not found, an admin reaches all), the listing's permission rules, the
 * output read whole or by its last lines, and following a run's output.
 */
import t from 'tap';
import { ForbiddenError, NotFoundError, ValidationError } from '../../src/domain/errors.ts';
import type { User } from '../../src/domain/user.ts';
import type { Repositories } from '../../src/repositories/index.ts';
import type { Principal } from '../../src/services/auth-service.ts';
import { RunService, tailLines } from '../../src/services/run-service.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';
import { LEASE, makeScript, makeUser, startRun } from '../helpers/fixtures.ts';

const { repos } = await testDatabase(t);
const service = new RunService(repos, 100);

function principal(user: User, role: 'user' | 'admin' = user.role): Principal {
  return { user_id: user.id, role, token_key: Buffer.alloc(32).toString('base64') };
}

/** A new user and its principal. */
async function owner(r: Repositories) {
  const user = await makeUser(r);
  return { user, me: principal(user) };
}

t.test('tailLines keeps the last n lines, with or without a final newline', async (t) => {
  t.equal(tailLines('a\nb\nc\n', undefined), 'a\nb\nc\n', 'no n: the whole text');
  t.equal(tailLines('a\nb\nc\n', 2), 'b\nc\n', 'the final newline is kept');
  t.equal(tailLines('a\nb\nc', 2), 'b\nc', 'no final newline is added');
  t.equal(tailLines('a\nb\n', 10), 'a\nb\n', 'more lines asked than there are: all of them');
  t.equal(tailLines('', 3), '', 'empty output stays empty');
  t.equal(tailLines('\n', 1), '\n', 'one empty line');
  t.equal(tailLines('a\nb\n', 0), '', 'zero lines: nothing');
});

t.test('execute, get and cancel reach only the caller’s own runs; an admin reaches all', async (t) => {
  const { user, me } = await owner(repos);
  const stranger = principal(await makeUser(repos));
  const admin = principal(await makeUser(repos), 'admin');
  const script = await makeScript(repos, user.id);

  await rejectsWith(t, service.execute(stranger, script.id), NotFoundError, { resource: 'script' });
  const run = await service.execute(me, script.id);
  t.match(run, { script_id: script.id, user_id: user.id, status: 'queued', trigger: 'manual' });

  t.equal((await service.get(me, run.id)).id, run.id, 'the owner reads its run');
  t.equal((await service.get(admin, run.id)).id, run.id, 'an admin reads anyone’s run');
  await rejectsWith(t, service.get(stranger, run.id), NotFoundError, { resource: 'run' });

  await rejectsWith(t, service.cancel(stranger, run.id), NotFoundError);
  t.equal((await repos.runs.getById(run.id)).status, 'queued', 'a stranger’s cancel changed nothing');
  const cancelled = await service.cancel(admin, run.id);
  t.equal(cancelled.status, 'cancelled', 'an admin cancels anyone’s run');
  t.equal((await repos.runs.getById(run.id)).status, 'cancelled');
});

t.test('cancelScript cancels the script’s live run and answers the script', async (t) => {
  const { user, me } = await owner(repos);
  const stranger = principal(await makeUser(repos));
  const script = await makeScript(repos, user.id);
  const run = await service.execute(me, script.id);
  await rejectsWith(t, service.cancelScript(stranger, script.id), NotFoundError, { resource: 'script' });
  const answered = await service.cancelScript(me, script.id);
  t.equal(answered.id, script.id, 'the script is answered');
  t.equal(answered.status, 'cancelled');
  t.equal((await repos.runs.getById(run.id)).status, 'cancelled', 'its run is cancelled');
});

t.test('list: own runs by default; others’ only for an admin; user_id and all do not combine', async (t) => {
  const { user, me } = await owner(repos);
  const other = await makeUser(repos);
  const admin = principal(await makeUser(repos), 'admin');
  const mine = await service.execute(me, (await makeScript(repos, user.id)).id);
  const theirs = await service.execute(principal(other), (await makeScript(repos, other.id)).id);

  const own = await service.list(me, {});
  t.same(
    own.items.map((r) => r.id),
    [mine.id],
    'a user sees its own runs only',
  );
  t.equal(own.next_cursor, null);
  t.same(
    (await service.list(me, { user_id: user.id })).items.map((r) => r.id),
    [mine.id],
    'asking for one’s own user_id is allowed',
  );
  await t.rejects(service.list(me, { user_id: other.id }), ForbiddenError, 'another user’s runs: forbidden');
  await t.rejects(service.list(me, { all: true }), ForbiddenError, 'everyone’s runs: forbidden');
  await t.rejects(
    service.list(admin, { all: true, user_id: other.id }),
    { constructor: ValidationError, errors: [{ path: '/all' }] },
    'all with user_id is refused naming all',
  );

  t.same(
    (await service.list(admin, { user_id: other.id })).items.map((r) => r.id),
    [theirs.id],
    'an admin lists one user’s runs',
  );
  const everyone = (await service.list(admin, { all: true, per_page: 100 })).items.map((r) => r.id);
  t.ok(everyone.includes(mine.id) && everyone.includes(theirs.id), 'an admin lists everyone’s runs');
  t.same((await service.list(admin, {})).items, [], 'an admin’s default is its own runs (none)');
});

t.test('list pages by cursor and filters by script and status', async (t) => {
  const { user, me } = await owner(repos);
  const scripts = [await makeScript(repos, user.id), await makeScript(repos, user.id)];
  const runs = [];
  for (const script of scripts) runs.push(await service.execute(me, script.id));
  await service.cancel(me, runs[0]!.id);

  const first = await service.list(me, { per_page: 1 });
  t.equal(first.items.length, 1);
  t.equal(first.items[0]?.id, runs[1]?.id, 'newest first');
  t.type(first.next_cursor, 'string', 'a next page is announced');
  const second = await service.list(me, { per_page: 1, cursor: first.next_cursor! });
  t.same(
    second.items.map((r) => r.id),
    [runs[0]!.id],
    'the cursor gives the next page',
  );
  t.same(
    (await service.list(me, { cursor: '', script_id: scripts[0]!.id })).items.map((r) => r.id),
    [runs[0]!.id],
    'an empty cursor is the first page; script_id filters',
  );
  t.same(
    (await service.list(me, { status: 'queued' })).items.map((r) => r.id),
    [runs[1]!.id],
    'status filters',
  );
});

t.test('listForScript: the script’s runs for its owner or an admin, not found for anyone else', async (t) => {
  const { user, me } = await owner(repos);
  const admin = principal(await makeUser(repos), 'admin');
  const script = await makeScript(repos, user.id);
  const run = await service.execute(me, script.id);
  await makeScript(repos, user.id).then((other) => service.execute(me, other.id));

  const page = await service.listForScript(me, script.id, {});
  t.same(
    page.items.map((r) => r.id),
    [run.id],
    'only this script’s runs',
  );
  t.same(
    (await service.listForScript(admin, script.id, { cursor: '', per_page: 5 })).items.map((r) => r.id),
    [run.id],
    'an admin reads them too',
  );
  await rejectsWith(
    t,
    service.listForScript(principal(await makeUser(repos)), script.id, {}),
    NotFoundError,
    { resource: 'script' },
  );
});

t.test('logs and scriptLogs: the whole output or its last lines; empty before the first run', async (t) => {
  const { user, me } = await owner(repos);
  const stranger = principal(await makeUser(repos));
  const script = await makeScript(repos, user.id);
  t.equal(await service.scriptLogs(me, script.id), '', 'a script that never ran has no output');

  const run = await startRun(repos, script.id);
  t.ok(await repos.output.appendLog(run.id, LEASE.executorId, 0, 'one\ntwo\n'));
  t.ok(await repos.output.appendLog(run.id, LEASE.executorId, 1, 'three\n'));

  t.equal(await service.logs(me, run.id), 'one\ntwo\nthree\n');
  t.equal(await service.logs(me, run.id, 2), 'two\nthree\n');
  t.equal(await service.scriptLogs(me, script.id, 1), 'three\n', 'the script’s latest run');
  await rejectsWith(t, service.logs(stranger, run.id), NotFoundError, { resource: 'run' });
  await rejectsWith(t, service.scriptLogs(stranger, script.id), NotFoundError, { resource: 'script' });
});

t.test('follow: the first state, then only the chunks written since, until the run ends', async (t) => {
  const { user, me } = await owner(repos);
  const script = await makeScript(repos, user.id);
  const run = await startRun(repos, script.id);
  await repos.output.appendLog(run.id, LEASE.executorId, 0, 'first\n');

  const follow = await service.follow(me, run.id);
  t.equal(follow.runId, run.id);
  t.same(follow.first.chunks, [{ seq: 0, data: 'first\n' }]);
  t.equal(follow.first.finished, false);

  t.same((await follow.next()).chunks, [], 'nothing new yet');
  await repos.output.appendLog(run.id, LEASE.executorId, 1, 'second\n');
  await repos.outcomes.complete(run.id, { exit_code: 0, execution_time_seconds: 1, memory_usage_mb: null });
  const last = await follow.next();
  t.same(last.chunks, [{ seq: 1, data: 'second\n' }], 'only the chunk written since');
  t.match(last, { status: 'completed', exit_code: 0, finished: true });

  await rejectsWith(t, service.follow(principal(await makeUser(repos)), run.id), NotFoundError);
});

t.test('followScript: the latest run, or at once finished for a script that never ran', async (t) => {
  const { user, me } = await owner(repos);
  const idle = await makeScript(repos, user.id);
  const never = await service.followScript(me, idle.id);
  t.equal(never.runId, null);
  t.same(never.first, { status: 'uploaded', exit_code: null, chunks: [], finished: true });
  t.equal(await never.next(), never.first, 'next answers the same finished state');

  const script = await makeScript(repos, user.id);
  const run = await startRun(repos, script.id);
  await repos.output.appendLog(run.id, LEASE.executorId, 0, 'hello\n');
  const follow = await service.followScript(me, script.id);
  t.equal(follow.runId, run.id, 'the script’s latest run is followed');
  t.same(follow.first.chunks, [{ seq: 0, data: 'hello\n' }]);
  await rejectsWith(t, service.followScript(principal(await makeUser(repos)), script.id), NotFoundError, {
    resource: 'script',
  });
});
