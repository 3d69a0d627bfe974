-- Up Migration
-- Statistics in constant time (issue 13): counters kept by triggers in the same
-- transaction as every change of scripts and users, summed on read; see
-- sql/schema/30-statistics.sql for the design. The counters are backfilled from the
-- existing rows here. Locking: CREATE TRIGGER takes a SHARE ROW EXCLUSIVE lock on
-- scripts and users, so writes wait from then until this migration commits (the
-- backfill reads each table once, and ix_scripts_completed_time scans scripts once:
-- seconds per million rows). No write can slip between the triggers and the backfill.

set local lock_timeout = '10s';
set local statement_timeout = '30min';

create table script_counters (
  status      script_status not null,
  stripe      bigint not null,
  scripts     bigint not null,
  size_bytes  bigint not null,
  -- Scripts with an execution_time_seconds, and the sum of those times (for averages).
  timed       bigint not null,
  time_sum    numeric not null,
  constraint pk_script_counters primary key (status, stripe)
);

create table script_upload_counts (
  hour     timestamptz not null,
  stripe   bigint not null,
  scripts  bigint not null,
  constraint pk_script_upload_counts primary key (hour, stripe)
);

-- One row per user that ever had a script: top users by script count is an index scan
-- of ix_user_script_counts_top. A user's concurrent uploads wait on this row (per user,
-- never across users). The row goes with its user (the cascade), so deleted users
-- never show up in the ranking.
create table user_script_counts (
  user_id       bigint not null,
  script_count  bigint not null,
  constraint pk_user_script_counts primary key (user_id),
  constraint fk_user_script_counts_user foreign key (user_id) references users (id) on delete cascade,
  constraint ck_user_script_counts_not_negative check (script_count >= 0)
);

create index ix_user_script_counts_top on user_script_counts (script_count desc, user_id);

create table user_counters (
  auth_provider      auth_provider not null,
  stripe             bigint not null,
  users              bigint not null,
  active             bigint not null,
  verified           bigint not null,
  ibkr_connected     bigint not null,
  -- Sum of extract(epoch from created_at), for the mean registration time.
  created_epoch_sum  numeric not null,
  constraint pk_user_counters primary key (auth_provider, stripe)
);

create table user_registration_counts (
  hour    timestamptz not null,
  stripe  bigint not null,
  users   bigint not null,
  constraint pk_user_registration_counts primary key (hour, stripe)
);

-- min/max run time of completed scripts (stats.performance): two index endpoint reads.
-- Not concurrently: it cannot be inside the migration's transaction, and writes to scripts
-- wait for the triggers' lock anyway.
-- squawk-ignore require-concurrent-index-creation
create index ix_scripts_completed_time on scripts (execution_time_seconds) where status = 'completed';

-- INSERT and DELETE: statement-level with a transition table named `changed`, so a COPY
-- or a cascade of a million rows is one aggregate, not a million trigger calls.
create function scripts_count_rows() returns trigger
language plpgsql as $$
declare
  sign constant int := case when tg_op = 'INSERT' then 1 else -1 end;
  my_stripe constant bigint := pg_backend_pid() % 16;
begin
  insert into script_counters as c (status, stripe, scripts, size_bytes, timed, time_sum)
  select status, my_stripe, sign * count(*), sign * sum(file_size),
    sign * count(execution_time_seconds), sign * coalesce(sum(execution_time_seconds), 0)
  from changed
  group by status
  order by status
  on conflict (status, stripe) do update
    set scripts = c.scripts + excluded.scripts,
        size_bytes = c.size_bytes + excluded.size_bytes,
        timed = c.timed + excluded.timed,
        time_sum = c.time_sum + excluded.time_sum;

  insert into script_upload_counts as c (hour, stripe, scripts)
  select date_trunc('hour', created_at, 'UTC'), my_stripe, sign * count(*)
  from changed
  group by 1
  order by 1
  on conflict (hour, stripe) do update set scripts = c.scripts + excluded.scripts;

  if tg_op = 'INSERT' then
    insert into user_script_counts as c (user_id, script_count)
    select user_id, count(*)
    from changed
    group by user_id
    order by user_id
    on conflict (user_id) do update set script_count = c.script_count + excluded.script_count;
  else
    -- Update only: when the user itself is being deleted its row may be gone already.
    update user_script_counts as c
    set script_count = c.script_count - d.n
    from (select user_id, count(*) as n from changed group by user_id) as d
    where c.user_id = d.user_id;
  end if;
  return null;
