/**
 * AuthService.signInWithGoogle when a concurrent first sign-in of the same Google account
 * commits between its statements: the update that signs a known user in saw no row, and
 * the row is there when the next statement looks. The order is made certain by committing
 * that user (through another connection) right after the update answered. Found by
 * test/http/google.test.ts's five concurrent sign-ins, one of which got 403 ACCOUNT_INACTIVE.
 */
import t from 'tap';
import { ForbiddenError } from '../../src/domain/errors.ts';
import { UserRepository } from '../../src/repositories/user-repository.ts';
import { AuthCache } from '../../src/services/auth-cache.ts';
import { AuthService } from '../../src/services/auth-service.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';

const { repos } = await testDatabase(t);
const auth = new AuthService(repos, new AuthCache(60_000), 3_600_000);

/** While `f` runs, the first touchGoogleLogin of `sub` is followed by `meanwhile` (committed). */
async function withCommitAfterTouch<T>(sub: string, meanwhile: () => Promise<unknown>, f: () => Promise<T>) {
  const touch = UserRepository.prototype.touchGoogleLogin;
  let done = false;
  UserRepository.prototype.touchGoogleLogin = async function (this: UserRepository, googleId: string) {
    const answer = await touch.call(this, googleId);
    if (googleId === sub && !done) {
      done = true;
      await meanwhile();
    }
    return answer;
  };
  try {
    return await f();
  } finally {
    UserRepository.prototype.touchGoogleLogin = touch;
  }
}

t.test(
  'a user committed by a concurrent first sign-in is signed in to, not refused as deactivated',
  async (t) => {
    const identity = { sub: 'google-race-active', email: 'race.active@example.com', name: 'Race Active' };
    let otherId = 0;
    const session = await withCommitAfterTouch(
      identity.sub,
      async () => {
        const other = await repos.users.create({
          email: identity.email,
          username: 'race_active',
          auth_provider: 'google',
          google_id: identity.sub,
          is_verified: true,
        });
        otherId = other.id;
      },
      () => auth.signInWithGoogle(identity),
    );
    t.ok(otherId > 0, 'the concurrent sign-in committed its user in between');
    t.equal(session.user.id, otherId, 'signed in to that user');
    t.equal(session.created, false, 'not created twice');
    t.equal((await auth.authenticate(session.token)).user_id, otherId, 'with a working session');
  },
);

t.test('a deactivated user with that Google id is still refused (403 ACCOUNT_INACTIVE)', async (t) => {
  const identity = { sub: 'google-race-inactive', email: 'race.inactive@example.com', name: null };
  await withCommitAfterTouch(
    identity.sub,
    async () => {
      const user = await repos.users.create({
        email: identity.email,
        username: 'race_inactive',
        auth_provider: 'google',
        google_id: identity.sub,
        is_verified: true,
      });
      await repos.users.update(user.id, { is_active: false });
    },
    () => rejectsWith(t, auth.signInWithGoogle(identity), ForbiddenError, { code: 'ACCOUNT_INACTIVE' }),
  );
});
