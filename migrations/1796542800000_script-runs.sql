-- Up Migration
-- Runs (issue 9): every execution of a script is a row of script_runs, kept with its
-- own output (run_log_chunks, one chunk per batch, numbered per run) and outcome; the
-- script keeps a summary of its latest run (its status and metric columns as before,
-- plus last_run_id and run_count), written by the same statement as the run.
--
-- This migration only adds objects. Locking: the two new scripts columns are nullable
-- or have a constant default (catalog only, no rewrite), so ACCESS EXCLUSIVE on scripts
-- is held for milliseconds; adding fk_scripts_last_run then reads scripts once (every
-- last_run_id is null: a sequential scan, about a second per million rows) while writes
-- to scripts wait (SHARE ROW EXCLUSIVE) and reads go on. The new tables are empty.
-- Moving the queue to script_runs, and turning every script's last execution into a
-- run, is the next migration (script-runs-upgrade), done in batches.
--
-- The two new constraints of scripts are added NOT VALID (no scan under this
-- transaction's ACCESS EXCLUSIVE lock) and validated by the migration script-runs-validate,
-- in a transaction of its own that blocks neither reads nor writes. A lock that cannot be
-- had in 5 s fails the migration instead of queueing every query of the table behind it.

set local lock_timeout = '5s';
set local statement_timeout = '10min';

create type run_trigger as enum ('manual', 'schedule');

create type run_status as enum ('queued', 'running', 'completed', 'failed', 'cancelled');

create table script_runs (
  id                      bigint generated always as identity,
  script_id               bigint not null,
  user_id                 bigint not null,
  trigger                 run_trigger not null default 'manual',
  schedule_id             bigint,
  status                  run_status not null default 'queued',
  script_sha256           text not null,
  -- squawk-ignore prefer-bigint-over-int
  exit_code               integer,
  execution_time_seconds  numeric(10, 3),
  cpu_time_seconds        numeric(10, 3),
  memory_usage_mb         numeric(10, 2),
  error_message           text,
  log_bytes               bigint not null default 0,
  log_truncated           boolean not null default false,
  queued_at               timestamptz not null default now(),
  started_at              timestamptz,
  completed_at            timestamptz,
  executor_id             text,
  lease_expires_at        timestamptz,

  constraint pk_script_runs primary key (id),
  constraint uq_script_runs_id_user unique (id, user_id),
  constraint fk_script_runs_script foreign key (script_id, user_id)
    references scripts (id, user_id) on delete cascade,
  constraint ck_script_runs_sha256_format check (script_sha256 ~ '^[0-9a-f]{64}$'),
  constraint ck_script_runs_schedule_has_schedule_trigger check (schedule_id is null or trigger = 'schedule'),
  constraint ck_script_runs_execution_time_non_negative check (execution_time_seconds >= 0),
  constraint ck_script_runs_cpu_time_non_negative check (cpu_time_seconds >= 0),
  constraint ck_script_runs_memory_usage_non_negative check (memory_usage_mb >= 0),
  constraint ck_script_runs_log_bytes_non_negative check (log_bytes >= 0),
  constraint ck_script_runs_queued_not_started
    check (status <> 'queued' or (started_at is null and completed_at is null)),
  constraint ck_script_runs_running_has_started_at check (status <> 'running' or started_at is not null),
  constraint ck_script_runs_running_has_lease
    check (status <> 'running' or (executor_id is not null and executor_id <> '' and lease_expires_at is not null)),
  constraint ck_script_runs_finished_has_completed_at
    check (status not in ('completed', 'failed', 'cancelled') or completed_at is not null),
  constraint ck_script_runs_completed_after_started check (completed_at >= started_at)
);

create unique index uq_script_runs_live_per_script on script_runs (script_id) where status in ('queued', 'running');
create index ix_script_runs_script on script_runs (script_id, id desc);
create index ix_script_runs_user on script_runs (user_id, id desc);
create index ix_script_runs_user_live on script_runs (user_id, status) where status in ('queued', 'running');
create index ix_script_runs_queue on script_runs (queued_at, id) where status = 'queued';
create index ix_script_runs_running_lease on script_runs (lease_expires_at) where status = 'running';
create index ix_script_runs_finished on script_runs (completed_at, id) where status in ('completed', 'failed', 'cancelled');

create function script_runs_check_status_transition() returns trigger
language plpgsql as $$
begin
  if not (
       (old.status = 'queued' and new.status in ('running', 'cancelled'))
    or (old.status = 'running' and new.status in ('completed', 'failed', 'cancelled'))
  ) then
    raise exception 'run % cannot go from % to %', old.id, old.status, new.status
      using errcode = 'check_violation',
            constraint = 'ck_script_runs_status_transition',
            table = 'script_runs';
  end if;
  return new;
end;
$$;

create trigger tg_script_runs_status_transition
  before update of status on script_runs
  for each row
  when (old.status is distinct from new.status)
  execute function script_runs_check_status_transition();

create function script_runs_notify_executors() returns trigger
language plpgsql as $$
begin
  if tg_op = 'DELETE' then
    perform pg_notify('run_cancelled', old.id::text);
  elsif new.status = 'cancelled' then
    perform pg_notify('run_cancelled', new.id::text);
  else
    perform pg_notify('run_queued', new.id::text);
  end if;
  return null;
end;
$$;

create trigger tg_script_runs_notify_queued
  after insert on script_runs
  for each row
  when (new.status = 'queued')
  execute function script_runs_notify_executors();

create trigger tg_script_runs_notify_cancelled
  after update of status on script_runs
  for each row
  when (old.status = 'running' and new.status = 'cancelled')
  execute function script_runs_notify_executors();

create trigger tg_script_runs_notify_deleted
  after delete on script_runs
  for each row
  when (old.status = 'running')
  execute function script_runs_notify_executors();

create table run_log_chunks (
  run_id      bigint not null,
  user_id     bigint not null,
  -- squawk-ignore prefer-bigint-over-int
  seq         integer not null,
  data        text not null,
  created_at  timestamptz not null default now(),

  constraint pk_run_log_chunks primary key (run_id, seq),
  constraint fk_run_log_chunks_run foreign key (run_id, user_id)
    references script_runs (id, user_id) on delete cascade,
  constraint ck_run_log_chunks_seq_non_negative check (seq >= 0),
  constraint ck_run_log_chunks_data_not_empty check (data <> '')
);

alter table scripts
  add column last_run_id bigint,
  -- squawk-ignore prefer-bigint-over-int
  add column run_count integer not null default 0,
  add constraint ck_scripts_run_count_non_negative check (run_count >= 0) not valid,
  add constraint fk_scripts_last_run foreign key (last_run_id, user_id)
    references script_runs (id, user_id) not valid;

-- Down Migration
alter table scripts
  drop constraint fk_scripts_last_run,
  drop constraint ck_scripts_run_count_non_negative,
  -- squawk-ignore ban-drop-column
  drop column run_count,
  -- squawk-ignore ban-drop-column
  drop column last_run_id;
-- squawk-ignore ban-drop-table
drop table run_log_chunks;
-- squawk-ignore ban-drop-table
drop table script_runs;
drop function script_runs_notify_executors();
drop function script_runs_check_status_transition();
drop type run_status;
drop type run_trigger;
