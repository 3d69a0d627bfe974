/** api_tokens: its constraints broken by raw SQL, and the auth_changed notifications. */
import { createHash } from 'node:crypto';
import postgres from 'postgres';
import t from 'tap';
import { testDatabase } from '../helpers/db.ts';
import { makeUser } from '../helpers/fixtures.ts';

const hash = (s: string) => createHash('sha256').update(s).digest();

t.test('every constraint of api_tokens refuses a bad row by name', async (t) => {
  const { sql, repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const later = new Date(Date.now() + 3_600_000);
  await sql`insert into api_tokens (user_id, token_hash, expires_at) values (${user.id}, ${hash('taken')}, ${later})`;
  const cases: Array<[string, () => Promise<unknown>, string, string]> = [
    [
      'a hash that is not 32 bytes',
      () =>
        sql`insert into api_tokens (user_id, token_hash, expires_at) values (${user.id}, ${Buffer.from('short')}, ${later})`,
      '23514',
      'ck_api_tokens_token_hash_sha256',
    ],
    [
      'expiring before it was made',
      () =>
        sql`insert into api_tokens (user_id, token_hash, expires_at) values (${user.id}, ${hash('a')}, now() - interval '1 second')`,
      '23514',
      'ck_api_tokens_expires_after_created',
    ],
    [
      'a hash already stored',
      () =>
        sql`insert into api_tokens (user_id, token_hash, expires_at) values (${user.id}, ${hash('taken')}, ${later})`,
      '23505',
      'uq_api_tokens_token_hash',
    ],
    [
      'a user that does not exist',
      () =>
        sql`insert into api_tokens (user_id, token_hash, expires_at) values (999999, ${hash('b')}, ${later})`,
      '23503',
      'fk_api_tokens_user',
    ],
  ];
  for (const [label, attempt, code, constraint] of cases) {
    try {
      await attempt();
      t.fail(`${label}: accepted`);
    } catch (error) {
      t.type(error, postgres.PostgresError, label);
      t.match(error, { code, constraint_name: constraint }, `${label}: ${code} ${constraint}`);
    }
  }
  const [constraints] = await sql<{ names: string[] }[]>`
    select array_agg(conname::text order by conname) as names
    from pg_constraint where conrelid = 'api_tokens'::regclass and contype in ('c', 'u', 'f')
  `;
  t.same(
    constraints?.names,
    cases.map((c) => c[3]).sort(),
    'every check, unique and foreign key of the table has a case above',
  );
});

t.test('deleting a user deletes its tokens', async (t) => {
  const { sql, repos } = await testDatabase(t);
  const user = await makeUser(repos);
  await repos.tokens.create(user.id, hash('x'), new Date(Date.now() + 60_000));
  await repos.users.delete(user.id);
  const [row] = await sql`select count(*) as n from api_tokens`;
  t.equal(row?.n, 0);
});

t.test(
  'auth_changed is notified, with the user id, for every change that ends or changes a token',
  async (t) => {
    const { sql, repos } = await testDatabase(t);
    const user = await makeUser(repos);
    const other = await makeUser(repos);
    const heard: string[] = [];
    const { unlisten } = await sql.listen('auth_changed', (payload) => heard.push(payload));
    t.teardown(unlisten);
    const settle = async (n: number) => {
      for (let i = 0; i < 100 && heard.length < n; i++) await new Promise((r) => setTimeout(r, 20));
    };
    await repos.tokens.create(user.id, hash('t1'), new Date(Date.now() + 60_000));
    await repos.tokens.create(other.id, hash('t2'), new Date(Date.now() + 60_000));
    await repos.users.update(user.id, { username: 'renamed' }); // not an auth change
    await repos.tokens.revoke(hash('t1'));
    await settle(1);
    t.same(heard, [String(user.id)], 'a revoked token; a rename says nothing');
    await repos.users.update(other.id, { role: 'admin' });
    await repos.users.deactivate(user.id);
    await repos.users.update(other.id, { hashed_password: '$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3aGFzaA' });
    await settle(4);
    t.same(
      heard.slice(1),
      [String(other.id), String(user.id), String(other.id)],
      'role, active flag, password',
    );
    heard.length = 0;
    await repos.users.delete(other.id);
    await settle(1);
    t.ok(heard.length >= 1 && heard.every((p) => p === String(other.id)), 'a deleted user (and its tokens)');
  },
);