end;
$$;

-- UPDATE: row-level, and only when a counted column changed (WHEN, not a column list:
-- a column list misses values set by a BEFORE trigger or by whatever statement shape
-- another writer uses). Lease renewals and log writes cost nothing here.
create function scripts_count_update() returns trigger
language plpgsql as $$
declare
  my_stripe constant bigint := pg_backend_pid() % 16;
begin
  insert into script_counters as c (status, stripe, scripts, size_bytes, timed, time_sum)
  select d.status, my_stripe, sum(d.n), sum(d.size), sum(d.timed), sum(d.t)
  from (values
    (old.status, -1, -old.file_size, -(old.execution_time_seconds is not null)::int,
      -coalesce(old.execution_time_seconds, 0)),
    (new.status, 1, new.file_size, (new.execution_time_seconds is not null)::int,
      coalesce(new.execution_time_seconds, 0))
  ) as d(status, n, size, timed, t)
  group by d.status
  order by d.status
  on conflict (status, stripe) do update
    set scripts = c.scripts + excluded.scripts,
        size_bytes = c.size_bytes + excluded.size_bytes,
        timed = c.timed + excluded.timed,
        time_sum = c.time_sum + excluded.time_sum;

  if date_trunc('hour', old.created_at, 'UTC') <> date_trunc('hour', new.created_at, 'UTC') then
    insert into script_upload_counts as c (hour, stripe, scripts)
    select d.hour, my_stripe, d.n
    from (values (date_trunc('hour', old.created_at, 'UTC'), -1),
                 (date_trunc('hour', new.created_at, 'UTC'), 1)) as d(hour, n)
    order by d.hour
    on conflict (hour, stripe) do update set scripts = c.scripts + excluded.scripts;
  end if;

  if old.user_id <> new.user_id then
    update user_script_counts set script_count = script_count - 1 where user_id = old.user_id;
    insert into user_script_counts as c (user_id, script_count)
    values (new.user_id, 1)
    on conflict (user_id) do update set script_count = c.script_count + 1;
  end if;
  return null;
end;
$$;

create function scripts_count_truncated() returns trigger
language plpgsql as $$
begin
  delete from script_counters;
  delete from script_upload_counts;
  delete from user_script_counts;
  return null;
end;
$$;

create trigger tg_scripts_count_insert
  after insert on scripts
  referencing new table as changed
  for each statement
  execute function scripts_count_rows();

create trigger tg_scripts_count_delete
  after delete on scripts
  referencing old table as changed
  for each statement
  execute function scripts_count_rows();

create trigger tg_scripts_count_update
  after update on scripts
  for each row
  when (
    old.status is distinct from new.status
    or old.file_size is distinct from new.file_size
    or old.execution_time_seconds is distinct from new.execution_time_seconds
    or old.created_at is distinct from new.created_at
    or old.user_id is distinct from new.user_id
  )
  execute function scripts_count_update();

create trigger tg_scripts_count_truncate
  after truncate on scripts
  for each statement
  execute function scripts_count_truncated();

create function users_count_rows() returns trigger
language plpgsql as $$
declare
  sign constant int := case when tg_op = 'INSERT' then 1 else -1 end;
  my_stripe constant bigint := pg_backend_pid() % 16;
begin
  insert into user_counters as c
    (auth_provider, stripe, users, active, verified, ibkr_connected, created_epoch_sum)
  select auth_provider, my_stripe, sign * count(*), sign * count(*) filter (where is_active),
    sign * count(*) filter (where is_verified), sign * count(*) filter (where is_ibkr_connected),
    sign * sum(extract(epoch from created_at))
  from changed
  group by auth_provider
  order by auth_provider
  on conflict (auth_provider, stripe) do update
    set users = c.users + excluded.users,
        active = c.active + excluded.active,
        verified = c.verified + excluded.verified,
        ibkr_connected = c.ibkr_connected + excluded.ibkr_connected,
        created_epoch_sum = c.created_epoch_sum + excluded.created_epoch_sum;

  insert into user_registration_counts as c (hour, stripe, users)
  select date_trunc('hour', created_at, 'UTC'), my_stripe, sign * count(*)
  from changed
  group by 1
  order by 1
  on conflict (hour, stripe) do update set users = c.users + excluded.users;
  return null;
end;
$$;

create function users_count_update() returns trigger
language plpgsql as $$
declare
  my_stripe constant bigint := pg_backend_pid() % 16;
