/**
 * login_attempts (LoginAttemptRepository, `repos.loginAttempts`): the per-email limit on
 * password guesses, one upsert per attempt. Time is moved by rewriting the row's
 * window and lock in SQL, never by waiting.
 */
import t from 'tap';
import { ValidationError } from '../../src/domain/errors.ts';
import type { LoginLimit } from '../../src/repositories/login-attempt-repository.ts';
import { testDatabase } from '../helpers/db.ts';

const LIMIT: LoginLimit = { maxFailures: 3, windowSeconds: 60, lockSeconds: 120 };

type AttemptRow = { failures: number; locked: boolean };

t.test('attempts within the limit are allowed; the one past it locks the email', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const row = async (email: string) => {
    const [r] = await sql<AttemptRow[]>`
      select failures, locked_until is not null as locked from login_attempts where email = ${email}
    `;
    return r;
  };
  for (let i = 1; i <= LIMIT.maxFailures; i++)
    t.same(await repos.loginAttempts.attempt('a@example.com', LIMIT), {
      allowed: true,
      retry_after_seconds: 1,
    });
  t.same(await row('a@example.com'), { failures: 3, locked: false });

  const locked = await repos.loginAttempts.attempt('a@example.com', LIMIT);
  t.equal(locked.allowed, false, 'the fourth attempt in the window is refused');
  t.ok(
    locked.retry_after_seconds > LIMIT.windowSeconds && locked.retry_after_seconds <= LIMIT.lockSeconds,
    `retry after the lock's length (${locked.retry_after_seconds} s)`,
  );
  t.same(await row('a@example.com'), { failures: 4, locked: true });

  const again = await repos.loginAttempts.attempt('a@example.com', LIMIT);
  t.equal(again.allowed, false, 'still locked');
  t.same(
    await row('a@example.com'),
    { failures: 4, locked: true },
    'an attempt while locked changes nothing',
  );

  t.same(
    await repos.loginAttempts.attempt('b@example.com', LIMIT),
    { allowed: true, retry_after_seconds: 1 },
    'another email has its own count',
  );
});

t.test('a window that is over, or a lock that ended, starts the count again', async (t) => {
  const { repos, sql } = await testDatabase(t);
  for (let i = 0; i < LIMIT.maxFailures; i++) await repos.loginAttempts.attempt('w@example.com', LIMIT);
  await sql`update login_attempts set window_started_at = now() - interval '61 seconds' where email = 'w@example.com'`;
  t.equal((await repos.loginAttempts.attempt('w@example.com', LIMIT)).allowed, true);
  const [fresh] = await sql<{ failures: number; recent: boolean }[]>`
    select failures, window_started_at > now() - interval '10 seconds' as recent
    from login_attempts where email = 'w@example.com'
  `;
  t.same(fresh, { failures: 1, recent: true }, 'a new window, counting this attempt only');

  for (let i = 0; i < LIMIT.maxFailures; i++) await repos.loginAttempts.attempt('l@example.com', LIMIT);
  t.equal((await repos.loginAttempts.attempt('l@example.com', LIMIT)).allowed, false);
  await sql`update login_attempts set locked_until = now() - interval '1 second' where email = 'l@example.com'`;
  t.equal((await repos.loginAttempts.attempt('l@example.com', LIMIT)).allowed, true, 'the lock ended');
  const [unlocked] = await sql<AttemptRow[]>`
    select failures, locked_until is not null as locked from login_attempts where email = 'l@example.com'
  `;
  t.same(unlocked, { failures: 1, locked: false });
});

t.test('clear forgets the attempts of one email only', async (t) => {
  const { repos, sql } = await testDatabase(t);
  for (let i = 0; i <= LIMIT.maxFailures; i++) await repos.loginAttempts.attempt('c@example.com', LIMIT);
  await repos.loginAttempts.attempt('d@example.com', LIMIT);
  t.equal((await repos.loginAttempts.attempt('c@example.com', LIMIT)).allowed, false);
  await repos.loginAttempts.clear('c@example.com');
  t.equal((await repos.loginAttempts.attempt('c@example.com', LIMIT)).allowed, true, 'unlocked by a sign-in');
  const rows = await sql<{ email: string; failures: number }[]>`
    select email, failures from login_attempts order by email
  `;
  t.same(rows, [
    { email: 'c@example.com', failures: 1 },
    { email: 'd@example.com', failures: 1 },
  ]);
});

t.test('prune deletes rows whose window is over and whose lock ended, nothing else', async (t) => {
  const { repos, sql } = await testDatabase(t);
  for (const email of [
    'old@example.com',
    'old-locked@example.com',
    'old-unlocked@example.com',
    'new@example.com',
  ])
    await repos.loginAttempts.attempt(email, LIMIT);
  await sql`
    update login_attempts set window_started_at = now() - interval '2 minutes'
    where email in ('old@example.com', 'old-locked@example.com', 'old-unlocked@example.com')
  `;
  await sql`update login_attempts set locked_until = now() + interval '1 minute' where email = 'old-locked@example.com'`;
  await sql`update login_attempts set locked_until = now() - interval '1 minute' where email = 'old-unlocked@example.com'`;
  t.equal(await repos.loginAttempts.prune(LIMIT.windowSeconds), 2);
  const left = await sql<{ email: string }[]>`select email from login_attempts order by email`;
  t.same(
    left.map((r) => r.email),
    ['new@example.com', 'old-locked@example.com'],
  );
  t.equal(await repos.loginAttempts.prune(LIMIT.windowSeconds), 0, 'nothing more to prune');
});

t.test('an email longer than the column allows is refused by its check, not stored', async (t) => {
  const { repos, sql } = await testDatabase(t);
  await t.rejects(repos.loginAttempts.attempt(`${'x'.repeat(320)}@example.com`, LIMIT), {
    constructor: ValidationError,
    errors: [{ path: '', message: 'violates rule ck_login_attempts_email_length' }],
  });
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from login_attempts`;
  t.equal(row?.n, 0);
});
