/**
 * UserService against a real database: the admin listing in both page modes, a
 * user's own changes (cheap checks first, a password change ending the other
 * sessions), an admin's changes (a new role ends every session), reads and deletes
 * that treat someone else as not found, and IBKR tokens stored encrypted for one
 * user and field.
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { NotFoundError, UnauthenticatedError, ValidationError } from '../../src/domain/errors.ts';
import type { CursorPage, OffsetPage } from '../../src/domain/paging.ts';
import type { User } from '../../src/domain/user.ts';
import { AuthCache } from '../../src/services/auth-cache.ts';
import { AuthService, type Principal } from '../../src/services/auth-service.ts';
import { SecretBox } from '../../src/services/secret-box.ts';
import { EMBEDDED_SCRIPTS_MAX, ibkrContext, UserService } from '../../src/services/user-service.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser } from '../helpers/fixtures.ts';

const { repos } = await testDatabase(t);
const auth = new AuthService(repos, new AuthCache(60_000), 3_600_000);
const secrets = new SecretBox(randomBytes(32).toString('base64'));
const users = new UserService(repos, auth, secrets);
const PASSWORD = 'correct horse battery';

let counter = 0;
/** A registered account (email and password), signed in: its principal and token. */
async function account(): Promise<{ user: User; token: string; me: Principal }> {
  const n = `${process.pid}_${++counter}`;
  const { user, token } = await auth.register({
    email: `svc${n}@example.com`,
    username: `svc_${n}`,
    password: PASSWORD,
  });
  return { user, token, me: await auth.authenticate(token) };
}

const adminOf = (user: User): Principal => ({
  user_id: user.id,
  role: 'admin',
  token_key: Buffer.alloc(32).toString('base64'),
});

t.test('list: an offset page by default, a keyset page when a cursor is given', async (t) => {
  const a = await makeUser(repos);
  const b = await makeUser(repos);
  const offset = (await users.list({}, { per_page: 100 })) as OffsetPage<User>;
  t.ok(offset.total >= 2, 'the total is counted');
  t.equal(offset.page, 1, 'page 1 by default');
  t.ok(
    [a.id, b.id].every((id) => offset.items.some((u) => u.id === id)),
    'both users are listed',
  );
  t.notOk('hashed_password' in (offset.items[0] ?? {}), 'no password hash in a listed user');

  const first = (await users.list({}, { cursor: '', per_page: 1 })) as CursorPage<User>;
  t.equal(first.items.length, 1);
  t.type(first.next_cursor, 'string', 'keyset mode: a next cursor, no total');
  t.notOk('total' in first);
  const second = (await users.list({}, { cursor: first.next_cursor!, per_page: 1 })) as CursorPage<User>;
  t.not(second.items[0]?.id, first.items[0]?.id, 'the cursor moves on');

  await users.update(a.id, { is_active: false });
  const inactive = (await users.list({ is_active: false }, { per_page: 100 })) as OffsetPage<User>;
  t.ok(
    inactive.items.some((u) => u.id === a.id) && !inactive.items.some((u) => u.id === b.id),
    'filters apply',
  );
});

t.test('search finds a user by a part of its username, case-insensitively', async (t) => {
  const user = await makeUser(repos, {
    username: `Findable_${process.pid}_${randomBytes(3).toString('hex')}`,
  });
  const found = await users.search(user.username.slice(0, 14).toLowerCase(), 10);
  t.ok(
    found.some((u) => u.id === user.id),
    'found by a lower-cased prefix',
  );
  t.same(await users.search(`nobody-${randomBytes(6).toString('hex')}`, 10), []);
});

t.test('updateSelf: a rename; bad input is refused naming the field, before any write', async (t) => {
  const { user, me } = await account();
  const renamed = await users.updateSelf(me, { username: `${user.username}_x` });
  t.equal(renamed.username, `${user.username}_x`);
  t.equal((await repos.users.getById(user.id)).username, `${user.username}_x`, 'stored');

  await rejectsWith(t, users.updateSelf(me, { username: 'no spaces here' }), ValidationError, {
    errors: [{ path: '/username' }],
  });
  await rejectsWith(t, users.updateSelf(me, { current_password: PASSWORD }), ValidationError, {
    errors: [{ path: '/current_password', message: /only needed to set a new_password/ }],
  });
  await rejectsWith(
    t,
    users.updateSelf(me, { current_password: 'not the password', new_password: 'another password' }),
    ValidationError,
    { errors: [{ path: '/current_password', message: 'is not the current password' }] },
  );
  t.equal((await repos.users.getById(user.id)).username, `${user.username}_x`, 'refusals changed nothing');
});

t.test('updateSelf with a new password ends the other sessions and keeps this one', async (t) => {
  const { user, token, me } = await account();
  const other = await auth.login(user.email, PASSWORD);
  await auth.authenticate(other.token); // cached now: the change must evict it

  const changed = await users.updateSelf(me, {
    username: `${user.username}_p`,
    current_password: PASSWORD,
    new_password: 'a brand new password',
  });
  t.equal(changed.username, `${user.username}_p`, 'the rename commits with the password');
  await rejectsWith(t, auth.authenticate(other.token), UnauthenticatedError);
  t.equal((await auth.authenticate(token)).user_id, user.id, 'the session that changed it stays');
  await t.resolves(auth.login(user.email, 'a brand new password'), 'the new password signs in');
  await rejectsWith(t, auth.login(user.email, PASSWORD), UnauthenticatedError);
});

