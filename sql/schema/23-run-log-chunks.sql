-- run_log_chunks: the output of a run, appended by its executor in batches (one INSERT
-- per batch, never per line) and kept with the run. `seq` numbers a run's batches from 0;
-- the executor retries a batch whose answer was lost with the same seq, and the insert is
-- `on conflict do nothing`, so a batch is never stored twice (issue 7, item 11).
-- A run's output is its chunks in seq order.

create table run_log_chunks (
  run_id      bigint not null,
  -- Kept on every per-user table, so the data can be distributed by user.
  user_id     bigint not null,
  seq         integer not null,
  data        text not null,
  created_at  timestamptz not null default now(),

  -- Unique (run_id, seq), and a run's output in order.
  constraint pk_run_log_chunks primary key (run_id, seq),
  constraint fk_run_log_chunks_run foreign key (run_id, user_id)
    references script_runs (id, user_id) on delete cascade,
  constraint ck_run_log_chunks_seq_non_negative check (seq >= 0),
  constraint ck_run_log_chunks_data_not_empty check (data <> '')
);
