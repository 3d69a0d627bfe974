/**
 * The output of runs (run_log_chunks): batches appended while a run goes, each with
 * its seq number (0, 1, ...) and stored at most once (`on conflict do nothing`: a batch
 * retried after its answer was lost is not stored twice, issue 7 item 11), kept with
 * the run, read whole or followed batch by batch (`repos.output`).
 *
 * PostgreSQL text cannot hold U+0000 (error 22021), so every text written here
 * goes through `pgText`: a script printing NUL bytes must not make its output,
 * or the message that ends its run, impossible to store.
 */
import type { Fragment } from '../db/client.ts';
import type { Database } from '../db/database.ts';
import type { RunStatus, ScriptStatus } from '../domain/enums.ts';
import { NotFoundError } from '../domain/errors.ts';
import { pgText } from '../domain/text.ts';

/** A batch of output and its place in the run's output. */
export interface PendingChunk {
  seq: number;
  data: string;
}

export interface LogState {
  /** The run's status; a script's latest output with no run yet: `uploaded`. */
  status: RunStatus | 'uploaded';
  exit_code: number | null;
  /** Chunks after the requested seq, in order. */
  chunks: PendingChunk[];
  /**
   * The run is over and `chunks` are its last: nothing is appended to a run that has
   * ended (appends need it running, and its last output is stored with its outcome).
   */
  finished: boolean;
}

/** The whole output of the run with id `runId` (an SQL expression). */
function outputOf(sql: Database['sql'], runId: Fragment): Fragment {
  return sql`coalesce((select string_agg(k.data, '' order by k.seq) from run_log_chunks as k where k.run_id = ${runId}), '')`;
}

/**
 * Stores output an executor could not store while the run went, with the seq numbers
 * it had given it, if the run is in `statuses` and passes `guard` (a fragment of the
 * WHERE of `script_runs`); locks the run row (FOR NO KEY UPDATE) until the caller's
 * transaction ends, so the run's outcome is written after its last output.
 */
export async function storePending(
  db: Database,
  runId: number,
  statuses: RunStatus[],
  guard: Fragment,
  pending: readonly PendingChunk[],
): Promise<void> {
  const sql = db.sql;
  const chunks = pending.filter((c) => c.data !== '');
  if (chunks.length === 0) return;
  await db.count(
    'executions.storePending',
    sql`
      with run as (
        select id, user_id from script_runs
        where id = ${runId} and status = any(${statuses}::run_status[]) ${guard}
        for no key update
      )
      insert into run_log_chunks (run_id, user_id, seq, data)
      select run.id, run.user_id, u.seq, u.data
      from run, unnest(${chunks.map((c) => c.seq)}::int[], ${chunks.map((c) => pgText(c.data))}::text[]) as u(seq, data)
      on conflict (run_id, seq) do nothing
    `,
  );
}

export class RunOutputRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  /**
   * Appends batch `seq` of a run this executor still holds. FOR SHARE makes a concurrent
   * cancel or recovery win first, so nothing is appended after a run ended. True while
   * the run is this executor's (a batch already stored counts as stored).
   */
  async appendLog(id: number, executorId: string, seq: number, data: string): Promise<boolean> {
    if (data === '') return true;
    const sql = this.db.sql;
    const [row] = await this.db.many<{ held: boolean }>(
      'output.appendLog',
      sql`
        with run as (
          select id, user_id from script_runs
          where id = ${id} and status = 'running' and executor_id = ${executorId}
          for share
        ), stored as (
          insert into run_log_chunks (run_id, user_id, seq, data)
          select id, user_id, ${seq}, ${pgText(data)} from run
          on conflict (run_id, seq) do nothing
        )
        select exists (select 1 from run) as held
      `,
    );
    return row?.held === true;
  }

  /** The whole output of a run (finished or not). */
  async readLogs(id: number, ownerId?: number): Promise<{ status: RunStatus; logs: string }> {
    const sql = this.db.sql;
    const row = await this.db.maybeOne<{ status: RunStatus; logs: string }>(
      'runs.readLogs',
      sql`
        select r.status, ${outputOf(sql, sql`r.id`)} as logs
        from script_runs as r
        where r.id = ${id} ${ownerId === undefined ? sql`` : sql`and r.user_id = ${ownerId}`}
      `,
    );
    if (row === null) throw new NotFoundError('run');
    return row;
  }

  /** The output of a script's latest run ('' and the script's status when it has none). */
  async readScriptLogs(
    scriptId: number,
    ownerId?: number,
  ): Promise<{ status: ScriptStatus; last_run_id: number | null; logs: string }> {
    const sql = this.db.sql;
    const row = await this.db.maybeOne<{ status: ScriptStatus; last_run_id: number | null; logs: string }>(
      'runs.readScriptLogs',
      sql`
        select s.status, s.last_run_id, ${outputOf(sql, sql`s.last_run_id`)} as logs
        from scripts as s
        where s.id = ${scriptId} ${ownerId === undefined ? sql`` : sql`and s.user_id = ${ownerId}`}
      `,
    );
    if (row === null) throw new NotFoundError('script');
    return row;
  }

  /** For a follower: the run's status and the chunks after `afterSeq` (-1: all), in one snapshot. */
  async followLogs(id: number, afterSeq: number, ownerId?: number): Promise<LogState> {
    const sql = this.db.sql;
    const row = await this.db.maybeOne<LogState>(
      'runs.followLogs',
      sql`
        select r.status, r.exit_code,
          coalesce(
            (select json_agg(json_build_object('seq', k.seq, 'data', k.data) order by k.seq)
             from run_log_chunks as k
             where k.run_id = r.id and k.seq > ${afterSeq}),
            '[]'
          ) as chunks,
          r.status in ('completed', 'failed', 'cancelled') as finished
        from script_runs as r
        where r.id = ${id} ${ownerId === undefined ? sql`` : sql`and r.user_id = ${ownerId}`}
      `,
    );
    if (row === null) throw new NotFoundError('run');
    return row;
  }
}
