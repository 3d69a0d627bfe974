/**
 * Runs, step two (issue 9): every script's last execution (status, output, metrics,
 * times) becomes one run; the queue moves from scripts to script_runs; the old queue
 * and output columns of scripts, and script_log_chunks, go.
 *
 * Why TypeScript and not SQL: the copy commits batch by batch, and node-pg-migrate runs
 * an SQL migration as one transaction. This one calls `noTransaction()`, so each
 * statement below commits on its own, and every step skips what is already done: a
 * migration stopped half way is simply run again.
 *
 * What it locks, and for how long:
 * 1. The copy, 5,000 scripts per batch, each batch ONE statement (its own transaction):
 *    FOR NO KEY UPDATE on those 5,000 scripts rows only, for the batch (well under a
 *    second); reads, uploads and every other script go on. scripts.updated_at of a
 *    copied script becomes the time of its batch (the row gains last_run_id).
 * 2. `create index concurrently ix_scripts_last_run`: no lock that blocks reads or
 *    writes; it reads scripts twice.
 * 3. One short transaction with lock_timeout 10 s: drops the old triggers, indexes,
 *    checks and columns of scripts (catalog only: dropping a column does not rewrite
 *    the table) and the table script_log_chunks. ACCESS EXCLUSIVE on scripts and
 *    script_log_chunks for milliseconds once granted; if a long transaction holds them
 *    past 10 s, the step fails rather than queue every query behind it, and running
 *    the migration again resumes here.
 *
 * Run it with the previous version stopped (`npm start` migrates before serving and
 * before its executor starts): a script an old executor still runs becomes a running
 * run under that executor's id, and is failed when its lease lapses, as the run of a
 * dead executor; output an old executor writes after its batch was copied is lost.
 */
import type { MigrationBuilder } from 'node-pg-migrate';

const BATCH = 5000;

export const shorthands = undefined;

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.noTransaction();
  const db = pgm.db;
  for (let after = 0; ; ) {
    const [row] = await db.select(
      `
      with batch as (
        select s.id, s.user_id, s.sha256, s.status, s.exit_code, s.execution_time_seconds,
          s.memory_usage_mb, s.error_message, s.started_at, s.completed_at, s.updated_at,
          s.queued_at, s.executor_id, s.lease_expires_at,
          coalesce(s.execution_logs, '') || coalesce(
            (select string_agg(c.data, '' order by c.id) from script_log_chunks as c where c.script_id = s.id),
            ''
          ) as output,
          nextval(pg_get_serial_sequence('script_runs', 'id')) as run_id
        from scripts as s
        where s.id > $1 and s.last_run_id is null and s.status <> 'uploaded'
        order by s.id
        limit $2
        for no key update of s
      ), runs as (
        insert into script_runs (
          id, script_id, user_id, trigger, status, script_sha256, exit_code, execution_time_seconds,
          memory_usage_mb, error_message, log_bytes, queued_at, started_at, completed_at,
          executor_id, lease_expires_at
        )
        overriding system value
        select run_id, id, user_id, 'manual', status::text::run_status, sha256, exit_code,
          execution_time_seconds, memory_usage_mb, error_message, octet_length(output),
          coalesce(queued_at, started_at, completed_at, updated_at), started_at, completed_at,
          case when status = 'running' then executor_id end,
          case when status = 'running' then lease_expires_at end
        from batch
      ), chunks as (
        insert into run_log_chunks (run_id, user_id, seq, data)
        select run_id, user_id, 0, output from batch where output <> ''
      ), summary as (
        update scripts as s
        set last_run_id = batch.run_id, run_count = s.run_count + 1
        from batch
        where s.id = batch.id
      )
      select max(id)::text as last, count(*)::int as n from batch
      `,
      [after, BATCH],
    );
    if (row === undefined || row.n === 0) break;
    after = Number(row.last);
  }

  await db.query('drop index concurrently if exists ix_scripts_last_run');
  await db.query('create index concurrently ix_scripts_last_run on scripts (last_run_id, user_id)');

  await db.query('begin');
  try {
    await db.query(`set local lock_timeout = '10s'`);
    await db.query(`
      drop trigger if exists tg_scripts_notify_executors_on_delete on scripts;
      drop trigger if exists tg_scripts_notify_executors on scripts;
      drop function if exists scripts_notify_executors();
      drop index if exists ix_scripts_running_lease;
      drop index if exists ix_scripts_queue;
      alter table scripts
        drop constraint if exists ck_scripts_running_has_lease,
        drop constraint if exists ck_scripts_queued_has_queued_at,
        drop column if exists execution_logs,
        drop column if exists queued_at,
        drop column if exists executor_id,
        drop column if exists lease_expires_at;
      drop table if exists script_log_chunks;
    `);
    await db.query('commit');
  } catch (error) {
    await db.query('rollback');
    throw error;
  }
}

/**
 * Back to one mutable row per script: the latest run's output, queue and lease go back
 * on scripts, and every run is deleted (one transaction: going down is for tests and
 * emergencies, not for a database of millions).
 */
export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(`
    create table script_log_chunks (
      id          bigint generated always as identity,
      script_id   bigint not null,
      user_id     bigint not null,
      data        text not null,
      created_at  timestamptz not null default now(),
      constraint pk_script_log_chunks primary key (id),
      constraint fk_script_log_chunks_script foreign key (script_id, user_id)
        references scripts (id, user_id) on delete cascade,
      constraint ck_script_log_chunks_data_not_empty check (data <> '')
    );
    create index ix_script_log_chunks_script on script_log_chunks (script_id, id);

    alter table scripts
      add column execution_logs text,
      add column queued_at timestamptz,
      add column executor_id text,
      add column lease_expires_at timestamptz;

    update scripts as s
    set execution_logs = nullif(
          (select string_agg(c.data, '' order by c.seq) from run_log_chunks as c where c.run_id = r.id), ''),
        queued_at = case when r.status = 'queued' then r.queued_at end,
        executor_id = r.executor_id,
        lease_expires_at = r.lease_expires_at
    from script_runs as r
    where r.id = s.last_run_id;
    update scripts set last_run_id = null, run_count = 0 where last_run_id is not null or run_count <> 0;
    delete from script_runs;

    alter table scripts
      add constraint ck_scripts_queued_has_queued_at check (status <> 'queued' or queued_at is not null),
      add constraint ck_scripts_running_has_lease
        check (status <> 'running' or (executor_id is not null and executor_id <> '' and lease_expires_at is not null));
    create index ix_scripts_queue on scripts (queued_at, id) where status = 'queued';
    create index ix_scripts_running_lease on scripts (lease_expires_at) where status = 'running';
    drop index ix_scripts_last_run;

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
  `);
}
