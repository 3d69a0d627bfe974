/**
 * How runs end, written by their executor: completed or failed with the run's
 * measurements, and the measurements of a run cancelled under it, each with the output
 * the executor could not store earlier. Every write is guarded by the executor id (an
 * executor that lost its lease changes nothing) and updates the script's latest-run
 * summary in the same statement (run-summary.ts). Repositories exposes it as `outcomes`.
 */
import type { Fragment } from '../db/client.ts';
import type { Database } from '../db/database.ts';
import type { RunStatus } from '../domain/enums.ts';
import { InvalidStateError, NotFoundError } from '../domain/errors.ts';
import { type Run, runStatusesLeadingTo } from '../domain/run.ts';
import { assertExecutionMetrics } from '../domain/script.ts';
import { pgText } from '../domain/text.ts';
import { type PendingChunk, storePending } from './run-output.ts';
import { logBytes, RUN_RETURNING, summaryFrom } from './run-summary.ts';

/** What a finished run measured. */
export interface RunResult {
  exit_code: number | null;
  execution_time_seconds: number;
  memory_usage_mb: number | null;
  /** CPU time of the run's processes, when the sandbox measured it. */
  cpu_time_seconds?: number | null;
  /** The output was cut at MAX_LOG_BYTES. */
  log_truncated?: boolean;
}

/** The SET list of a run's measurements (`script_runs as r`). */
export function runMetrics(sql: Database['sql'], result: RunResult): Fragment {
  return sql`
    exit_code = ${result.exit_code},
    execution_time_seconds = round(${result.execution_time_seconds}::numeric, 3),
    memory_usage_mb = round(${result.memory_usage_mb}::numeric, 2),
    cpu_time_seconds = round(${result.cpu_time_seconds ?? null}::numeric, 3),
    log_truncated = ${result.log_truncated ?? false}
  `;
}

type TransitionRow = { previous_status: RunStatus } & { [K in keyof Run]: Run[K] | null };

export class RunOutcomeRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  /**
   * running → completed or failed, with the run's measurements and the output its
   * executor could not store earlier (`unwritten`, stored with their seq numbers, so
   * a batch that did reach the database is not stored twice). One transaction: the
   * pending output, then the run and its script's summary in one statement.
   * `executorId` guards an executor's write. InvalidStateError when the run is not
   * running (cancelled or recovered meanwhile).
   */
  complete(
    id: number,
    result: RunResult,
    executorId?: string,
    unwritten: readonly PendingChunk[] = [],
  ): Promise<Run> {
    return this.finish(id, 'completed', result, { executorId, unwritten });
  }

  /** running → failed, with why (NUL, which PostgreSQL text cannot hold, becomes U+FFFD). */
  fail(
    id: number,
    message: string,
    result: RunResult,
    executorId?: string,
    unwritten: readonly PendingChunk[] = [],
  ): Promise<Run> {
    return this.finish(id, 'failed', result, { executorId, message, unwritten });
  }

  private async finish(
    id: number,
    to: 'completed' | 'failed',
    result: RunResult,
    options: { executorId?: string; message?: string; unwritten?: readonly PendingChunk[] },
  ): Promise<Run> {
    assertExecutionMetrics(result);
    const message = to === 'failed' ? pgText(options.message ?? 'failed') : null;
    return this.db.transaction(async (tx) => {
      const sql = tx.sql;
      const guard = options.executorId === undefined ? sql`` : sql`and executor_id = ${options.executorId}`;
      await storePending(tx, id, ['running'], guard, options.unwritten ?? []);
      const row = await tx.maybeOne<TransitionRow>(
        `executions.${to === 'completed' ? 'complete' : 'fail'}`,
        sql`
          with target as (
            select id, status from script_runs where id = ${id}
          ), changed as (
            update script_runs as r
            set status = ${to}, completed_at = now(), error_message = ${message},
                ${runMetrics(sql, result)}, ${logBytes(sql)}
            from target
            where r.id = target.id and r.status = 'running' ${guard}
            returning ${sql(RUN_RETURNING)}
          ), summary as (
            ${summaryFrom(sql, 'changed', to)}
          )
          select target.status as previous_status, changed.*
          from target
          left join changed on true
        `,
      );
      return runOf(row, to);
    });
  }

  /**
   * The executor's last word on a run that was cancelled under it: what the killed
   * process measured, and its output (`unwritten`, what the executor could not store
   * earlier). False if the run is not this executor's cancelled run (nothing changes then).
   */
  async recordCancelledRun(
    id: number,
    executorId: string,
    result: RunResult,
    unwritten: readonly PendingChunk[] = [],
  ): Promise<boolean> {
    assertExecutionMetrics(result);
    return this.db.transaction(async (tx) => {
      const sql = tx.sql;
      const guard = sql`and executor_id = ${executorId}`;
      await storePending(tx, id, ['cancelled'], guard, unwritten);
      const n = await tx.count(
        'executions.recordCancelledRun',
        sql`
          with changed as (
            update script_runs as r
            set ${runMetrics(sql, result)}, ${logBytes(sql)}
            where r.id = ${id} and r.status = 'cancelled' ${guard}
            returning ${sql(RUN_RETURNING)}
          ), summary as (
            ${summaryFrom(sql, 'changed', 'cancelled')}
          )
          select id from changed
        `,
      );
      return n === 1;
    });
  }
}

/** The changed run, or InvalidStateError when the guard let nothing through. */
export function runOf(row: TransitionRow | null, to: RunStatus): Run {
  if (row === null) throw new NotFoundError('run');
  const { previous_status, ...run } = row;
  if (run.id === null) {
    // The snapshot may still show an allowed state when a concurrent caller won the row.
    const message = runStatusesLeadingTo(to).includes(previous_status)
      ? `the run changed state concurrently and cannot become ${to}`
      : `a ${previous_status} run cannot become ${to}`;
    throw new InvalidStateError(message, previous_status);
  }
  return run as Run;
}

export type { TransitionRow };
