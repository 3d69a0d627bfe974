/**
 * The script's latest-run summary (API.md: a script's status, exit_code,
 * execution_time_seconds, memory_usage_mb, error_message, started_at and completed_at
 * are those of its latest run). Every statement that changes a run embeds this
 * UPDATE as a CTE over the run rows it changed, so the run and its script's summary
 * are written by one statement, never read and then written.
 */
import type { Fragment } from '../db/client.ts';
import type { Database } from '../db/database.ts';
import type { RunStatus } from '../domain/enums.ts';
import { RUN_COLUMNS } from '../domain/run.ts';
import { statusesLeadingTo } from '../domain/script.ts';

/** What a run-changing CTE returns: the API's columns of the run. */
export const RUN_RETURNING = RUN_COLUMNS.map((c) => `r.${c}`);

/**
 * `update scripts ... from <cte>`: copies the changed runs' outcome onto their scripts,
 * for the scripts whose latest run they are. `to` is the runs' new status: the summary
 * moves only along the script's status machine (or stays), so a summary that is somehow
 * elsewhere is left alone rather than failing the run's own write.
 */
export function summaryFrom(
  sql: Database['sql'],
  cte: string,
  to: RunStatus,
  returning: Fragment = sql``,
): Fragment {
  return sql`
    update scripts as s
    set status = c.status::text::script_status, exit_code = c.exit_code,
        execution_time_seconds = c.execution_time_seconds, memory_usage_mb = c.memory_usage_mb,
        error_message = c.error_message, started_at = c.started_at, completed_at = c.completed_at
    from ${sql(cte)} as c
    where s.id = c.script_id and s.last_run_id = c.id
      and s.status = any(${[to, ...statusesLeadingTo(to)]}::script_status[])
    ${returning}
  `;
}

/** `log_bytes = <bytes of the run's stored output>`, for statements that end a run (`script_runs as r`). */
export function logBytes(sql: Database['sql']): Fragment {
  return sql`log_bytes = (select coalesce(sum(octet_length(k.data)), 0) from run_log_chunks as k where k.run_id = r.id)`;
}
