/**
 * The life of a run, as the status machine of API.md allows it:
 * uploaded|completed|failed|cancelled → queued → running → completed|failed|cancelled,
 * and queued → cancelled. Each transition is one guarded UPDATE
 * (`where status = any(<states that lead here>)`), so two clients racing on one
 * script never both win; the loser gets InvalidStateError, never a lost update.
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
  statusesLeadingTo,
} from '../domain/script.js';

/** What a finished run measured. */
export interface RunResult {
  exit_code: number | null;
  execution_time_seconds: number;
  memory_usage_mb: number | null;
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
   * and `maxActive` queued + running holds under any concurrency.
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
            set status = 'queued',
                execution_logs = null, error_message = null, exit_code = null,
                execution_time_seconds = null, memory_usage_mb = null,
                started_at = null, completed_at = null
            from target
            where s.id = target.id
              and s.status = any(${statusesLeadingTo('queued')}::script_status[])
              and (select n from active) < ${options.maxActive}
            returning ${sql(RETURNING)}
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

  /** queued → running. Exactly one of any number of concurrent callers wins. */
  async startExecution(id: number): Promise<Script> {
    const sql = this.db.sql;
    return this.transition('executions.start', id, 'running', sql`started_at = now(), completed_at = null`);
  }

  /** running → completed, with the run's metrics. */
  async complete(id: number, result: RunResult): Promise<Script> {
    assertExecutionMetrics(result);
    const sql = this.db.sql;
    return this.transition(
      'executions.complete',
      id,
      'completed',
      sql`
        completed_at = now(), exit_code = ${result.exit_code},
        execution_time_seconds = round(${result.execution_time_seconds}::numeric, 3),
        memory_usage_mb = round(${result.memory_usage_mb}::numeric, 2)
      `,
    );
  }

  /** running → failed, with why and whatever was measured. */
  async fail(id: number, message: string, result: RunResult): Promise<Script> {
    assertExecutionMetrics(result);
    const sql = this.db.sql;
    return this.transition(
      'executions.fail',
      id,
      'failed',
      sql`
        completed_at = now(), error_message = ${message}, exit_code = ${result.exit_code},
        execution_time_seconds = round(${result.execution_time_seconds}::numeric, 3),
        memory_usage_mb = round(${result.memory_usage_mb}::numeric, 2)
      `,
    );
  }

  /** queued|running → cancelled. */
  async cancel(id: number, ownerId?: number): Promise<Script> {
    const sql = this.db.sql;
    return this.transition(
      'executions.cancel',
      id,
      'cancelled',
      sql`completed_at = now(), error_message = 'cancelled'`,
      ownerId,
    );
  }

  private async transition(
    name: string,
    id: number,
    to: ScriptStatus,
    set: Fragment,
    ownerId?: number,
  ): Promise<Script> {
    const sql = this.db.sql;
    const row = await this.db.maybeOne<TransitionRow>(
      name,
      sql`
        with target as (
          select id, status
          from scripts
          where id = ${id} ${ownerId === undefined ? sql`` : sql`and user_id = ${ownerId}`}
        ), changed as (
          update scripts as s
          set status = ${to}, ${set}
          from target
          where s.id = target.id
            and s.status = any(${statusesLeadingTo(to)}::script_status[])
          returning ${sql(RETURNING)}
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
