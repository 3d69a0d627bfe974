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
  constraint fk_script_log_chunks_script foreign key (script_id) references scripts (id) on delete cascade,
  constraint fk_script_log_chunks_user foreign key (user_id) references users (id) on delete cascade,
  constraint ck_script_log_chunks_data_not_empty check (data <> '')
);

-- A run's chunks in order; followers read those after the last id they saw.
create index ix_script_log_chunks_script on script_log_chunks (script_id, id);
-- fk_script_log_chunks_user's cascade.
create index ix_script_log_chunks_user on script_log_chunks (user_id);
