import t from 'tap';
import { ConflictError, NotFoundError, ValidationError } from '../../src/domain/errors.ts';
import { USER_COLUMNS } from '../../src/domain/user.ts';
import { testDatabase } from '../helpers/db.ts';
import { FAKE_HASH, makeScript, makeUser } from '../helpers/fixtures.ts';

t.test('create trims and lower-cases the email and returns only public columns', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await repos.users.create({
    email: '  Alice@Example.COM ',
    username: 'alice',
    hashed_password: FAKE_HASH,
  });
  t.equal(user.email, 'alice@example.com');
  t.same(
    Object.keys(user).sort(),
    [
      'auth_provider',
      'created_at',
      'email',
      'ibkr_connected_at',
      'ibkr_user_id',
      'id',
      'is_active',
      'is_ibkr_connected',
      'is_verified',
      'last_login_at',
      'role',
      'updated_at',
      'username',
    ],
    'no hashed_password, no tokens',
  );
  t.match(user, {
    auth_provider: 'email',
    role: 'user',
    is_active: true,
    is_verified: false,
    is_ibkr_connected: false,
  });
});

t.test('create refuses a duplicate email whatever its case, and bad fields before any SQL', async (t) => {
  const { repos } = await testDatabase(t);
  await makeUser(repos, { email: 'bob@example.com' });
  await t.rejects(makeUser(repos, { email: 'BOB@example.com' }), {
    constructor: ConflictError,
    code: 'EMAIL_TAKEN',
  });
  await t.rejects(makeUser(repos, { email: 'not-an-email' }), {
    constructor: ValidationError,
    errors: [{ path: '/email', message: 'must be an email address' }],
  });
  await t.rejects(makeUser(repos, { username: 'a b' }), {
    constructor: ValidationError,
    errors: [{ path: '/username' }],
  });
  const page = await repos.userListings.listPage({}, { page: 1, per_page: 10 });
  t.equal(page.total, 1, 'nothing else was written');
});

t.test('google users need no password', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos, { auth_provider: 'google', google_id: 'g-123', hashed_password: null });
  t.equal(user.auth_provider, 'google');
  await t.rejects(makeUser(repos, { auth_provider: 'google', google_id: 'g-123', hashed_password: null }), {
    code: 'GOOGLE_ACCOUNT_TAKEN',
  });
  await t.rejects(makeUser(repos, { hashed_password: null }), ValidationError, 'an email user needs one');
});

t.test('findById / getById / findByEmail / findCredentials', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos, { email: 'carol@example.com' });
  t.same(await repos.users.findById(user.id), user);
  t.same(await repos.users.getById(user.id), user);
  t.equal(await repos.users.findById(user.id + 1000), null);
  await t.rejects(repos.users.getById(user.id + 1000), NotFoundError);
  t.same(await repos.users.findByEmail(' CAROL@example.com'), user);
  t.equal(await repos.users.findByEmail('nobody@example.com'), null);
  t.same(await repos.users.findCredentials('carol@example.com'), {
    id: user.id,
    hashed_password: FAKE_HASH,
    is_active: true,
  });
  t.same(await repos.users.findCredentialsById(user.id), {
    id: user.id,
    hashed_password: FAKE_HASH,
    is_active: true,
  });
  const google = await makeUser(repos, { auth_provider: 'google', google_id: 'g-9', hashed_password: null });
  t.equal(await repos.users.findCredentials(google.email), null, 'google users have no password login');
});

t.test(
  'update changes only the given columns and bumps updated_at; an empty patch changes nothing',
  async (t) => {
    const { repos } = await testDatabase(t);
    const user = await makeUser(repos);
    const updated = await repos.users.update(user.id, {
      username: 'renamed',
      role: 'admin',
      is_verified: true,
    });
    t.match(updated, {
      username: 'renamed',
      role: 'admin',
      is_verified: true,
      email: user.email,
      is_active: true,
    });
    t.ok(updated.updated_at >= user.updated_at);
    t.same(await repos.users.update(user.id, {}), updated);
    await t.rejects(repos.users.update(user.id, { username: 'x' }), ValidationError);
    await t.rejects(repos.users.update(user.id + 1000, { username: 'ghost' }), NotFoundError);
    const deactivated = await repos.users.deactivate(user.id);
    t.equal(deactivated.is_active, false);
    t.equal((await repos.users.findCredentialsById(user.id))?.is_active, false);
  },
);

t.test('touchLogin records the sign-in without touching updated_at', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  t.equal(user.last_login_at, null);
  const after = await repos.users.touchLogin(user.id, FAKE_HASH);
  t.ok(after?.last_login_at instanceof Date);
  t.same(after?.updated_at, user.updated_at);
  t.equal(await repos.users.touchLogin(user.id + 1000, FAKE_HASH), null, 'an unknown user');
});

