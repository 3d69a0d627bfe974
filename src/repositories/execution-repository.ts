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
 */
import type postgres from 'postgres';
import type { Database } from '../db/database.js';
import type { ScriptStatus } from '../domain/enums.js';
import { InvalidStateError, NotFoundError, TooManyRunningError } from '../domain/errors.js';
import {
  ACTIVE_STATUSES,
  assertExecutionMetrics,
  SCRIPT_COLUMNS,
  type Script,
  type ScriptExtension,
  statusesLeadingTo,
} from '../domain/script.js';

/** What a finished run measured. */
export interface RunResult {
  exit_code: number | null;
  execution_time_seconds: number;
  memory_usage_mb: number | null;
}

/** A claimed run: the script and where its file is. */
export interface ClaimedRun {
  id: number;
  user_id: number;
  file_path: string;
  file_extension: ScriptExtension;
}

export interface Lease {
  executorId: string;
  seconds: number;
}

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

type Fragment = postgres.PendingQuery<postgres.Row[]>;
type TransitionRow = { previous_status: ScriptStatus; active_count?: number } & {
  [K in keyof Script]: Script[K] | null;
};

const RETURNING = SCRIPT_COLUMNS.map((c) => `s.${c}`);

export class ExecutionRepository {
  constructor(private readonly db: Database) {}

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

  /**
   * Claims up to `limit` queued scripts, oldest first, for an executor. SKIP LOCKED:
   * concurrent executors take different rows and never wait on each other.
   */
  async claim(lease: Lease, limit = 1): Promise<ClaimedRun[]> {
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
          order by queued_at, id
          limit ${limit}
          for update skip locked
        )
        returning s.id, s.user_id, s.file_path, s.file_extension
      `,
    );
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
        select id, user_id, ${data}
        from scripts
        where id = ${id} and status = 'running' and executor_id = ${executorId}
        for share
      `,
    );
    return n === 1;
  }

  /** running → completed, with the run's metrics; `executorId` guards an executor's write. */
  async complete(id: number, result: RunResult, executorId?: string): Promise<Script> {
    assertExecutionMetrics(result);
    const sql = this.db.sql;
    return this.transition(
      'executions.complete',
      id,
      'completed',
      sql`completed_at = now(), ${this.metrics(result)}, ${foldLogs(sql, id)}`,
      { executorId },
    );
  }

  /** running → failed, with why and whatever was measured. */
  async fail(id: number, message: string, result: RunResult, executorId?: string): Promise<Script> {
    assertExecutionMetrics(result);
    const sql = this.db.sql;
    return this.transition(
      'executions.fail',
      id,
      'failed',
      sql`completed_at = now(), error_message = ${message}, ${this.metrics(result)}, ${foldLogs(sql, id)}`,
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
      sql`completed_at = now(), error_message = 'cancelled', ${foldLogs(sql, id)}`,
      { ownerId },
    );
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
          set ${this.metrics(result)}, ${foldLogs(sql, id)} || ${unwritten}::text
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
   * database). Any executor may call it; returns the ids it failed.
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
                || '(it died or lost the database); the outcome of the run is unknown',
              execution_logs = coalesce(s.execution_logs, '') || coalesce(
                (select string_agg(c.data, '' order by c.id) from script_log_chunks as c where c.script_id = s.id),
                ''
              )
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
  async readLogs(id: number, ownerId?: number): Promise<{ status: ScriptStatus; logs: string }> {
    const sql = this.db.sql;
    const row = await this.db.maybeOne<{ status: ScriptStatus; logs: string }>(
      'executions.readLogs',
      sql`
        select s.status,
          coalesce(s.execution_logs, '') || coalesce(
            (select string_agg(c.data, '' order by c.id) from script_log_chunks as c where c.script_id = s.id),
            ''
          ) as logs
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
            then coalesce(s.execution_logs, '') || coalesce(
              (select string_agg(c.data, '' order by c.id) from script_log_chunks as c where c.script_id = s.id),
              ''
            )
          end as final
        from scripts as s
        where s.id = ${id} ${ownerId === undefined ? sql`` : sql`and s.user_id = ${ownerId}`}
      `,
    );
    if (row === null) throw new NotFoundError('script');
    return row;
  }

  private metrics(result: RunResult): Fragment {
    const sql = this.db.sql;
    return sql`
      exit_code = ${result.exit_code},
      execution_time_seconds = round(${result.execution_time_seconds}::numeric, 3),
      memory_usage_mb = round(${result.memory_usage_mb}::numeric, 2)
    `;
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

/**
 * `execution_logs` gets the chunks this statement sees; the statement's `folded`
 * CTE deletes exactly those (same snapshot). A chunk committed after the snapshot
 * is neither folded nor deleted, so it stays visible after the folded text: nothing
 * is lost whichever statement finishes a run.
 */
function foldLogs(sql: Database['sql'], id: number): Fragment {
  return sql`
    execution_logs = coalesce(s.execution_logs, '') || coalesce(
      (select string_agg(c.data, '' order by c.id) from script_log_chunks as c where c.script_id = ${id}),
      ''
    )
  `;
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
