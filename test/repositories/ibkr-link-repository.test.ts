/**
 * Users' IBKR links (IbkrLinkRepository, `repos.ibkr`): what a run reads of its owner's
 * link, and the batches of a key rotation (tokens are opaque strings here: the
 * repository never sees a plain token).
 */
import t from 'tap';
import { NotFoundError } from '../../src/domain/errors.ts';
import type { IbkrLink } from '../../src/repositories/ibkr-link-repository.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser } from '../helpers/fixtures.ts';

const link = (account: string, access: string | null, refresh: string | null): IbkrLink => ({
  ibkr_user_id: account,
  access_token_encrypted: access,
  refresh_token_encrypted: refresh,
  token_expires_at: new Date('2030-01-01T00:00:00Z'),
});

t.test('findForScript gives the script’s switch and its owner’s stored link', async (t) => {
  const { repos } = await testDatabase(t);
  const owner = await makeUser(repos);
  const script = await makeScript(repos, owner.id);
  t.same(
    await repos.ibkr.findForScript(script.id),
    {
      user_id: owner.id,
      ibkr_access: false,
      ibkr_user_id: null,
      ibkr_access_token: null,
      ibkr_refresh_token: null,
      ibkr_token_expires_at: null,
    },
    'an owner without a link',
  );
  await repos.ibkr.link(owner.id, link('U1', 'v2:k1:a', 'v2:k1:r'));
  await repos.scripts.setIbkrAccess(script.id, true);
  t.same(await repos.ibkr.findForScript(script.id), {
    user_id: owner.id,
    ibkr_access: true,
    ibkr_user_id: 'U1',
    ibkr_access_token: 'v2:k1:a',
    ibkr_refresh_token: 'v2:k1:r',
    ibkr_token_expires_at: new Date('2030-01-01T00:00:00Z'),
  });
  t.equal(await repos.ibkr.findForScript(script.id + 1000), null, 'no such script');
  t.equal(await repos.ibkr.findTokens(owner.id + 1000), null, 'no such user');
  await rejectsWith(t, repos.ibkr.link(owner.id + 1000, link('U2', null, null)), NotFoundError, {
    resource: 'user',
  });
});

t.test('listTokensNotOn pages through the users with a token on another key', async (t) => {
  const { repos } = await testDatabase(t);
  const onOld = await makeUser(repos);
  const onNew = await makeUser(repos);
  const refreshOnly = await makeUser(repos);
  const mixed = await makeUser(repos);
  await makeUser(repos); // no link at all
  await repos.ibkr.link(onOld.id, link('U1', 'v2:old:a', 'v2:old:r'));
  await repos.ibkr.link(onNew.id, link('U2', 'v2:new:a', 'v2:new:r'));
  await repos.ibkr.link(refreshOnly.id, link('U3', null, 'v1:legacy'));
  await repos.ibkr.link(mixed.id, link('U4', 'v2:new:a', 'v2:old:r'));

  const all = await repos.ibkr.listTokensNotOn('new', 0, 10);
  t.same(all, [
    { id: onOld.id, ibkr_access_token: 'v2:old:a', ibkr_refresh_token: 'v2:old:r' },
    { id: refreshOnly.id, ibkr_access_token: null, ibkr_refresh_token: 'v1:legacy' },
    { id: mixed.id, ibkr_access_token: 'v2:new:a', ibkr_refresh_token: 'v2:old:r' },
  ]);
  const first = await repos.ibkr.listTokensNotOn('new', 0, 2);
  t.same(
    first.map((r) => r.id),
    [onOld.id, refreshOnly.id],
    'at most `limit`, by id',
  );
  const rest = await repos.ibkr.listTokensNotOn('new', refreshOnly.id, 2);
  t.same(
    rest.map((r) => r.id),
    [mixed.id],
    'the next batch starts after the given id',
  );
  t.same(await repos.ibkr.listTokensNotOn('new', mixed.id, 2), [], 'nothing after the last');
  // The key id is a literal prefix: `ne` is not a prefix match of `v2:new:`.
  t.equal((await repos.ibkr.listTokensNotOn('ne', 0, 10)).length, 4);
});

t.test('replaceTokens writes each row only while it still holds the tokens it was made from', async (t) => {
  const { repos } = await testDatabase(t);
  const kept = await makeUser(repos);
  const relinked = await makeUser(repos);
  await repos.ibkr.link(kept.id, link('U1', 'v2:old:a1', null));
  await repos.ibkr.link(relinked.id, link('U2', 'v2:old:a2', 'v2:old:r2'));
  const batch = await repos.ibkr.listTokensNotOn('new', 0, 10);
  t.equal(batch.length, 2);
  // Between the read and the write, one user links again (new tokens win over the rotation's).
  await repos.ibkr.link(relinked.id, link('U2', 'v2:old:fresh', 'v2:old:fresh-r'));

  const written = await repos.ibkr.replaceTokens(
    batch.map((before) => ({
      before,
      after: {
        ibkr_access_token: before.ibkr_access_token?.replace('v2:old:', 'v2:new:') ?? null,
        ibkr_refresh_token: before.ibkr_refresh_token?.replace('v2:old:', 'v2:new:') ?? null,
      },
    })),
  );
  t.equal(written, 1, 'only the unchanged row');
  t.same(await repos.ibkr.findTokens(kept.id), { ibkr_access_token: 'v2:new:a1', ibkr_refresh_token: null });
  t.same(await repos.ibkr.findTokens(relinked.id), {
    ibkr_access_token: 'v2:old:fresh',
    ibkr_refresh_token: 'v2:old:fresh-r',
  });
  t.equal(await repos.ibkr.replaceTokens([]), 0, 'an empty batch writes nothing');
});
