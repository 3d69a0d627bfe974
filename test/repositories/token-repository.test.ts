/**
 * api_tokens (TokenRepository, `repos.tokens`): which tokens authenticate, revocation of
 * one or all of a user's, pruning, and the errors a bad token row maps to.
 */
import { createHash } from 'node:crypto';
import t from 'tap';
import { ConflictError, NotFoundError } from '../../src/domain/errors.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeUser } from '../helpers/fixtures.ts';

const hash = (token: string) => createHash('sha256').update(token).digest();
const inAnHour = () => new Date(Date.now() + 3_600_000);

t.test('authenticate answers for a live token of an active user only', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const created = await repos.tokens.create(user.id, hash('live'), inAnHour());
  t.match(created, { id: Number, expires_at: Date });
  t.match(await repos.tokens.authenticate(hash('live')), {
    user_id: user.id,
    role: 'user',
    expires_at: Date,
  });
  t.equal(await repos.tokens.authenticate(hash('unknown')), null, 'an unknown token');

  t.equal(await repos.tokens.revoke(hash('live')), true);
  t.equal(await repos.tokens.revoke(hash('live')), false, 'already revoked');
  t.equal(await repos.tokens.revoke(hash('unknown')), false, 'unknown');
  t.equal(await repos.tokens.authenticate(hash('live')), null, 'a revoked token');

  await repos.tokens.create(user.id, hash('second'), inAnHour());
  await repos.users.deactivate(user.id);
  t.equal(await repos.tokens.authenticate(hash('second')), null, 'a deactivated user');
});

t.test('create maps a duplicate hash to a conflict and an unknown user to NOT_FOUND', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  await repos.tokens.create(user.id, hash('t'), inAnHour());
  await t.rejects(repos.tokens.create(user.id, hash('t'), inAnHour()), {
    constructor: ConflictError,
    code: 'CONFLICT',
    constraint: 'uq_api_tokens_token_hash',
  });
  await rejectsWith(t, repos.tokens.create(user.id + 1000, hash('u'), inAnHour()), NotFoundError, {
    resource: 'user',
  });
});

t.test('revokeAllForUser revokes the live tokens of one user, but the one in use', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const user = await makeUser(repos);
  const other = await makeUser(repos);
  for (const name of ['a', 'b', 'c']) await repos.tokens.create(user.id, hash(name), inAnHour());
  await repos.tokens.create(other.id, hash('other'), inAnHour());
  await repos.tokens.revoke(hash('c'));

  t.equal(await repos.tokens.revokeAllForUser(user.id, hash('a')), 1, 'b only: a is kept, c was revoked');
  t.ok(await repos.tokens.authenticate(hash('a')), 'the token in use still works');
  t.equal(await repos.tokens.authenticate(hash('b')), null);

  t.equal(await repos.tokens.revokeAllForUser(user.id), 1, 'without an exception: a as well');
  t.equal(await repos.tokens.authenticate(hash('a')), null);
  t.ok(await repos.tokens.authenticate(hash('other')), "another user's token is untouched");
  const [row] = await sql<{ live: number }[]>`
    select count(*)::int as live from api_tokens where revoked_at is null
  `;
  t.equal(row?.live, 1);
});

t.test('prune deletes tokens expired or revoked before the given time, nothing else', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const user = await makeUser(repos);
  for (const name of ['expired', 'revoked', 'live', 'revoked-recently'])
    await repos.tokens.create(user.id, hash(name), inAnHour());
  await repos.tokens.revoke(hash('revoked'));
  await repos.tokens.revoke(hash('revoked-recently'));
  // Backdated in SQL: created_at first, so that expires_at > created_at still holds.
  await sql`
    update api_tokens set created_at = now() - interval '3 days', expires_at = now() - interval '2 days'
    where token_hash = ${hash('expired')}
  `;
  await sql`update api_tokens set revoked_at = now() - interval '2 days' where token_hash = ${hash('revoked')}`;
  t.equal(await repos.tokens.prune(new Date(Date.now() - 86_400_000)), 2);
  const left = await sql<{ token_hash: Buffer }[]>`select token_hash from api_tokens order by id`;
  t.same(
    left.map((r) => r.token_hash.toString('hex')),
    [hash('live').toString('hex'), hash('revoked-recently').toString('hex')],
  );
});
