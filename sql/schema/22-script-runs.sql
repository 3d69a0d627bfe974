-- script_runs: one row per execution of a script, kept after it ends (until retention,
-- which never removes a script's latest run), with its own outcome and metrics. It is
-- also the queue: `queued` rows are claimed by executors with FOR UPDATE SKIP LOCKED,
-- fairly between users (src/repositories/run-leases.ts); a claim is a lease that its
-- executor renews, and every write about a run is guarded by its executor_id.
-- The script's row keeps a summary of its latest run (status, metrics, last_run_id,
-- run_count), written by the same statement as the run (src/repositories/run-repository.ts).

create table script_runs (
  id                      bigint generated always as identity,
  script_id               bigint not null,
  -- Kept on the row (scoping, and distribution by user): always the script's owner.
  user_id                 bigint not null,
  trigger                 run_trigger not null default 'manual',
  -- The schedule that queued the run (its foreign key comes with script_schedules).
  schedule_id             bigint,
  status                  run_status not null default 'queued',
  -- The content the run ran (the script's sha256 when it was queued).
  script_sha256           text not null,
  exit_code               integer,
  execution_time_seconds  numeric(10, 3),
  cpu_time_seconds        numeric(10, 3),
  memory_usage_mb         numeric(10, 2),
  error_message           text,
  -- Bytes of output stored (run_log_chunks), and whether the output was cut at MAX_LOG_BYTES.
  log_bytes               bigint not null default 0,
  log_truncated           boolean not null default false,
  queued_at               timestamptz not null default now(),
  started_at              timestamptz,
  completed_at            timestamptz,
  -- Which executor holds the run, and until when its claim is good unless renewed.
  executor_id             text,
  lease_expires_at        timestamptz,

  constraint pk_script_runs primary key (id),
  -- The target of run_log_chunks' and scripts' foreign keys, which keep their user_id the run's.
  constraint uq_script_runs_id_user unique (id, user_id),
  -- (script_id, user_id): a run belongs to its script and to that script's owner.
  constraint fk_script_runs_script foreign key (script_id, user_id)
    references scripts (id, user_id) on delete cascade,
  -- As ck_scripts_sha256_format: no counted repetition.
  constraint ck_script_runs_sha256_format check (length(script_sha256) = 64 and script_sha256 !~ '[^0-9a-f]'),
  -- Not the other way round: deleting a schedule may leave its runs without one.
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

-- At most one live run per script: two concurrent executes cannot both queue one.
create unique index uq_script_runs_live_per_script on script_runs (script_id) where status in ('queued', 'running');
-- A script's runs newest first (keyset on id); also serves fk_script_runs_script's cascade.
create index ix_script_runs_script on script_runs (script_id, id desc);
-- A user's runs newest first (keyset on id).
create index ix_script_runs_user on script_runs (user_id, id desc);
-- A user's queued + running runs (MAX_CONCURRENT_SCRIPTS, and the fair claim's running counts).
create index ix_script_runs_user_live on script_runs (user_id, status) where status in ('queued', 'running');
-- The queue, oldest first: small, since only queued rows are in it.
create index ix_script_runs_queue on script_runs (queued_at, id) where status = 'queued';
-- Runs whose lease may have lapsed.
create index ix_script_runs_running_lease on script_runs (lease_expires_at) where status = 'running';
-- Retention: finished runs, oldest first.
create index ix_script_runs_finished on script_runs (completed_at, id) where status in ('completed', 'failed', 'cancelled');

-- The status machine of a run (API.md): queued -> running -> completed|failed|cancelled,
-- and queued -> cancelled, whoever writes the row.
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

-- Executors LISTEN: `run_queued` wakes an idle executor at once (it also polls),
-- `run_cancelled` tells the executor running a run to kill it (a cancel, or the row
-- deleted with its script or user). Sent at commit, whoever writes the row.
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

-- The script's latest run. Not `on delete`: retention never deletes a latest run, and
-- this makes PostgreSQL refuse it too; deleting the script deletes both.
alter table scripts
  add constraint fk_scripts_last_run foreign key (last_run_id, user_id)
    references script_runs (id, user_id);
