-- script_log_chunks: the output of a run while it runs, appended by its
-- executor in batches (one INSERT per batch, never per line). When the run ends,
-- the statement that finishes it folds the chunks into scripts.execution_logs
-- and deletes them, so a finished run's output is one text value. Readers see
-- `execution_logs || chunks`, which is the whole output in both states.

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
