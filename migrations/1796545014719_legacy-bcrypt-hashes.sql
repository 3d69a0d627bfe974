-- Up Migration
-- import-legacy (issue 13) brings the original platform's bcrypt hashes along, so that
-- every user signs in with the old password; the hash becomes argon2id at the first
-- sign-in. The check admits well-formed bcrypt hashes from now on, and triggers refuse
-- them from every writer except the import (which sets dollarclub.legacy_import for
-- its transaction). Locking: replacing the check scans users once under an ACCESS
-- EXCLUSIVE lock (well under a second per million users).

set local lock_timeout = '10s';
set local statement_timeout = '10min';

-- The new check admits a superset of the old one (NOT VALID would not spare the scan
-- inside this transaction).
alter table users
  drop constraint ck_users_hashed_password_argon2id,
  -- squawk-ignore constraint-missing-not-valid
  add constraint ck_users_hashed_password_argon2id
    check (
      hashed_password is null
      or hashed_password like '$argon2id$%'
      or hashed_password ~ '^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$'
    );

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

-- Down Migration
-- Fails while imported bcrypt hashes remain (their users have not signed in since).
drop trigger tg_users_bcrypt_only_by_import_update on users;
drop trigger tg_users_bcrypt_only_by_import on users;
drop function users_refuse_bcrypt_outside_import();
alter table users
  drop constraint ck_users_hashed_password_argon2id,
  -- squawk-ignore constraint-missing-not-valid
  add constraint ck_users_hashed_password_argon2id
    check (hashed_password is null or hashed_password like '$argon2id$%');
