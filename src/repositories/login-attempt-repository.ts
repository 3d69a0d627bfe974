/**
 * Sign-in attempts per email (table login_attempts), shared by every API process:
 * the per-account limit on password guesses. See sql/schema/12-login-attempts.sql.
 */
import type { Database } from '../db/database.ts';

export interface LoginLimit {
  /** Attempts allowed per window; the next one locks the email. */
  maxFailures: number;
  windowSeconds: number;
  lockSeconds: number;
}

export interface AttemptVerdict {
  allowed: boolean;
  /** Seconds until the lock ends, when not allowed. */
  retry_after_seconds: number;
}

export class LoginAttemptRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  /**
   * Counts an attempt for `email`, in one statement (the row lock of the upsert
   * serialises concurrent attempts): allowed while the email is not locked and the
   * attempts in the current window stay within `maxFailures`; the attempt past that
   * locks the email for `lockSeconds`. A window that is over, or a lock that ended,
   * starts the count again. An attempt while locked changes nothing.
   */
  async attempt(email: string, limit: LoginLimit): Promise<AttemptVerdict> {
    const sql = this.db.sql;
    const window = sql`make_interval(secs => ${limit.windowSeconds})`;
    const row = await this.db.one<{ locked_until: Date | null; retry_after_seconds: number }>(
      'loginAttempts.attempt',
      sql`
        insert into login_attempts as a (email, failures, window_started_at, locked_until)
        values (${email}, 1, now(), null)
        on conflict (email) do update set
          failures = case
            when a.locked_until > now() then a.failures
            when a.locked_until is not null or a.window_started_at <= now() - ${window} then 1
            else a.failures + 1
          end,
          window_started_at = case
            when a.locked_until > now() then a.window_started_at
            when a.locked_until is not null or a.window_started_at <= now() - ${window} then now()
            else a.window_started_at
          end,
          locked_until = case
            when a.locked_until > now() then a.locked_until
            when a.locked_until is null
              and a.window_started_at > now() - ${window}
              and a.failures + 1 > ${limit.maxFailures}
              then now() + make_interval(secs => ${limit.lockSeconds})
            else null
          end
        returning locked_until,
          greatest(1, ceil(extract(epoch from coalesce(locked_until, now()) - now())))::int as retry_after_seconds
      `,
    );
    return { allowed: row.locked_until === null, retry_after_seconds: row.retry_after_seconds };
  }

  /** Forgets the attempts of `email` (a successful sign-in). */
  async clear(email: string): Promise<void> {
    const sql = this.db.sql;
    await this.db.count('loginAttempts.clear', sql`delete from login_attempts where email = ${email}`);
  }

  /** Deletes rows whose window ended before `windowSeconds` ago and whose lock is over; returns how many. */
  async prune(windowSeconds: number): Promise<number> {
    const sql = this.db.sql;
    return this.db.count(
      'loginAttempts.prune',
      sql`
        delete from login_attempts
        where window_started_at < now() - make_interval(secs => ${windowSeconds})
          and (locked_until is null or locked_until < now())
      `,
    );
  }
}
