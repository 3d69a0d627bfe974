-- scripts: uploaded trading-strategy files, and the summary of their latest run
-- (script_runs, 22-script-runs.sql, which is also the queue): status, metrics and
-- times of that run, written by the same statement that writes the run.

create table scripts (
  id                      bigint generated always as identity,
  user_id                 bigint not null,
  -- Generated name (random, with the extension); the bytes are in script_contents.
  filename                text not null,
  -- The client's name, sanitised, for display and Content-Disposition only.
  original_filename       text not null,
  -- Where the bytes of a script uploaded before script_contents existed still are
  -- (a key under STORAGE_DIR), until `npm run cli -- move-contents` copies them into
  -- script_contents and clears it; null for every script uploaded since.
  file_path               text,
  file_size               bigint not null,
  file_extension          text not null,
  sha256                  text not null,
  status                  script_status not null default 'uploaded',
  error_message           text,
  exit_code               integer,
  execution_time_seconds  numeric(10, 3),
  memory_usage_mb         numeric(10, 2),
  started_at              timestamptz,
  completed_at            timestamptz,
  created_at              timestamptz not null default now(),
  updated_at              timestamptz not null default now(),
  -- The summary of the latest run (script_runs): the status and metric columns above are
  -- its, and last_run_id names it (fk_scripts_last_run, added in 22-script-runs.sql).
  -- run_count counts every run ever queued; retention does not lower it.
  last_run_id             bigint,
  run_count               integer not null default 0,
  -- Whether runs of this script get the owner's IBKR credentials in their environment
  -- (decrypted by the executor when the run starts; PATCH /scripts/{id}).
  ibkr_access             boolean not null default false,

  constraint pk_scripts primary key (id),
  constraint fk_scripts_user foreign key (user_id) references users (id) on delete cascade,
  constraint uq_scripts_filename unique (filename),
  constraint ck_scripts_positive_file_size check (file_size > 0),
  constraint ck_scripts_file_extension check (file_extension in ('.py', '.js', '.ts')),
  constraint ck_scripts_filename_extension check (right(filename, length(file_extension)) = file_extension),
  -- Not `~ '^[0-9a-f]{64}$'`: the regex engine expands a counted repetition (~8 µs a row).
  constraint ck_scripts_sha256_format check (length(sha256) = 64 and sha256 !~ '[^0-9a-f]'),
  constraint ck_scripts_original_filename_length check (length(original_filename) between 1 and 255),
  constraint ck_scripts_execution_time_non_negative check (execution_time_seconds >= 0),
  constraint ck_scripts_memory_usage_non_negative check (memory_usage_mb >= 0),
  constraint ck_scripts_running_has_started_at check (status <> 'running' or started_at is not null),
  constraint ck_scripts_finished_has_completed_at
    check (status not in ('completed', 'failed', 'cancelled') or completed_at is not null),
  constraint ck_scripts_completed_after_started check (completed_at >= started_at),
  constraint ck_scripts_run_count_non_negative check (run_count >= 0),
  -- The target of script_runs' foreign key, which keeps a run's user_id its script's.
  constraint uq_scripts_id_user unique (id, user_id)
);

-- A user's scripts by state, and the per-user count of queued + running runs.
create index ix_scripts_user_status on scripts (user_id, status);
-- A user's scripts newest first, offset or keyset; also serves fk_scripts_user's cascade.
create index ix_scripts_user_created on scripts (user_id, created_at desc, id desc);
-- Everyone's scripts newest first (admin listings, recent uploads, uploads per period).
create index ix_scripts_created_at on scripts (created_at, id);
create index ix_scripts_status on scripts (status);
-- Which script a run is the latest of (retention keeps those; fk_scripts_last_run's checks).
create index ix_scripts_last_run on scripts (last_run_id, user_id);

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
