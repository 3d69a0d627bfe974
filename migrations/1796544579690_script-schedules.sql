-- Up Migration
-- Schedules (issue 9): script_schedules, its indexes, the schedule_changed notifications
-- that wake schedulers, and the keys between schedules and runs. After script-runs.
-- Locking: script_schedules is new. On script_runs, adding fk_script_runs_schedule and
-- building ix_script_runs_schedule each read the table once while writes to it wait
-- (SHARE ROW EXCLUSIVE / SHARE; about a second per million runs); reads go on. Both
-- are kept in this transaction on purpose (squawk's NOT VALID / CONCURRENTLY advice
-- ignored below): script_runs is new in this release and every schedule_id is null, so
-- the scans are short, and the key is whole from the start. The time limits make a
-- migration that cannot get its locks fail fast instead of queueing writes behind it.

set local lock_timeout = '10s';
set local statement_timeout = '10min';

-- script_schedules: cron rules that queue runs of a script on their own
-- (API.md, Schedules). The due time is computed in TypeScript (croner, in the
-- schedule's IANA time zone) and stored in next_run_at; schedulers claim due rows
-- with FOR UPDATE SKIP LOCKED and advance next_run_at in the transaction that
-- queues the run or records the skip, so "already fired" is this row, not a
-- process's memory, and an occurrence fires once however many schedulers run
-- (src/scheduler/scheduler.ts).

create table script_schedules (
  id               bigint generated always as identity,
  script_id        bigint not null,
  -- The script's owner, kept on the row: scoping, and distribution by user later.
  user_id          bigint not null,
  -- Five fields separated by single spaces (the app normalises what clients send).
  cron             text not null,
  -- An IANA name; whether the zone exists is checked by the app (Intl), which alone knows it.
  timezone         text not null,
  enabled          boolean not null default true,
  -- The next occurrence not yet handled (fired or skipped); null while disabled.
  next_run_at      timestamptz,
  last_run_id      bigint,
  last_fired_at    timestamptz,
  last_skipped_at  timestamptz,
  skipped_count    bigint not null default 0,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now(),

  constraint pk_script_schedules primary key (id),
  -- (script_id, user_id): a schedule belongs to its script's owner, never another user's;
  -- it goes with the script.
  constraint fk_script_schedules_script foreign key (script_id, user_id)
    references scripts (id, user_id) on delete cascade,
  -- The target of keys that carry the owner along (a run's schedule).
  constraint uq_script_schedules_id_user unique (id, user_id),
  constraint ck_script_schedules_cron_format
    check (length(cron) <= 200 and cron ~ '^[0-9A-Za-z*/,?#+-]+( [0-9A-Za-z*/,?#+-]+){4}$'),
  constraint ck_script_schedules_timezone_format
    check (length(timezone) <= 64 and timezone ~ '^[A-Za-z][A-Za-z0-9_+/-]*$'),
  constraint ck_script_schedules_enabled_has_next_run check (not enabled or next_run_at is not null),
  constraint ck_script_schedules_skipped_count_non_negative check (skipped_count >= 0),
  constraint ck_script_schedules_skip_has_time check (skipped_count = 0 or last_skipped_at is not null),
  constraint ck_script_schedules_run_has_fired_at check (last_run_id is null or last_fired_at is not null),
  -- The last run it queued, until retention deletes that run (the column alone is cleared).
  constraint fk_script_schedules_last_run foreign key (last_run_id, user_id)
    references script_runs (id, user_id) on delete set null (last_run_id)
);

-- "Due now": only enabled schedules, earliest first. Schedulers read the head of it
-- (claims, and when to wake up).
create index ix_script_schedules_due on script_schedules (next_run_at, id) where enabled;
-- A script's schedules (listing, the per-script limit); also serves the cascade from scripts.
create index ix_script_schedules_script on script_schedules (script_id, id);
-- A user's schedules, newest first (keyset pages).
create index ix_script_schedules_user on script_schedules (user_id, id);
-- Serves fk_script_schedules_last_run when retention deletes runs.
create index ix_script_schedules_last_run on script_schedules (last_run_id) where last_run_id is not null;

-- A run a schedule queued names it; deleting the schedule keeps the run and clears the
-- name (the run's trigger stays 'schedule'). The key carries user_id, as every key
-- between per-user tables does, so the data can be distributed by user.
alter table script_runs
  -- squawk-ignore constraint-missing-not-valid, adding-foreign-key-constraint
  add constraint fk_script_runs_schedule foreign key (schedule_id, user_id)
    references script_schedules (id, user_id) on delete set null (schedule_id);
-- Serves fk_script_runs_schedule when a schedule is deleted.
-- squawk-ignore require-concurrent-index-creation
create index ix_script_runs_schedule on script_runs (schedule_id) where schedule_id is not null;

create trigger tg_script_schedules_set_updated_at
  before update on script_schedules
  for each row
  when (old.* is distinct from new.*)
  execute function set_updated_at();

-- Schedulers LISTEN on `schedule_changed`: a schedule that became due earlier than
-- before (created, enabled, or moved earlier) wakes them, with its next_run_at in
-- epoch milliseconds. Schedulers only ever move next_run_at later, so their own
-- writes notify nobody.
create function script_schedules_notify_schedulers() returns trigger
language plpgsql as $$
begin
  perform pg_notify('schedule_changed', (extract(epoch from new.next_run_at) * 1000)::bigint::text);
  return null;
end;
$$;

create trigger tg_script_schedules_notify_insert
  after insert on script_schedules
  for each row
  when (new.enabled)
  execute function script_schedules_notify_schedulers();

create trigger tg_script_schedules_notify_update
  after update of enabled, next_run_at on script_schedules
  for each row
  when (new.enabled and (not old.enabled or new.next_run_at < old.next_run_at))
  execute function script_schedules_notify_schedulers();

-- Down Migration
-- squawk-ignore require-concurrent-index-deletion
drop index ix_script_runs_schedule;
alter table script_runs drop constraint fk_script_runs_schedule;
-- squawk-ignore ban-drop-table
drop table script_schedules;
drop function script_schedules_notify_schedulers();
