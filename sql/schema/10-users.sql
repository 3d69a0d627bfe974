-- users: people who sign in, by email + password or by Google, and may link
-- one Interactive Brokers account.

create table users (
  id                     bigint generated always as identity,
  -- Stored trimmed and lower-cased (ck_users_email_lower_case), so equality is exact
  -- and uq_users_email is case-insensitive without citext.
  email                  text not null,
  username               text not null,
  -- argon2id PHC string; null only for users who sign in with Google. A bcrypt hash
  -- only when import-legacy brought it from the original platform (it becomes argon2id
  -- at the user's first sign-in); tg_users_bcrypt_only_by_import refuses any other writer.
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
    check (
      hashed_password is null
      or hashed_password like '$argon2id$%'
      or hashed_password ~ '^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$'
    ),
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

-- bcrypt hashes enter only through import-legacy, which sets dollarclub.legacy_import
-- for its transaction; the app never writes one (issue 13). Refused like the check,
-- under its name, so the error mapper treats it as one.
create function users_refuse_bcrypt_outside_import() returns trigger
language plpgsql as $$
begin
  if coalesce(current_setting('dollarclub.legacy_import', true), '') <> 'on' then
    raise exception 'a bcrypt password hash is written only by import-legacy'
      using errcode = 'check_violation',
            constraint = 'ck_users_hashed_password_argon2id',
            table = 'users';
  end if;
  return new;
end;
$$;

create trigger tg_users_bcrypt_only_by_import
  before insert on users
  for each row
  when (new.hashed_password like '$2%')
  execute function users_refuse_bcrypt_outside_import();

create trigger tg_users_bcrypt_only_by_import_update
  before update of hashed_password on users
  for each row
  when (new.hashed_password like '$2%' and new.hashed_password is distinct from old.hashed_password)
  execute function users_refuse_bcrypt_outside_import();
