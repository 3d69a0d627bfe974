-- Up Migration
-- The two core tables of the platform, users and scripts, with every rule
-- of DESIGN.md as a named constraint. Creates from an empty database the
-- schema that sql/schema/00..20 describe.

-- Extensions the schema depends on.
--
-- pg_trgm: trigram GIN indexes make `ilike '%term%'` on users.email and
-- users.username an index scan instead of a sequential scan (user search).
create extension if not exists pg_trgm with schema public;

-- Enum types. Labels are lower-case everywhere: here, in TypeScript
-- (src/domain/enums.ts) and in JSON; test/domain/enums.test.ts compares them.
-- Adding a label is `alter type ... add value` in a migration; the new label
-- cannot be used inside the transaction that added it.

create type auth_provider as enum ('email', 'google');

create type user_role as enum ('user', 'admin');

create type script_status as enum ('uploaded', 'queued', 'running', 'completed', 'failed', 'cancelled');

-- Trigger functions shared by several tables.

-- Keeps updated_at honest whoever writes the row (the app, a DBA, a script).
-- The triggers fire only when a column really changed, so a no-op UPDATE
-- leaves updated_at alone.
create function set_updated_at() returns trigger
language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

-- users: people who sign in, by email + password or by Google, and may link
-- one Interactive Brokers account.

