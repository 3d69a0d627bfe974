/**
 * The life of a run and the queue, as the status machine of API.md allows it:
 * uploaded|completed|failed|cancelled → queued → running → completed|failed|cancelled,
 * and queued → cancelled. Each transition is one guarded UPDATE
 * (`where status = any(<states that lead here>)`), so two clients racing on one
 * script never both win; the loser gets InvalidStateError, never a lost update.
 *
 * Executors claim queued rows with FOR UPDATE SKIP LOCKED and hold them by a lease
 * (executor_id + lease_expires_at). Every write an executor makes about a run is
 * guarded by its executor id, so one that lost its lease changes nothing.
 *
 * What only executors do (claims, leases, the record of a cancelled run) is in
 * run-leases.ts, the output of runs (appending, reading, following) in
 * run-output.ts; this class exposes both, so callers keep one repository for runs.
 */
import type { Fragment } from '../db/client.js';
import type { Database } from '../db/database.js';
import type { ScriptStatus } from '../domain/enums.js';
import { InvalidStateError, NotFoundError, TooManyRunningError } from '../domain/errors.js';
import {
  ACTIVE_STATUSES,
  assertExecutionMetrics,
  SCRIPT_COLUMNS,
  type Script,
  statusesLeadingTo,
} from '../domain/script.js';
import { type ClaimedRun, type Lease, RunLeaseRepository, type RunResult, runMetrics } from './run-leases.js';
import { foldLogs, type LogState, pgText, RunOutputRepository } from './run-output.js';

export type { ClaimedRun, Lease, RunResult } from './run-leases.js';
export type { LogState } from './run-output.js';

type TransitionRow = { previous_status: ScriptStatus; active_count?: number } & {
  [K in keyof Script]: Script[K] | null;
};

const RETURNING = SCRIPT_COLUMNS.map((c) => `s.${c}`);

export class ExecutionRepository {
  private readonly leases: RunLeaseRepository;
  private readonly output: RunOutputRepository;

  constructor(private readonly db: Database) {
    this.leases = new RunLeaseRepository(db);
    this.output = new RunOutputRepository(db);
  }

  /**
   * Queues a run. The owner's row is locked first (FOR NO KEY UPDATE, which does
   * not block uploads), so concurrent requests of one user are counted one at a time
   * and `maxActive` queued + running holds under any concurrency. The previous
   * run's outcome and output are cleared in the same statement.
   */
  async queue(id: number, options: { ownerId?: number; maxActive: number }): Promise<Script> {
    return this.db.transaction(async (tx) => {
      const sql = tx.sql;
      const owner = await tx.maybeOne<{ id: number }>(
        'executions.queue.lockOwner',
        sql`
          select u.id
          from scripts as s
          join users as u on u.id = s.user_id
          where s.id = ${id} ${options.ownerId === undefined ? sql`` : sql`and s.user_id = ${options.ownerId}`}
          for no key update of u
        `,
      );
      if (owner === null) throw new NotFoundError('script');
      const row = await tx.maybeOne<TransitionRow>(
        'executions.queue',
        sql`
          with target as (
            select id, status from scripts where id = ${id}
          ), active as (
            select count(*) as n
            from scripts
            where user_id = ${owner.id}
              and status = any(${ACTIVE_STATUSES as ScriptStatus[]}::script_status[])
          ), changed as (
            update scripts as s
            set status = 'queued', queued_at = now(),
                execution_logs = null, error_message = null, exit_code = null,
                execution_time_seconds = null, memory_usage_mb = null,
                started_at = null, completed_at = null, executor_id = null, lease_expires_at = null
            from target
            where s.id = target.id
              and s.status = any(${statusesLeadingTo('queued')}::script_status[])
              and (select n from active) < ${options.maxActive}
            returning ${sql(RETURNING)}
          ), cleared as (
            delete from script_log_chunks where script_id in (select id from changed)
          )
          select target.status as previous_status, (select n from active) as active_count, changed.*
          from target
          left join changed on true
        `,
      );
      if (row === null) throw new NotFoundError('script');
      if (
        row.id === null &&
        !ACTIVE_STATUSES.includes(row.previous_status) &&
        (row.active_count ?? 0) >= options.maxActive
      )
        throw new TooManyRunningError(options.maxActive);
      return scriptOf(row, 'queued');
    });
  }

  /** Claims up to `limit` queued scripts, oldest first, for an executor (SKIP LOCKED). */
  claim(lease: Lease, limit = 1, exclude: readonly number[] = []): Promise<ClaimedRun[]> {
    return this.leases.claim(lease, limit, exclude);
  }

  /** After a claim in doubt: the executor's running rows other than `keep` are failed (never started). */
  failUnstarted(executorId: string, keep: readonly number[]): Promise<number[]> {
    return this.leases.failUnstarted(executorId, keep);
  }

  /** Extends the leases this executor holds; returns the ids it still holds (the others were lost). */
  renewLeases(ids: number[], lease: Lease): Promise<number[]> {
    return this.leases.renewLeases(ids, lease);
  }

