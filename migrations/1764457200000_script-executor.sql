-- Up Migration
-- The script executor: queue and lease columns on scripts, batched run output
-- in script_log_chunks, and NOTIFY triggers that wake and stop executors.
-- Locking: adding nullable columns does not rewrite scripts, but the new checks,
-- the unique (id, user_id) index and the partial indexes each scan it once while
-- writes to it wait (seconds per million rows): run it in a quiet moment.
-- Rows already `running` (no executor could own them) are failed first, and
-- `queued` ones get a queue time, so the new checks hold.

update scripts
set status = 'failed', completed_at = now(),
    error_message = 'the executor changed while this script was marked running; run it again'
where status = 'running';

alter table scripts
  add column queued_at timestamptz,
  add column executor_id text,
  add column lease_expires_at timestamptz;

update scripts set queued_at = updated_at where status = 'queued';

alter table scripts
  add constraint ck_scripts_queued_has_queued_at check (status <> 'queued' or queued_at is not null),
  add constraint ck_scripts_running_has_lease
    check (status <> 'running' or (executor_id is not null and executor_id <> '' and lease_expires_at is not null)),
  add constraint uq_scripts_id_user unique (id, user_id);

create index ix_scripts_queue on scripts (queued_at, id) where status = 'queued';
create index ix_scripts_running_lease on scripts (lease_expires_at) where status = 'running';

create function scripts_notify_executors() returns trigger
language plpgsql as $$
begin
  if tg_op = 'DELETE' then
    perform pg_notify('script_cancelled', old.id::text);
  elsif new.status = 'queued' then
    perform pg_notify('script_queued', new.id::text);
  elsif new.status = 'cancelled' and old.status = 'running' then
    perform pg_notify('script_cancelled', new.id::text);
  end if;
  return null;
end;
$$;

create trigger tg_scripts_notify_executors
  after update of status on scripts
  for each row
  when (old.status is distinct from new.status and new.status in ('queued', 'cancelled'))
  execute function scripts_notify_executors();

create trigger tg_scripts_notify_executors_on_delete
  after delete on scripts
  for each row
  when (old.status = 'running')
  execute function scripts_notify_executors();

create table script_log_chunks (
  id          bigint generated always as identity,
  script_id   bigint not null,
  -- Kept on every per-user table, so the data can be distributed by user.
  user_id     bigint not null,
  data        text not null,
  created_at  timestamptz not null default now(),

  constraint pk_script_log_chunks primary key (id),
  -- (script_id, user_id): a chunk belongs to its script and to that script's owner, never
  -- another user; it goes with the script (and so with the user).
  constraint fk_script_log_chunks_script foreign key (script_id, user_id)
    references scripts (id, user_id) on delete cascade,
  constraint ck_script_log_chunks_data_not_empty check (data <> '')
);

-- A run's chunks in order (followers read those after the last id they saw); also
-- serves fk_script_log_chunks_script's cascade.
create index ix_script_log_chunks_script on script_log_chunks (script_id, id);

-- Down Migration
drop table script_log_chunks;
drop trigger tg_scripts_notify_executors_on_delete on scripts;
drop trigger tg_scripts_notify_executors on scripts;
drop function scripts_notify_executors();
drop index ix_scripts_running_lease;
drop index ix_scripts_queue;
alter table scripts
  drop constraint uq_scripts_id_user,
  drop constraint ck_scripts_running_has_lease,
  drop constraint ck_scripts_queued_has_queued_at,
  drop column lease_expires_at,
  drop column executor_id,
  drop column queued_at;