create table users (
  id                     bigint generated always as identity,
  -- Stored trimmed and lower-cased (ck_users_email_lower_case), so equality is exact
  -- and uq_users_email is case-insensitive without citext.
  email                  text not null,
  username               text not null,
  -- argon2id PHC string; null only for users who sign in with Google.
  hashed_password        text,
  auth_provider          auth_provider not null default 'email',
  google_id              text,
  role                   user_role not null default 'user',
  is_active              boolean not null default true,
  is_verified            boolean not null default false,
  ibkr_user_id           text,
  -- AES-256-GCM ciphertexts (src/services/secret-box.ts), never plain tokens.
  ibkr_access_token      text,
  ibkr_refresh_token     text,
  ibkr_token_expires_at  timestamptz,
  ibkr_connected_at      timestamptz,
  -- Generated, so `where is_ibkr_connected` and every returned row agree by construction.
  is_ibkr_connected      boolean not null generated always as (ibkr_user_id is not null) stored,
  created_at             timestamptz not null default now(),
  updated_at             timestamptz not null default now(),
  last_login_at          timestamptz,

  constraint pk_users primary key (id),
  constraint uq_users_email unique (email),
  constraint uq_users_google_id unique (google_id),
  constraint uq_users_ibkr_user_id unique (ibkr_user_id),
  -- The same rule as EMAIL_PATTERN in src/domain/user.ts: no whitespace (JavaScript's \s,
  -- which counts the Unicode spaces that PostgreSQL's [:space:] does not), one @, a dot after it.
  constraint ck_users_email_format check (
    email ~ '^[^@\s\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+@[^@\s\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+\.[^@\s\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+$'
    and length(email) <= 254
  ),
  constraint ck_users_email_lower_case check (email = lower(btrim(email))),
  constraint ck_users_username_format check (username ~ '^[A-Za-z0-9_-]{3,100}$'),
  constraint ck_users_hashed_password_argon2id
    check (hashed_password is null or hashed_password like '$argon2id$%'),
  constraint ck_users_email_user_has_password
    check (auth_provider <> 'email' or hashed_password is not null),
  constraint ck_users_google_user_has_google_id
    check (auth_provider <> 'google' or google_id is not null),
  constraint ck_users_google_id_length check (length(google_id) between 1 and 255),
  constraint ck_users_ibkr_user_id_length check (length(ibkr_user_id) between 1 and 100),
  -- No IBKR detail survives without the account it belongs to, and a link has a time.
  constraint ck_users_ibkr_fields_need_account check (
    ibkr_user_id is not null
    or (ibkr_access_token is null and ibkr_refresh_token is null
        and ibkr_token_expires_at is null and ibkr_connected_at is null)
  ),
  constraint ck_users_ibkr_connected_at check (ibkr_user_id is null or ibkr_connected_at is not null)
);

-- Login looks users up by email and provider.
create index ix_users_email_auth_provider on users (email, auth_provider);
create index ix_users_created_at on users (created_at);
create index ix_users_last_login_at on users (last_login_at);
-- Substring search (`ilike '%q%'`) on email or username: a BitmapOr of these two.
create index ix_users_email_trgm on users using gin (email gin_trgm_ops);
create index ix_users_username_trgm on users using gin (username gin_trgm_ops);

-- updated_at follows changes of what a user is, not sign-ins: last_login_at is left out.
-- (A BEFORE trigger's WHEN cannot compare whole rows of a table with generated columns.)
create trigger tg_users_set_updated_at
  before update on users
  for each row
  when (
    (old.email, old.username, old.hashed_password, old.auth_provider, old.google_id,
        old.role, old.is_active, old.is_verified, old.ibkr_user_id, old.ibkr_access_token,
        old.ibkr_refresh_token, old.ibkr_token_expires_at, old.ibkr_connected_at)
    is distinct from
    (new.email, new.username, new.hashed_password, new.auth_provider, new.google_id,
        new.role, new.is_active, new.is_verified, new.ibkr_user_id, new.ibkr_access_token,
        new.ibkr_refresh_token, new.ibkr_token_expires_at, new.ibkr_connected_at)
  )
  execute function set_updated_at();

-- scripts: uploaded trading-strategy files, their current state and the
-- outcome of their latest run. The table is also the run queue (see the
-- executor columns added by the executor migration).

create table scripts (
  id                      bigint generated always as identity,
  user_id                 bigint not null,
  -- Generated storage name (random, with the extension); the file lives at file_path.
  filename                text not null,
  -- The client's name, sanitised, for display and Content-Disposition only.
  original_filename       text not null,
  file_path               text not null,
  file_size               bigint not null,
  file_extension          text not null,
  sha256                  text not null,
  status                  script_status not null default 'uploaded',
  execution_logs          text,
  error_message           text,
  exit_code               integer,
  execution_time_seconds  numeric(10, 3),
  memory_usage_mb         numeric(10, 2),
  started_at              timestamptz,
  completed_at            timestamptz,
  created_at              timestamptz not null default now(),
  updated_at              timestamptz not null default now(),

  constraint pk_scripts primary key (id),
  constraint fk_scripts_user foreign key (user_id) references users (id) on delete cascade,
  constraint uq_scripts_filename unique (filename),
  constraint ck_scripts_positive_file_size check (file_size > 0),
  constraint ck_scripts_file_extension check (file_extension in ('.py', '.js', '.ts')),
  constraint ck_scripts_filename_extension check (right(filename, length(file_extension)) = file_extension),
  constraint ck_scripts_sha256_format check (sha256 ~ '^[0-9a-f]{64}$'),
  constraint ck_scripts_original_filename_length check (length(original_filename) between 1 and 255),
  constraint ck_scripts_execution_time_non_negative check (execution_time_seconds >= 0),
  constraint ck_scripts_memory_usage_non_negative check (memory_usage_mb >= 0),
  constraint ck_scripts_running_has_started_at check (status <> 'running' or started_at is not null),
  constraint ck_scripts_finished_has_completed_at
    check (status not in ('completed', 'failed', 'cancelled') or completed_at is not null),
  constraint ck_scripts_completed_after_started check (completed_at >= started_at)
);

-- A user's scripts by state, and the per-user count of queued + running runs.
create index ix_scripts_user_status on scripts (user_id, status);
-- A user's scripts newest first, offset or keyset; also serves fk_scripts_user's cascade.
create index ix_scripts_user_created on scripts (user_id, created_at desc, id desc);
-- Everyone's scripts newest first (admin listings, recent uploads, uploads per period).
create index ix_scripts_created_at on scripts (created_at, id);
create index ix_scripts_status on scripts (status);

create trigger tg_scripts_set_updated_at
  before update on scripts
  for each row
  when (old.* is distinct from new.*)
  execute function set_updated_at();

-- The status machine of API.md, enforced for every writer:
-- uploaded|completed|failed|cancelled -> queued -> running -> completed|failed|cancelled,
-- and queued -> cancelled. The app's UPDATEs already guard with `where status = any(...)`;
-- this refuses a bad transition written any other way, as a check violation
-- named like a constraint so that the error mapper treats it as one.
create function scripts_check_status_transition() returns trigger
language plpgsql as $$
begin
  if not (
       (old.status in ('uploaded', 'completed', 'failed', 'cancelled') and new.status = 'queued')
    or (old.status = 'queued' and new.status in ('running', 'cancelled'))
    or (old.status = 'running' and new.status in ('completed', 'failed', 'cancelled'))
  ) then
    raise exception 'script % cannot go from % to %', old.id, old.status, new.status
      using errcode = 'check_violation',
            constraint = 'ck_scripts_status_transition',
            table = 'scripts';
  end if;
  return new;
end;
$$;

create trigger tg_scripts_status_transition
  before update of status on scripts
  for each row
  when (old.status is distinct from new.status)
  execute function scripts_check_status_transition();

-- Down Migration
drop table scripts;
drop function scripts_check_status_transition();
drop table users;
drop function set_updated_at();
drop type script_status;
drop type user_role;
drop type auth_provider;
drop extension pg_trgm;
