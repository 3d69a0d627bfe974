-- Up Migration
-- Bearer tokens for the REST API (register/login/logout), stored as SHA-256
-- hashes, and the auth_changed notifications that keep API processes' token
-- caches honest. New table and triggers only: no lock on existing rows.

-- api_tokens: bearer tokens handed out by register and login. Only a SHA-256
-- of each token is stored (the token has 256 random bits, so a fast hash is
-- enough: there is nothing to brute-force). A token expires, and logout
-- revokes it; expired and revoked rows are pruned by the maintenance loop.

create table api_tokens (
  id          bigint generated always as identity,
  user_id     bigint not null,
  token_hash  bytea not null,
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  revoked_at  timestamptz,

  constraint pk_api_tokens primary key (id),
  constraint fk_api_tokens_user foreign key (user_id) references users (id) on delete cascade,
  constraint uq_api_tokens_token_hash unique (token_hash),
  constraint ck_api_tokens_token_hash_sha256 check (octet_length(token_hash) = 32),
  constraint ck_api_tokens_expires_after_created check (expires_at > created_at)
);

-- Revoking every token of a user (password change), and the cascade from users.
create index ix_api_tokens_user_id on api_tokens (user_id);
-- Pruning.
create index ix_api_tokens_expires_at on api_tokens (expires_at);

-- API processes cache verified tokens for a few seconds (AUTH_CACHE_TTL_SECONDS).
-- Whatever ends a token or changes what it may do — revocation, deletion, a
-- deactivated or deleted user, a role or password change — notifies channel
-- `auth_changed` with the user's id, at commit, and every process drops that
-- user's cached tokens. Triggers, so that a change made by hand counts too.
-- The trigger's argument names the column holding the user id (users.id, api_tokens.user_id).
create function notify_auth_changed() returns trigger
language plpgsql as $$
begin
  perform pg_notify('auth_changed', to_jsonb(old) ->> tg_argv[0]);
  return null;
end;
$$;

create trigger tg_api_tokens_notify_auth_changed
  after update of revoked_at, expires_at or delete on api_tokens
  for each row
  execute function notify_auth_changed('user_id');

create trigger tg_users_notify_auth_changed_on_delete
  after delete on users
  for each row
  execute function notify_auth_changed('id');

create trigger tg_users_notify_auth_changed_on_update
  after update of is_active, role, hashed_password on users
  for each row
  when (
    old.is_active is distinct from new.is_active
    or old.role is distinct from new.role
    or old.hashed_password is distinct from new.hashed_password
  )
  execute function notify_auth_changed('id');

-- Down Migration
drop trigger tg_users_notify_auth_changed_on_update on users;
drop trigger tg_users_notify_auth_changed_on_delete on users;
drop table api_tokens;
drop function notify_auth_changed();
