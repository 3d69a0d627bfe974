-- Up Migration
-- Failed sign-ins per email, shared by every API process (issue 7, item 4): a
-- per-account limit that spreading attempts over client addresses does not get around.
-- A new table only: no lock on existing rows (the timeouts only satisfy squawk).
set local lock_timeout = '5s';
set local statement_timeout = '30s';

-- login_attempts: sign-in attempts per email, shared by every API process, so that
-- spreading guesses over many client addresses (or processes) does not help. Keyed
-- by the normalised email as typed, whether or not an account has it: a lock says
-- nothing about which emails are registered. One row per email at most; a
-- successful sign-in deletes it, the maintenance loop prunes stale ones.
--
-- Every attempt is one statement (src/repositories/login-attempt-repository.ts):
-- an upsert that counts it within the window, or locks the email for a while once
-- more than the allowed number came in the window. Counted before the password is
-- checked, so parallel guesses cannot all pass the check.

create table login_attempts (
  email              text not null,
  failures           bigint not null,
  window_started_at  timestamptz not null default now(),
  locked_until       timestamptz,

  constraint pk_login_attempts primary key (email),
  constraint ck_login_attempts_failures_positive check (failures > 0),
  constraint ck_login_attempts_email_length check (length(email) <= 320)
);

-- Pruning of rows whose window and lock are over.
create index ix_login_attempts_window_started_at on login_attempts (window_started_at);

-- Down Migration
-- squawk-ignore ban-drop-table
drop table login_attempts;
