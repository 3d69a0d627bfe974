/**
 * createAdmin (`npm run cli -- create-admin`, whose command line test/cli.test.ts drives):
 * creates an admin; refuses an email that is registered already unless told to
 * promote it; a promotion replaces the password, makes the account active and ends
 * every session of it, in one transaction; bad input changes nothing.
 */
import t from 'tap';
import { ConflictError, ValidationError } from '../../src/domain/errors.ts';
import { createAdmin } from '../../src/services/admin.ts';
import { AuthCache } from '../../src/services/auth-cache.ts';
import { AuthService } from '../../src/services/auth-service.ts';
import { verifyPassword } from '../../src/services/passwords.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';

const { repos, sql } = await testDatabase(t);
const auth = new AuthService(repos, new AuthCache(60_000), 3_600_000);
const PASSWORD = 'operator passphrase 1';

const hashOf = async (email: string) =>
  (await sql<{ h: string }[]>`select hashed_password as h from users where email = ${email}`)[0]!.h;
const userCount = async () => (await sql<{ n: number }[]>`select count(*)::int as n from users`)[0]!.n;

t.test('a new email becomes an admin account with the given password', async (t) => {
  const result = await createAdmin(repos, {
    email: ' Root@Example.COM ',
    username: 'root',
    password: PASSWORD,
  });
  t.match(result, { action: 'created', email: 'root@example.com', revoked: 0 });
  const user = await repos.users.findById(result.user_id);
  t.equal(user?.role, 'admin');
  t.equal(user?.email, 'root@example.com', 'the email is stored normalised');
  t.ok(await verifyPassword(await hashOf('root@example.com'), PASSWORD), 'the password signs in');
});

t.test(
  'an email registered already is refused without --promote-existing, and nothing changes',
  async (t) => {
    const { user, token } = await auth.register({
      email: 'taken@example.com',
      username: 'stranger',
      password: 'their own pw 1',
    });
    const before = await userCount();
    await rejectsWith(
      t,
      createAdmin(repos, { email: 'taken@example.com', username: 'admin2', password: PASSWORD }),
      ConflictError,
      {
        code: 'EMAIL_TAKEN',
        message: /--promote-existing/,
      },
    );
    t.equal((await repos.users.findById(user.id))?.role, 'user', 'still a user');
    t.equal(await userCount(), before, 'no account made');
    t.equal((await auth.authenticate(token)).user_id, user.id, 'its session still works');
  },
);

t.test(
  'with promoteExisting the account becomes an admin, its password replaced and every session ended',
  async (t) => {
    const { user, token } = await auth.register({
      email: 'promote@example.com',
      username: 'promotee',
      password: 'their own pw 2',
    });
    const second = await auth.login('promote@example.com', 'their own pw 2');
    await repos.users.update(user.id, { is_active: false });
    const result = await createAdmin(repos, {
      email: 'promote@example.com',
      username: 'ignored',
      password: PASSWORD,
      promoteExisting: true,
    });
    t.match(result, { action: 'promoted', user_id: user.id, revoked: 2 });
    const after = await repos.users.findByEmail('promote@example.com');
    t.equal(after?.role, 'admin');
    t.equal(after?.is_active, true, 'active again');
    t.ok(await verifyPassword(await hashOf('promote@example.com'), PASSWORD), 'the operator’s password');
    t.notOk(
      await verifyPassword(await hashOf('promote@example.com'), 'their own pw 2'),
      'not the registrant’s',
    );
    for (const old of [token, second.token])
      await t.rejects(auth.authenticate(old), 'a session from before the promotion is ended');
  },
);

t.test('a username or password the rules refuse changes nothing', async (t) => {
  const before = await userCount();
  await rejectsWith(
    t,
    createAdmin(repos, { email: 'weak@example.com', username: 'weakadmin', password: 'short' }),
    ValidationError,
    {
      errors: [{ path: '/password' }],
    },
  );
  await rejectsWith(
    t,
    createAdmin(repos, { email: 'weak@example.com', username: 'x', password: PASSWORD }),
    ValidationError,
    {
      errors: [{ path: '/username' }],
    },
  );
  t.equal(await userCount(), before);
  t.equal(await repos.users.findByEmail('weak@example.com'), null);
});
