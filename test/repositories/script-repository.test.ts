import t from 'tap';
import {
  InvalidStateError,
  NotFoundError,
  ScriptQuotaError,
  StorageQuotaError,
} from '../../src/domain/errors.ts';
import { SCRIPT_COLUMNS } from '../../src/domain/script.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser, queueRun, startQueuedRun } from '../helpers/fixtures.ts';

t.test('create returns the script without its file_path; findById/getById respect the owner', async (t) => {
  const { repos } = await testDatabase(t);
  const owner = await makeUser(repos);
  const stranger = await makeUser(repos);
  const script = await makeScript(repos, owner.id, { file_size: 1234, file_extension: '.ts' });
  t.match(script, {
    user_id: owner.id,
    status: 'uploaded',
    file_size: 1234,
    file_extension: '.ts',
    exit_code: null,
  });
  t.notOk('file_path' in script);
  t.same(await repos.scripts.findById(script.id), script);
  t.same(await repos.scripts.findById(script.id, owner.id), script);
  t.equal(await repos.scripts.findById(script.id, stranger.id), null, "someone else's script is not found");
  await t.rejects(repos.scripts.getById(script.id, stranger.id), NotFoundError);
  t.same(await repos.scripts.getById(script.id, owner.id), script);
});

t.test('getFile gives the owner and original name, to the owner only', async (t) => {
  const { repos } = await testDatabase(t);
  const owner = await makeUser(repos);
  const stranger = await makeUser(repos);
  const script = await makeScript(repos, owner.id, {
    file_path: '/srv/x.py',
    original_filename: 'my strategy.py',
  });
  t.same(await repos.scripts.getFile(script.id, owner.id), {
    user_id: owner.id,
    original_filename: 'my strategy.py',
    file_size: 100,
  });
  await t.rejects(repos.scripts.getFile(script.id, stranger.id), NotFoundError);
});

t.test('delete removes an idle script and says whose it was; refuses queued and running ones', async (t) => {
  const { repos } = await testDatabase(t);
  const owner = await makeUser(repos);
  const stranger = await makeUser(repos);
  const idle = await makeScript(repos, owner.id, { file_path: '/srv/idle.py' });
  await t.rejects(repos.scripts.delete(idle.id, stranger.id), NotFoundError);
  t.same(await repos.scripts.delete(idle.id, owner.id), { script_id: idle.id, user_id: owner.id });
  await t.rejects(repos.scripts.delete(idle.id, owner.id), NotFoundError);

  const busy = await makeScript(repos, owner.id);
  await queueRun(repos, busy.id);
  await rejectsWith(t, repos.scripts.delete(busy.id), InvalidStateError, { current: 'queued' });
  await startQueuedRun(repos, busy.id);
  await rejectsWith(t, repos.scripts.delete(busy.id), InvalidStateError, { current: 'running' });
  t.ok(await repos.scripts.findById(busy.id), 'still there');
});

t.test('statements that write the columns out select exactly SCRIPT_COLUMNS', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  for (const found of [
    await repos.scripts.findById(script.id),
    await repos.scripts.findById(script.id, user.id),
  ])
    t.same(Object.keys(found ?? {}), [...SCRIPT_COLUMNS]);
});

t.test('createWithinQuota inserts within the owner’s quota and says which limit refused it', async (t) => {
  const { repos } = await testDatabase(t);
  const owner = await makeUser(repos);
  const template = await makeScript(repos, owner.id, { file_size: 300 });
  const input = (name: string, file_size: number) => ({
    user_id: owner.id,
    filename: `${name}.py`,
    original_filename: `${name}.py`,
    file_size,
    file_extension: '.py' as const,
    sha256: template.sha256,
  });
  await t.rejects(
    repos.scripts.createWithinQuota(input('outside', 1), { scripts: 10, bytes: 10_000 }),
    /must run in a transaction/,
    'refused outside a transaction, before any SQL',
  );
  const created = await repos.transaction((tx) =>
    tx.scripts.createWithinQuota(input('second', 200), { scripts: 2, bytes: 500 }),
  );
  t.match(created, { user_id: owner.id, original_filename: 'second.py', file_size: 200 });
  await rejectsWith(
    t,
    repos.transaction((tx) => tx.scripts.createWithinQuota(input('third', 1), { scripts: 2, bytes: 10_000 })),
    ScriptQuotaError,
    { limit: 2 },
  );
  await rejectsWith(
    t,
    repos.transaction((tx) => tx.scripts.createWithinQuota(input('big', 1), { scripts: 10, bytes: 500 })),
    StorageQuotaError,
    { limit: 500, used: 500 },
  );
  await rejectsWith(
    t,
    repos.transaction((tx) =>
      tx.scripts.createWithinQuota(
        { ...input('ghost', 1), user_id: owner.id + 1000 },
        { scripts: 10, bytes: 10 },
      ),
    ),
    NotFoundError,
    { resource: 'user' },
  );
  const page = await repos.scriptListings.listPage({ user_id: owner.id }, '-created_at', {
    page: 1,
    per_page: 10,
  });
  t.equal(page.total, 2, 'nothing was written by the refused uploads');
});

t.test('setIbkrAccess turns the switch for the owner; anyone else’s script is NOT_FOUND', async (t) => {
  const { repos } = await testDatabase(t);
  const owner = await makeUser(repos);
  const stranger = await makeUser(repos);
  const script = await makeScript(repos, owner.id);
  t.match(await repos.scripts.setIbkrAccess(script.id, true, owner.id), { id: script.id, ibkr_access: true });
  await rejectsWith(t, repos.scripts.setIbkrAccess(script.id, false, stranger.id), NotFoundError, {
    resource: 'script',
  });
  t.equal((await repos.scripts.getById(script.id)).ibkr_access, true, 'unchanged by the stranger');
  t.match(
    await repos.scripts.setIbkrAccess(script.id, false),
    { ibkr_access: false },
    'no owner given (admin)',
  );
  await rejectsWith(t, repos.scripts.setIbkrAccess(script.id + 1000, true), NotFoundError);
});
