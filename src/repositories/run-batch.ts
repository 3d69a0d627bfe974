/**
 * The queueing rules, defined once: RunRepository.tryQueue (one script, `execute`) and
 * queueScheduledRuns (a batch of due schedules, the scheduler) both build their
 * statement from `queueRunsCtes`. The rules: a script whose summary is not in a state
 * that leads to `queued` (it has a queued or running run) gets no run; of several
 * requests for one script, only the first may run; an owner gets at most `maxActive`
 * queued + running runs, requests served in their given order. The run is inserted
 * and the script's latest-run summary updated by the same statement. The callers lock
 * the owners' users rows first (FOR NO KEY UPDATE, in id order, so batches never
 * deadlock), and the statement runs after the locks: its snapshot counts every run
 * committed before, so the cap holds under any concurrency.
 */
import type { Fragment } from '../db/client.ts';
import type { Database } from '../db/database.ts';
import { statusesLeadingTo } from '../domain/script.ts';

/**
 * The CTEs `live`, `eligible`, `allowed`, `changed` and `inserted` of a queueing
 * statement, to follow a CTE `due(script_id, user_id, trigger, schedule_id, ord)` of
 * the caller's (one row per request; `ord` orders them, first served first).
 * `inserted` returns `returning` of each run inserted; `live` is (user_id, n), each
 * requesting owner's queued + running runs before the statement.
 */
export function queueRunsCtes(sql: Database['sql'], maxActive: number, returning: Fragment): Fragment {
  const leading = statusesLeadingTo('queued');
  return sql`
    live as (
      select user_id, count(*) as n
      from script_runs
      -- An array, so the owners are always an index condition (ix_script_runs_user_live), however
      -- many live runs others have.
      where user_id = any(array(select user_id from due)) and status in ('queued', 'running')
      group by user_id
    ), eligible as (
      select distinct on (d.script_id) d.script_id, d.user_id, d.trigger, d.schedule_id, d.ord
      from due as d
      join scripts as s on s.id = d.script_id and s.user_id = d.user_id
      where s.status = any(${leading}::script_status[])
      order by d.script_id, d.ord
    ), allowed as (
      select r.script_id, r.trigger, r.schedule_id,
        nextval(pg_get_serial_sequence('script_runs', 'id')) as run_id
      from (
        select e.*, row_number() over (partition by e.user_id order by e.ord) as k
        from eligible as e
      ) as r
      left join live as l on l.user_id = r.user_id
      where r.k <= ${maxActive} - coalesce(l.n, 0)
    ), changed as (
      update scripts as s
      set status = 'queued',
          exit_code = null, execution_time_seconds = null, memory_usage_mb = null,
          error_message = null, started_at = null, completed_at = null,
          last_run_id = a.run_id, run_count = s.run_count + 1
      from allowed as a
      where s.id = a.script_id
        and s.status = any(${leading}::script_status[])
      returning s.id, s.user_id, s.sha256, s.last_run_id
    ), inserted as (
      insert into script_runs (id, script_id, user_id, trigger, schedule_id, script_sha256)
      overriding system value
      select c.last_run_id, c.id, c.user_id, a.trigger, a.schedule_id, c.sha256
      from changed as c
      join allowed as a on a.run_id = c.last_run_id
      returning ${returning}
    )
  `;
}

/** One due occurrence: its schedule, the script to run and the script's owner. */
export interface ScheduledRunRequest {
  schedule_id: number;
  script_id: number;
  user_id: number;
}

/**
 * Queues a run (trigger 'schedule') for each request that may run; returns the run id
 * by schedule id. Requests are served in the given order: when an owner has fewer free
 * slots than requests, the first ones win; of several requests for one script, the
 * first. The others get no run (the caller counts them as skipped). Only inside a
 * transaction (the owner locks last until it ends).
 */
export async function queueScheduledRuns(
  db: Database,
  requests: readonly ScheduledRunRequest[],
  maxActive: number,
): Promise<Map<number, number>> {
  const queued = new Map<number, number>();
  if (requests.length === 0) return queued;
  const sql = db.sql;
  const owners = [...new Set(requests.map((r) => r.user_id))].sort((a, b) => a - b);
  await db.many(
    'runs.queueScheduled.lockOwners',
    sql`select id from users where id = any(${owners}::bigint[]) order by id for no key update`,
  );
  // A statement of its own, after the locks: its snapshot counts every run committed before.
  const rows = await db.many<{ schedule_id: number; run_id: number }>(
    'runs.queueScheduled',
    sql`
      with due as (
        select script_id, user_id, 'schedule'::run_trigger as trigger, schedule_id, ord
        from unnest(
          ${requests.map((r) => r.schedule_id)}::bigint[],
          ${requests.map((r) => r.script_id)}::bigint[],
          ${requests.map((r) => r.user_id)}::bigint[]
        ) with ordinality as d(schedule_id, script_id, user_id, ord)
      ), ${queueRunsCtes(sql, maxActive, sql`id, schedule_id`)}
      select schedule_id, id as run_id from inserted
    `,
  );
  for (const row of rows) queued.set(row.schedule_id, row.run_id);
  return queued;
}