  /** What the killed process of a run cancelled under its executor measured, and its last output. */
  recordCancelledRun(id: number, executorId: string, result: RunResult, unwritten = ''): Promise<boolean> {
    return this.leases.recordCancelledRun(id, executorId, result, unwritten);
  }

  /** Fails every run whose lease lapsed; returns their ids. */
  failExpiredLeases(): Promise<number[]> {
    return this.leases.failExpiredLeases();
  }

  /** queued → running for a given script (an executor that picks its own work). */
  async startExecution(id: number, lease: Lease): Promise<Script> {
    const sql = this.db.sql;
    return this.transition(
      'executions.start',
      id,
      'running',
      sql`started_at = now(), completed_at = null, executor_id = ${lease.executorId},
          lease_expires_at = now() + make_interval(secs => ${lease.seconds})`,
    );
  }

  /** Appends a batch of output to a run this executor still holds (see run-output.ts). */
  appendLog(id: number, executorId: string, data: string): Promise<boolean> {
    return this.output.appendLog(id, executorId, data);
  }

  /**
   * running → completed, with the run's metrics; `executorId` guards an executor's
   * write; `unwritten` is output its executor could not store as chunks, kept after them.
   */
  async complete(id: number, result: RunResult, executorId?: string, unwritten = ''): Promise<Script> {
    assertExecutionMetrics(result);
    const sql = this.db.sql;
    return this.transition(
      'executions.complete',
      id,
      'completed',
      sql`completed_at = now(), ${runMetrics(sql, result)}, ${foldLogs(sql, unwritten)}`,
      { executorId },
    );
  }

  /**
   * running → failed, with why and whatever was measured. The message cannot be
   * refused: NUL, which PostgreSQL text cannot hold, becomes U+FFFD.
   */
  async fail(
    id: number,
    message: string,
    result: RunResult,
    executorId?: string,
    unwritten = '',
  ): Promise<Script> {
    assertExecutionMetrics(result);
    const sql = this.db.sql;
    return this.transition(
      'executions.fail',
      id,
      'failed',
      sql`completed_at = now(), error_message = ${pgText(message)}, ${runMetrics(sql, result)},
          ${foldLogs(sql, unwritten)}`,
      { executorId },
    );
  }

  /** queued|running → cancelled. A running process is then killed by its executor (NOTIFY). */
  async cancel(id: number, ownerId?: number): Promise<Script> {
    const sql = this.db.sql;
    return this.transition(
      'executions.cancel',
      id,
      'cancelled',
      sql`completed_at = now(), error_message = 'cancelled', ${foldLogs(sql)}`,
      { ownerId },
    );
  }

  /** Scripts waiting and running now (metrics). */
  async queueDepth(): Promise<{ queued: number; running: number }> {
    const sql = this.db.sql;
    return this.db.one(
      'executions.queueDepth',
      sql`
        select count(*) filter (where status = 'queued') as queued,
          count(*) filter (where status = 'running') as running
        from scripts
        where status in ('queued', 'running')
      `,
    );
  }

  /** The whole captured output of the latest run (finished or not). */
  readLogs(id: number, ownerId?: number): Promise<{ status: ScriptStatus; logs: string }> {
    return this.output.readLogs(id, ownerId);
  }

  /** For a follower: the status, the chunks after `afterChunkId`, and the whole output once finished. */
  followLogs(id: number, afterChunkId: number, ownerId?: number): Promise<LogState> {
    return this.output.followLogs(id, afterChunkId, ownerId);
  }

  private async transition(
    name: string,
    id: number,
    to: ScriptStatus,
    set: Fragment,
    guard: { ownerId?: number; executorId?: string } = {},
  ): Promise<Script> {
    const sql = this.db.sql;
    const row = await this.db.maybeOne<TransitionRow>(
      name,
      sql`
        with target as (
          select id, status
          from scripts
          where id = ${id} ${guard.ownerId === undefined ? sql`` : sql`and user_id = ${guard.ownerId}`}
        ), changed as (
          update scripts as s
          set status = ${to}, ${set}
          from target
          where s.id = target.id
            and s.status = any(${statusesLeadingTo(to)}::script_status[])
            ${guard.executorId === undefined ? sql`` : sql`and s.executor_id = ${guard.executorId}`}
          returning ${sql(RETURNING)}
        ), folded as (
          delete from script_log_chunks
          where script_id in (select id from changed)
            and ${to === 'running' ? sql`false` : sql`true`}
        )
        select target.status as previous_status, changed.*
        from target
        left join changed on true
      `,
    );
    if (row === null) throw new NotFoundError('script');
    return scriptOf(row, to);
  }
}

/** The changed row, or InvalidStateError when the guard let nothing through. */
function scriptOf(row: TransitionRow, to: ScriptStatus): Script {
  const { previous_status, active_count: _count, ...script } = row;
  if (script.id === null) {
    // The snapshot may still show an allowed state when a concurrent caller won the row.
    const message = statusesLeadingTo(to).includes(previous_status)
      ? `the script changed state concurrently and cannot become ${to}`
      : `a ${previous_status} script cannot become ${to}`;
    throw new InvalidStateError(message, previous_status);
  }
  return script as Script;
}