begin
  insert into user_counters as c
    (auth_provider, stripe, users, active, verified, ibkr_connected, created_epoch_sum)
  select d.auth_provider, my_stripe, sum(d.n), sum(d.active), sum(d.verified), sum(d.ibkr), sum(d.epoch)
  from (values
    (old.auth_provider, -1, -old.is_active::int, -old.is_verified::int, -old.is_ibkr_connected::int,
      -extract(epoch from old.created_at)),
    (new.auth_provider, 1, new.is_active::int, new.is_verified::int, new.is_ibkr_connected::int,
      extract(epoch from new.created_at))
  ) as d(auth_provider, n, active, verified, ibkr, epoch)
  group by d.auth_provider
  order by d.auth_provider
  on conflict (auth_provider, stripe) do update
    set users = c.users + excluded.users,
        active = c.active + excluded.active,
        verified = c.verified + excluded.verified,
        ibkr_connected = c.ibkr_connected + excluded.ibkr_connected,
        created_epoch_sum = c.created_epoch_sum + excluded.created_epoch_sum;

  if date_trunc('hour', old.created_at, 'UTC') <> date_trunc('hour', new.created_at, 'UTC') then
    insert into user_registration_counts as c (hour, stripe, users)
    select d.hour, my_stripe, d.n
    from (values (date_trunc('hour', old.created_at, 'UTC'), -1),
                 (date_trunc('hour', new.created_at, 'UTC'), 1)) as d(hour, n)
    order by d.hour
    on conflict (hour, stripe) do update set users = c.users + excluded.users;
  end if;
  return null;
end;
$$;

create function users_count_truncated() returns trigger
language plpgsql as $$
begin
  delete from user_counters;
  delete from user_registration_counts;
  return null;
end;
$$;

create trigger tg_users_count_insert
  after insert on users
  referencing new table as changed
  for each statement
  execute function users_count_rows();

create trigger tg_users_count_delete
  after delete on users
  referencing old table as changed
  for each statement
  execute function users_count_rows();

create trigger tg_users_count_update
  after update on users
  for each row
  when (
    old.auth_provider is distinct from new.auth_provider
    or old.is_active is distinct from new.is_active
    or old.is_verified is distinct from new.is_verified
    or old.is_ibkr_connected is distinct from new.is_ibkr_connected
    or old.created_at is distinct from new.created_at
  )
  execute function users_count_update();

create trigger tg_users_count_truncate
  after truncate on users
  for each statement
  execute function users_count_truncated();

-- Backfill, all into stripe 0.
insert into script_counters (status, stripe, scripts, size_bytes, timed, time_sum)
select status, 0, count(*), sum(file_size), count(execution_time_seconds),
  coalesce(sum(execution_time_seconds), 0)
from scripts
group by status;

insert into script_upload_counts (hour, stripe, scripts)
select date_trunc('hour', created_at, 'UTC'), 0, count(*)
from scripts
group by 1;

insert into user_script_counts (user_id, script_count)
select user_id, count(*)
from scripts
group by user_id;

insert into user_counters (auth_provider, stripe, users, active, verified, ibkr_connected, created_epoch_sum)
select auth_provider, 0, count(*), count(*) filter (where is_active), count(*) filter (where is_verified),
  count(*) filter (where is_ibkr_connected), sum(extract(epoch from created_at))
from users
group by auth_provider;

insert into user_registration_counts (hour, stripe, users)
select date_trunc('hour', created_at, 'UTC'), 0, count(*)
from users
group by 1;

-- Down Migration
drop trigger tg_users_count_truncate on users;
drop trigger tg_users_count_update on users;
drop trigger tg_users_count_delete on users;
drop trigger tg_users_count_insert on users;
drop function users_count_truncated();
drop function users_count_update();
drop function users_count_rows();
drop trigger tg_scripts_count_truncate on scripts;
drop trigger tg_scripts_count_update on scripts;
drop trigger tg_scripts_count_delete on scripts;
drop trigger tg_scripts_count_insert on scripts;
drop function scripts_count_truncated();
drop function scripts_count_update();
drop function scripts_count_rows();
-- squawk-ignore require-concurrent-index-deletion
drop index ix_scripts_completed_time;
-- squawk-ignore ban-drop-table
drop table user_registration_counts;
-- squawk-ignore ban-drop-table
drop table user_counters;
-- squawk-ignore ban-drop-table
drop table user_script_counts;
-- squawk-ignore ban-drop-table
drop table script_upload_counts;
-- squawk-ignore ban-drop-table
drop table script_counters;
