/**
 * What only executors do with runs: claim queued rows (FOR UPDATE SKIP LOCKED),
 * hold them by a lease (executor_id + lease_expires_at) that they renew, record
 * what a run cancelled under them measured, and fail the runs whose lease lapsed.
 * Every write is guarded by the executor id, so an executor that lost its lease
 * changes nothing. ExecutionRepository exposes these methods.
 */
import type { Fragment } from '../db/client.js';
import type { Database } from '../db/database.js';
import { assertExecutionMetrics, type ScriptExtension } from '../domain/script.js';
import { foldLogs } from './run-output.js';

/** What a finished run measured. */
export interface RunResult {
  exit_code: number | null;
  execution_time_seconds: number;
  memory_usage_mb: number | null;
}

/** A claimed run: the script and whose it is (its bytes are `Storage`'s, by script and user). */
export interface ClaimedRun {
  id: number;
  user_id: number;
  file_extension: ScriptExtension;
}

export interface Lease {
  executorId: string;
  seconds: number;
}

/** The SET list of a run's measurements. */
export function runMetrics(sql: Database['sql'], result: RunResult): Fragment {
  return sql`
    exit_code = ${result.exit_code},
    execution_time_seconds = round(${result.execution_time_seconds}::numeric, 3),
    memory_usage_mb = round(${result.memory_usage_mb}::numeric, 2)
  `;
}

export class RunLeaseRepository {
  constructor(private readonly db: Database) {}

  /**
   * Claims up to `limit` queued scripts, oldest first, for an executor. SKIP LOCKED:
   * concurrent executors take different rows and never wait on each other.
   * `exclude`: ids the executor is still finishing an earlier run of (cancelled and
   * queued again meanwhile); their rows carry its id, so the earlier run's last
   * writes would land on the new run.
   */
  async claim(lease: Lease, limit = 1, exclude: readonly number[] = []): Promise<ClaimedRun[]> {
    const sql = this.db.sql;
    return this.db.many<ClaimedRun>(
      'executions.claim',
      sql`
        update scripts as s
        set status = 'running', started_at = now(), completed_at = null,
            executor_id = ${lease.executorId},
            lease_expires_at = now() + make_interval(secs => ${lease.seconds})
        where s.id in (
          select id
          from scripts
          where status = 'queued'
            and id <> all(${exclude as number[]}::bigint[])
          order by queued_at, id
          limit ${limit}
          for update skip locked
        )
        returning s.id, s.user_id, s.file_extension
      `,
    );
  }

  /**
   * After a claim whose answer never came (the connection dropped, the client gave up)
   * but which may have committed: fails the executor's running rows other than `keep`,
   * the runs it knows it started. Those never had a process; the status machine has no
   * way back from running to queued, so they are failed at once, saying that the script
   * did not run, rather than left to lapse as "outcome unknown". Returns their ids.
   */
  async failUnstarted(executorId: string, keep: readonly number[]): Promise<number[]> {
    const sql = this.db.sql;
    const rows = await this.db.many<{ id: number }>(
      'executions.failUnstarted',
      sql`
        update scripts
        set status = 'failed', completed_at = now(),
            error_message = 'the executor lost the answer to its claim of this script (the database '
              || 'connection failed) and did not start it; the script did not run'
        where status = 'running'
          and executor_id = ${executorId}
          and id <> all(${keep as number[]}::bigint[])
        returning id
      `,
    );
    return rows.map((r) => r.id);
  }

  /** Extends the leases this executor holds; returns the ids it still holds (the others were lost). */
  async renewLeases(ids: number[], lease: Lease): Promise<number[]> {
    if (ids.length === 0) return [];
    const sql = this.db.sql;
    const rows = await this.db.many<{ id: number }>(
      'executions.renewLeases',
      sql`
        update scripts
        set lease_expires_at = now() + make_interval(secs => ${lease.seconds})
        where id = any(${ids}::bigint[])
          and status = 'running'
          and executor_id = ${lease.executorId}
        returning id
      `,
    );
    return rows.map((r) => r.id);
  }

  /**
   * The executor's last word on a run that was cancelled under it: what the killed
   * process measured, and its output: chunks stored after the cancel and
   * `unwritten`, what the executor could not store any more. False if the run
   * is not this executor's cancelled run (nothing changes then).
   */
  async recordCancelledRun(
    id: number,
    executorId: string,
    result: RunResult,
    unwritten = '',
  ): Promise<boolean> {
    assertExecutionMetrics(result);
    const sql = this.db.sql;
    const n = await this.db.count(
      'executions.recordCancelledRun',
      sql`
        with changed as (
          update scripts as s
          set ${runMetrics(sql, result)}, ${foldLogs(sql, unwritten)}
          where s.id = ${id} and s.status = 'cancelled' and s.executor_id = ${executorId}
          returning s.id
        ), folded as (
          delete from script_log_chunks where script_id in (select id from changed)
        )
        select id from changed
      `,
    );
    return n === 1;
  }

  /**
   * Fails every run whose lease lapsed (its executor died, hung, or lost the
   * database). Any executor may call it; returns the ids it failed. Nobody saw
   * these runs end, so their exit code, wall time and peak memory stay empty
   * (started_at and completed_at bound the run) and the message says so.
   */
  async failExpiredLeases(): Promise<number[]> {
    const sql = this.db.sql;
    const rows = await this.db.many<{ id: number }>(
      'executions.failExpiredLeases',
      sql`
        with expired as (
          update scripts as s
          set status = 'failed', completed_at = now(),
              error_message = 'the executor running this script stopped renewing its lease '
                || '(it died, hung or lost the database); the outcome of the run is unknown, '
                || 'and so are its exit code, wall time and peak memory',
              ${foldLogs(sql)}
          where s.status = 'running' and s.lease_expires_at < now()
          returning s.id
        ), folded as (
          delete from script_log_chunks where script_id in (select id from expired)
        )
        select id from expired
      `,
    );
    return rows.map((r) => r.id);
  }
}