t.test(
  'touchLogin refuses a sign-in checked against a password that has changed since, or a deactivated account',
  async (t) => {
    const { repos } = await testDatabase(t);
    const changed = await makeUser(repos);
    t.ok(await repos.users.replacePassword(changed.id, FAKE_HASH, `${FAKE_HASH}-new`));
    t.equal(await repos.users.touchLogin(changed.id, FAKE_HASH), null, 'the old hash no longer signs in');
    t.equal((await repos.users.getById(changed.id)).last_login_at, null, 'and nothing was recorded');
    t.ok(await repos.users.touchLogin(changed.id, `${FAKE_HASH}-new`), 'the new one does');
    const deactivated = await makeUser(repos);
    await repos.users.deactivate(deactivated.id);
    t.equal(await repos.users.touchLogin(deactivated.id, FAKE_HASH), null);
    t.equal((await repos.users.getById(deactivated.id)).last_login_at, null);
  },
);

t.test('delete removes the user and its scripts', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const other = await makeUser(repos);
  const s1 = await makeScript(repos, user.id, { file_path: '/data/a.py' });
  const s2 = await makeScript(repos, user.id, { file_path: '/data/b.py' });
  const kept = await makeScript(repos, other.id);
  await repos.users.delete(user.id);
  t.equal(await repos.users.findById(user.id), null);
  t.equal(await repos.scripts.findById(s1.id), null);
  t.equal(await repos.scripts.findById(s2.id), null);
  t.ok(await repos.scripts.findById(kept.id), "another user's scripts stay");
  await t.rejects(repos.users.delete(user.id), NotFoundError);
});

t.test('linkIbkr / unlinkIbkr keep the generated flag and the link time right', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const other = await makeUser(repos);
  const link = {
    ibkr_user_id: 'U123',
    access_token_encrypted: 'v1:enc-a',
    refresh_token_encrypted: 'v1:enc-r',
    token_expires_at: new Date('2030-01-01T00:00:00Z'),
  };
  const linked = await repos.ibkr.link(user.id, link);
  t.match(linked, { is_ibkr_connected: true, ibkr_user_id: 'U123' });
  t.ok(linked.ibkr_connected_at instanceof Date);
  t.same(await repos.ibkr.findTokens(user.id), {
    ibkr_access_token: 'v1:enc-a',
    ibkr_refresh_token: 'v1:enc-r',
  });
  const relinked = await repos.ibkr.link(user.id, { ...link, access_token_encrypted: 'v1:enc-b' });
  t.same(relinked.ibkr_connected_at, linked.ibkr_connected_at, 'same account: link time kept');
  await t.rejects(repos.ibkr.link(other.id, link), {
    constructor: ConflictError,
    code: 'IBKR_ACCOUNT_TAKEN',
  });
  await t.rejects(repos.ibkr.link(other.id, { ...link, ibkr_user_id: '' }), ValidationError);
  const unlinked = await repos.ibkr.unlink(user.id);
  t.match(unlinked, { is_ibkr_connected: false, ibkr_user_id: null, ibkr_connected_at: null });
  t.same(await repos.ibkr.findTokens(user.id), { ibkr_access_token: null, ibkr_refresh_token: null });
  await t.rejects(repos.ibkr.unlink(user.id + 1000), NotFoundError);
});

t.test('findById, which writes its columns out, selects exactly USER_COLUMNS', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  t.same(Object.keys((await repos.users.findById(user.id)) ?? {}), [...USER_COLUMNS]);
});

t.test('lockByEmail and lockRole answer the role and hold the row until the transaction ends', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const user = await makeUser(repos, { email: 'dora@example.com', role: 'admin' });
  const tryLock = () => sql`select id from users where id = ${user.id} for update nowait`;
  await repos.transaction(async (tx) => {
    t.same(await tx.users.lockByEmail(' DORA@example.com '), { id: user.id, role: 'admin' });
    await t.rejects(tryLock(), { code: '55P03' }, 'another transaction cannot lock it meanwhile');
  });
  await repos.transaction(async (tx) => {
    t.equal(await tx.users.lockRole(user.id), 'admin');
    await t.rejects(tryLock(), { code: '55P03' });
  });
  t.same(await tryLock(), [{ id: user.id }], 'released at commit');
  t.equal(await repos.users.lockByEmail('nobody@example.com'), null);
  t.equal(await repos.users.lockRole(user.id + 1000), null);
});

t.test(
  'findByGoogleId and touchGoogleLogin find a Google user; an inactive one is not signed in',
  async (t) => {
    const { repos } = await testDatabase(t);
    const user = await makeUser(repos, { auth_provider: 'google', google_id: 'g-42', hashed_password: null });
    t.same(await repos.users.findByGoogleId('g-42'), user);
    t.equal(await repos.users.findByGoogleId('g-unknown'), null);

    const signedIn = await repos.users.touchGoogleLogin('g-42');
    t.equal(signedIn?.id, user.id);
    t.ok(signedIn?.last_login_at instanceof Date, 'the sign-in is recorded');
    t.equal(await repos.users.touchGoogleLogin('g-unknown'), null);

    await repos.users.deactivate(user.id);
    t.equal(await repos.users.touchGoogleLogin('g-42'), null, 'a deactivated user is not signed in');
    t.same(
      (await repos.users.getById(user.id)).last_login_at,
      signedIn?.last_login_at,
      'and nothing changed',
    );
  },
);
