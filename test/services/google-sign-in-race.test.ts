/**
 * AuthService.signInWithGoogle when a concurrent first sign-in of the same Google account
 * commits between its statements (each sees what is committed when it starts). The order
 * is made certain by committing that user (through another connection) right after a
 * given look-up answered. Found by test/http/google.test.ts's five concurrent sign-ins,
 * one of which got 403 ACCOUNT_INACTIVE, and in another run 409 EMAIL_TAKEN.
 */
import t from 'tap';
import { ConflictError, ForbiddenError } from '../../src/domain/errors.ts';
import { UserRepository } from '../../src/repositories/user-repository.ts';
import { AuthCache } from '../../src/services/auth-cache.ts';
import { AuthService } from '../../src/services/auth-service.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeUser } from '../helpers/fixtures.ts';

const { repos } = await testDatabase(t);
const auth = new AuthService(repos, new AuthCache(60_000), 3_600_000);

type Method = 'touchGoogleLogin' | 'findByGoogleId';

/** While `f` runs, the first `method` call for `sub` is followed by `meanwhile` (committed). */
async function withCommitAfter<T>(
  method: Method,
  sub: string,
  meanwhile: () => Promise<unknown>,
  f: () => Promise<T>,
): Promise<T> {
  const original = UserRepository.prototype[method];
  let done = false;
  UserRepository.prototype[method] = async function (this: UserRepository, googleId: string) {
    const answer = await original.call(this, googleId);
    if (googleId === sub && !done) {
      done = true;
      await meanwhile();
    }
    return answer;
  };
  try {
    return await f();
  } finally {
    UserRepository.prototype[method] = original;
  }
}

/** What a concurrent first sign-in of `identity` commits: its user's id. */
async function concurrentUser(identity: { sub: string; email: string }, username: string): Promise<number> {
  const user = await repos.users.create({
    email: identity.email,
    username,
    auth_provider: 'google',
    google_id: identity.sub,
    is_verified: true,
  });
  return user.id;
}

for (const method of ['touchGoogleLogin', 'findByGoogleId'] as const) {
  t.test(`a user committed by a concurrent first sign-in after ${method} is signed in to`, async (t) => {
    const identity = { sub: `google-race-${method}`, email: `race.${method}@example.com`, name: 'Race' };
    let otherId = 0;
    const session = await withCommitAfter(
      method,
      identity.sub,
      async () => {
        otherId = await concurrentUser(identity, `race_${method}`);
      },
      () => auth.signInWithGoogle(identity),
    );
    t.ok(otherId > 0, 'the concurrent sign-in committed its user in between');
    t.equal(session.user.id, otherId, 'signed in to that user, not refused (403 or 409 before)');
    t.equal(session.created, false, 'not created twice');
    t.equal((await auth.authenticate(session.token)).user_id, otherId, 'with a working session');
  });
}

t.test('a deactivated user with that Google id is still refused (403 ACCOUNT_INACTIVE)', async (t) => {
  const identity = { sub: 'google-race-inactive', email: 'race.inactive@example.com', name: null };
  await withCommitAfter(
    'touchGoogleLogin',
    identity.sub,
    async () => {
      const id = await concurrentUser(identity, 'race_inactive');
      await repos.users.update(id, { is_active: false });
    },
    () => rejectsWith(t, auth.signInWithGoogle(identity), ForbiddenError, { code: 'ACCOUNT_INACTIVE' }),
  );
});

t.test('an email owned by another account stays EMAIL_TAKEN, and no Google user is made', async (t) => {
  const identity = { sub: 'google-other-owner', email: 'owned@example.com', name: null };
  await makeUser(repos, { email: identity.email });
  await rejectsWith(t, auth.signInWithGoogle(identity), ConflictError, { code: 'EMAIL_TAKEN' });
  t.equal(await repos.users.findByGoogleId(identity.sub), null);
});
