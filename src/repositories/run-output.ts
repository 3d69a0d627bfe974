/**
 * The output of runs: chunks appended while a run goes (script_log_chunks), folded
 * into scripts.execution_logs by the statement that ends the run, read whole or
 * followed chunk by chunk. ExecutionRepository exposes these methods; they live
 * here to keep the queue and its transitions apart from the output.
 *
 * PostgreSQL text cannot hold U+0000 (error 22021), so every text written here
 * goes through `pgText`: a script printing NUL bytes must not make its output,
 * or the message that ends its run, impossible to store.
 */
import type { Fragment } from '../db/client.js';
import type { Database } from '../db/database.js';
import type { ScriptStatus } from '../domain/enums.js';
import { NotFoundError } from '../domain/errors.js';

export interface LogChunk {
  id: number;
  data: string;
}

export interface LogState {
  status: ScriptStatus;
  exit_code: number | null;
  /** Chunks after the requested id, while the run is going. */
  chunks: LogChunk[];
  /** The whole output, once the run has finished (null before). */
  final: string | null;
}

/** `text` with every NUL replaced by U+FFFD, the one character PostgreSQL text refuses. */
export function pgText(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text;
}

/**
 * The whole output of the run in `scripts as s`: its folded text, then the chunks
 * stored since (in order). Readers see this in both states of a run.
 */
export function allLogs(sql: Database['sql']): Fragment {
  return sql`
    coalesce(s.execution_logs, '') || coalesce(
      (select string_agg(c.data, '' order by c.id) from script_log_chunks as c where c.script_id = s.id),
      ''
    )
  `;
}

/**
 * The SET item of a statement that ends the run in `scripts as s`: `execution_logs`
 * gets the chunks this statement sees, then `unwritten` (output its executor could
 * not store as chunks); the statement's `folded` CTE deletes exactly those chunks
 * (same snapshot). A chunk committed after the snapshot is neither folded nor
 * deleted, so it stays visible after the folded text: nothing is lost whichever
 * statement finishes a run.
 */
export function foldLogs(sql: Database['sql'], unwritten = ''): Fragment {
  return sql`execution_logs = ${allLogs(sql)} || ${pgText(unwritten)}::text`;
}

export class RunOutputRepository {
  constructor(private readonly db: Database) {}

  /**
   * Appends a batch of output to a run this executor still holds. FOR SHARE makes a
   * concurrent cancel or recovery win first, so nothing is appended after a run ended.
   */
  async appendLog(id: number, executorId: string, data: string): Promise<boolean> {
    if (data === '') return true;
    const sql = this.db.sql;
    const n = await this.db.count(
      'executions.appendLog',
      sql`
        insert into script_log_chunks (script_id, user_id, data)
        select id, user_id, ${pgText(data)}
        from scripts
        where id = ${id} and status = 'running' and executor_id = ${executorId}
        for share
      `,
    );
    return n === 1;
  }

  /** The whole captured output of the latest run (finished or not). */
  async readLogs(id: number, ownerId?: number): Promise<{ status: ScriptStatus; logs: string }> {
    const sql = this.db.sql;
    const row = await this.db.maybeOne<{ status: ScriptStatus; logs: string }>(
      'executions.readLogs',
      sql`
        select s.status, ${allLogs(sql)} as logs
        from scripts as s
        where s.id = ${id} ${ownerId === undefined ? sql`` : sql`and s.user_id = ${ownerId}`}
      `,
    );
    if (row === null) throw new NotFoundError('script');
    return row;
  }

  /**
   * For a follower: the status, the chunks after `afterChunkId` and, once the run
   * has finished, the whole output. One round trip.
   */
  async followLogs(id: number, afterChunkId: number, ownerId?: number): Promise<LogState> {
    const sql = this.db.sql;
    const row = await this.db.maybeOne<LogState>(
      'executions.followLogs',
      sql`
        select s.status, s.exit_code,
          coalesce(
            (select json_agg(json_build_object('id', c.id, 'data', c.data) order by c.id)
             from script_log_chunks as c
             where c.script_id = s.id and c.id > ${afterChunkId}),
            '[]'
          ) as chunks,
          case when s.status in ('completed', 'failed', 'cancelled', 'uploaded')
            then ${allLogs(sql)}
          end as final
        from scripts as s
        where s.id = ${id} ${ownerId === undefined ? sql`` : sql`and s.user_id = ${ownerId}`}
      `,
    );
    if (row === null) throw new NotFoundError('script');
    return row;
  }
}