t.test('update by an admin: a new role ends every session; the same role does not', async (t) => {
  const { user, token } = await account();
  await auth.authenticate(token);

  const same = await users.update(user.id, { role: 'user' });
  t.equal(same.role, 'user');
  t.equal((await auth.authenticate(token)).user_id, user.id, 'the same role keeps the session');

  const promoted = await users.update(user.id, { role: 'admin', username: `${user.username}_a` });
  t.match(promoted, { role: 'admin', username: `${user.username}_a` });
  await rejectsWith(t, auth.authenticate(token), UnauthenticatedError);

  await rejectsWith(t, users.update(2 ** 31 - 1, { role: 'admin' }), NotFoundError, { resource: 'user' });
});

t.test('update by an admin: deactivating a user ends its cached sessions at once', async (t) => {
  const { user, token } = await account();
  await auth.authenticate(token);
  const verified = await users.update(user.id, { is_verified: true });
  t.equal(verified.is_verified, true);
  t.equal((await auth.authenticate(token)).user_id, user.id, 'a change of is_verified keeps the session');
  const off = await users.update(user.id, { is_active: false });
  t.equal(off.is_active, false);
  await rejectsWith(t, auth.authenticate(token), UnauthenticatedError);
});

t.test(
  'get: oneself or anyone for an admin, with the scripts when asked; anyone else is not found',
  async (t) => {
    const { user, me } = await account();
    const stranger = await account();
    const script = await makeScript(repos, user.id);

    t.equal((await users.get(me, user.id)).id, user.id);
    const withScripts = await users.get(me, user.id, { scripts: true });
    t.same(
      'scripts' in withScripts ? withScripts.scripts.map((s) => s.id) : null,
      [script.id],
      'the user’s scripts are embedded',
    );
    t.equal(
      'scripts_cursor' in withScripts ? withScripts.scripts_cursor : undefined,
      null,
      'all of them: no cursor',
    );
    await rejectsWith(t, users.get(stranger.me, user.id), NotFoundError, { resource: 'user' });
    t.equal((await users.get(adminOf(stranger.user), user.id)).id, user.id, 'an admin reads anyone');
    await rejectsWith(t, users.get(adminOf(user), 2 ** 31 - 1, { scripts: true }), NotFoundError, {
      resource: 'user',
    });
    await rejectsWith(t, users.get(adminOf(user), 2 ** 31 - 1), NotFoundError, { resource: 'user' });
  },
);

t.test('delete: oneself, or anyone for an admin; the sessions end; anyone else is not found', async (t) => {
  const { user, token, me } = await account();
  const stranger = await account();
  await rejectsWith(t, users.delete(stranger.me, user.id), NotFoundError, { resource: 'user' });
  t.equal((await repos.users.getById(user.id)).id, user.id, 'a stranger deleted nothing');

  await auth.authenticate(token);
  await users.delete(me, user.id);
  t.equal(await repos.users.findById(user.id), null, 'the user is gone');
  await rejectsWith(t, auth.authenticate(token), UnauthenticatedError);

  await users.delete(adminOf(user), stranger.user.id);
  t.equal(await repos.users.findById(stranger.user.id), null, 'an admin deletes anyone');
});

t.test('linkIbkr stores the tokens encrypted for this user and field; unlinkIbkr clears them', async (t) => {
  const user = await makeUser(repos);
  const expires = new Date('2030-01-01T00:00:00Z');
  const linked = await users.linkIbkr(user.id, {
    ibkr_user_id: `ibkr-${user.id}`,
    access_token: 'access-secret',
    refresh_token: 'refresh-secret',
    token_expires_at: expires,
  });
  t.match(linked, { is_ibkr_connected: true, ibkr_user_id: `ibkr-${user.id}` });

  const stored = await repos.ibkr.findTokens(user.id);
  t.not(stored?.ibkr_access_token, 'access-secret', 'not stored in clear');
  t.equal(secrets.decrypt(stored!.ibkr_access_token!, ibkrContext(user.id, 'access')), 'access-secret');
  t.equal(secrets.decrypt(stored!.ibkr_refresh_token!, ibkrContext(user.id, 'refresh')), 'refresh-secret');
  t.throws(
    () => secrets.decrypt(stored!.ibkr_access_token!, ibkrContext(user.id, 'refresh')),
    'the access token does not decrypt as the refresh token',
  );
  t.equal(ibkrContext(7, 'access'), 'users/7/ibkr_access_token');

  const unlinked = await users.unlinkIbkr(user.id);
  t.match(unlinked, { is_ibkr_connected: false, ibkr_user_id: null });
  t.same(await repos.ibkr.findTokens(user.id), { ibkr_access_token: null, ibkr_refresh_token: null });
});

t.test('linkIbkr without tokens links the account and stores none', async (t) => {
  const user = await makeUser(repos);
  const linked = await users.linkIbkr(user.id, { ibkr_user_id: `bare-${user.id}` });
  t.match(linked, { is_ibkr_connected: true, ibkr_user_id: `bare-${user.id}` });
  t.same(await repos.ibkr.findTokens(user.id), { ibkr_access_token: null, ibkr_refresh_token: null });
});

t.test(`get with scripts embeds the newest ${EMBEDDED_SCRIPTS_MAX} and a cursor for the rest`, async (t) => {
  const { user, me } = await account();
  const ids: number[] = [];
  for (let i = 0; i <= EMBEDDED_SCRIPTS_MAX; i++) ids.push((await makeScript(repos, user.id)).id);
  const full = await users.get(me, user.id, { scripts: true });
  if (!('scripts' in full)) throw new Error('no scripts embedded');
  t.equal(full.scripts.length, EMBEDDED_SCRIPTS_MAX);
  t.same(
    full.scripts.map((s) => s.id),
    ids.slice(1).reverse(),
    'the newest, newest first: the oldest is left out',
  );
  t.type(full.scripts_cursor, 'string', 'a cursor leads to the rest');
});
