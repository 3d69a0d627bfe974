/**
 * Runs (script_runs): queueing a run of a script, and reading runs.
 *
 * Exported API (for the scheduler, the importer, the services):
 * - `tryQueue(scriptId, options)` inserts a queued run of the script and updates the
 *   script's latest-run summary (status `queued`, metrics cleared, `last_run_id`,
 *   `run_count + 1`) in ONE statement, after locking the owner's users row (FOR NO KEY
 *   UPDATE) so that the owner's queued + running count (`maxActive`) holds under any
 *   concurrency. It never throws for a refusal: it answers
 *   `{ run }` or `{ refused: 'not_found' | 'live' | 'limit', ... }`
 *   ('live': the script already has a queued or running run; 'limit': the owner is at
 *   `maxActive`). `queue()` is the same, throwing NotFoundError / InvalidStateError /
 *   TooManyRunningError instead (the HTTP answers 404 / 409 / 429).
 * - Both work on the Database the repository was built with. To queue inside a
 *   transaction of your own (the scheduler advancing a schedule and queueing its run
 *   atomically), use the transaction's repositories:
 *   `repos.transaction(async (tx) => { const r = await tx.runs.tryQueue(...); ... })`
 *   or `new RunRepository(txDb)`; the queue step is then a savepoint of that transaction,
 *   so a refusal or an error rolls back only the queue step.
 * - `findById` / `getById` read one run (`ownerId` scopes it: someone else's is not found).
 * - `cancel(runId)` / `cancelScript(scriptId)`: queued|running → cancelled, with the summary.
 * - `list(filters, cursor, limit)`: newest first, keyset; `readLogs`, `readScriptLogs`,
 *   `followLogs`: a run's output; `purgeExpired`: retention (run-history.ts).
 */
import type { Database } from '../db/database.ts';
import type { RunTrigger, ScriptStatus } from '../domain/enums.ts';
import { InvalidStateError, NotFoundError, TooManyRunningError } from '../domain/errors.ts';
import type { CursorPage } from '../domain/paging.ts';
import { RUN_COLUMNS, type Run } from '../domain/run.ts';
import { ACTIVE_STATUSES, SCRIPT_COLUMNS, type Script } from '../domain/script.ts';
import { queueRunsCtes, queueScheduledRuns, type ScheduledRunRequest } from './run-batch.ts';
import { listRuns, type PurgePosition, purgeExpiredRuns, type RunFilters } from './run-history.ts';
import { runOf, type TransitionRow } from './run-outcomes.ts';
import { logBytes, RUN_RETURNING, summaryFrom } from './run-summary.ts';

export type { RunFilters } from './run-history.ts';

export interface QueueOptions {
  /** Only this user's script (someone else's is not found). */
  ownerId?: number;
  /** The owner's queued + running runs must stay at most this many. */
  maxActive: number;
  /** 'manual' (default) or 'schedule'. */
  trigger?: RunTrigger;
  /** The schedule that queues the run (trigger 'schedule'). */
  scheduleId?: number | null;
}

export type QueueResult =
  | { run: Run }
  | { refused: 'not_found' }
  /** The script already has a queued or running run (`status` is the script's). */
  | { refused: 'live'; status: ScriptStatus }
  /** The owner has `maxActive` queued + running runs. */
  | { refused: 'limit'; limit: number };

type QueueRow = { previous_status: ScriptStatus; live_count: number } & { [K in keyof Run]: Run[K] | null };

export class RunRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  /** Queues a run, or says why not (see the module comment). */
  async tryQueue(scriptId: number, options: QueueOptions): Promise<QueueResult> {
    return this.db.transaction(async (tx) => {
      const sql = tx.sql;
      const owner = await tx.maybeOne<{ id: number }>(
        'runs.queue.lockOwner',
        sql`
          select u.id
          from scripts as s
          join users as u on u.id = s.user_id
          where s.id = ${scriptId} ${options.ownerId === undefined ? sql`` : sql`and s.user_id = ${options.ownerId}`}
          for no key update of u
        `,
      );
      if (owner === null) return { refused: 'not_found' as const };
      // The rules are queueRunsCtes' (run-batch.ts), the scheduler's too: one request here.
      const row = await tx.maybeOne<QueueRow>(
        'runs.queue',
        sql`
          with due as (
            select id as script_id, user_id, ${options.trigger ?? 'manual'}::run_trigger as trigger,
              ${options.scheduleId ?? null}::bigint as schedule_id, 1::bigint as ord
            from scripts
            where id = ${scriptId}
          ), ${queueRunsCtes(sql, options.maxActive, sql`${sql(RUN_COLUMNS)}`)}
          select target.status as previous_status,
            coalesce((select sum(n) from live), 0)::int as live_count, inserted.*
          from scripts as target
          left join inserted on true
          where target.id = ${scriptId}
        `,
      );
      if (row === null) return { refused: 'not_found' as const };
      const { previous_status, live_count, ...run } = row;
      if (run.id !== null) return { run: run as Run };
      if (ACTIVE_STATUSES.includes(previous_status) || live_count < options.maxActive)
        return { refused: 'live' as const, status: previous_status };
      return { refused: 'limit' as const, limit: options.maxActive };
    });
  }

  /** As tryQueue, but a refusal throws: NotFoundError, InvalidStateError or TooManyRunningError. */
  async queue(scriptId: number, options: QueueOptions): Promise<Run> {
    const result = await this.tryQueue(scriptId, options);
    if ('run' in result) return result.run;
    switch (result.refused) {
      case 'not_found':
        throw new NotFoundError('script');
      case 'live':
        throw new InvalidStateError(
          ACTIVE_STATUSES.includes(result.status)
            ? `the script already has a ${result.status} run`
            : 'the script changed state concurrently and cannot be queued',
          result.status,
        );
      case 'limit':
        throw new TooManyRunningError(result.limit);
    }
  }

  async findById(id: number, ownerId?: number): Promise<Run | null> {
    const sql = this.db.sql;
    return this.db.maybeOne<Run>(
      'runs.findById',
      ownerId === undefined
        ? sql`select ${sql(RUN_COLUMNS)} from script_runs where id = ${id}`
        : sql`select ${sql(RUN_COLUMNS)} from script_runs where id = ${id} and user_id = ${ownerId}`,
    );
  }

  async getById(id: number, ownerId?: number): Promise<Run> {
    const run = await this.findById(id, ownerId);
    if (run === null) throw new NotFoundError('run');
    return run;
  }

  /**
   * The scheduler's queue: a run (trigger 'schedule') for each due occurrence that may
   * run, in one statement, by tryQueue's rules; returns run ids by schedule id (see run-batch.ts).
   */
  queueScheduled(requests: readonly ScheduledRunRequest[], maxActive: number): Promise<Map<number, number>> {
    return queueScheduledRuns(this.db, requests, maxActive);
  }

  /** queued|running → cancelled. A running process is then killed by its executor (NOTIFY run_cancelled). */
  async cancel(id: number, ownerId?: number): Promise<Run> {
    const sql = this.db.sql;
    const row = await this.db.maybeOne<TransitionRow>(
      'runs.cancel',
      sql`
        with target as (
          select id, status from script_runs
          where id = ${id} ${ownerId === undefined ? sql`` : sql`and user_id = ${ownerId}`}
        ), changed as (
          update script_runs as r
          set status = 'cancelled', completed_at = now(), error_message = 'cancelled', ${logBytes(sql)}
          from target
          where r.id = target.id and r.status in ('queued', 'running')
          returning ${sql(RUN_RETURNING)}
        ), summary as (
          ${summaryFrom(sql, 'changed', 'cancelled')}
        )
        select target.status as previous_status, changed.*
        from target
        left join changed on true
      `,
    );
    return runOf(row, 'cancelled');
  }

  /** Cancels the script's queued or running run; answers the script with its summary. */
  async cancelScript(scriptId: number, ownerId?: number): Promise<Script> {
    const sql = this.db.sql;
    const row = await this.db.maybeOne<
      { previous_status: ScriptStatus } & { [K in keyof Script]: Script[K] | null }
    >(
      'runs.cancelScript',
      sql`
        with target as (
          select id, status, last_run_id from scripts
          where id = ${scriptId} ${ownerId === undefined ? sql`` : sql`and user_id = ${ownerId}`}
        ), changed as (
          update script_runs as r
          set status = 'cancelled', completed_at = now(), error_message = 'cancelled', ${logBytes(sql)}
          from target
          where r.id = target.last_run_id and r.status in ('queued', 'running')
          returning ${sql(RUN_RETURNING)}
        ), summary as (
          ${summaryFrom(sql, 'changed', 'cancelled', sql`returning ${sql(SCRIPT_COLUMNS.map((c) => `s.${c}`))}`)}
        )
        select target.status as previous_status, summary.*
        from target
        left join summary on true
      `,
    );
    if (row === null) throw new NotFoundError('script');
    const { previous_status, ...script } = row;
    if (script.id === null)
      throw new InvalidStateError(
        ACTIVE_STATUSES.includes(previous_status)
          ? 'the script changed state concurrently and cannot become cancelled'
          : `a ${previous_status} script cannot become cancelled`,
        previous_status,
      );
    return script as Script;
  }

  /** Runs newest first, a keyset page; `cursor` null for the first page. */
  list(filters: RunFilters, cursor: string | null, limit: number): Promise<CursorPage<Run>> {
    return listRuns(this.db.reader, filters, cursor, limit);
  }

  /** Runs waiting and running now (metrics). */
  async queueDepth(): Promise<{ queued: number; running: number }> {
    const sql = this.db.sql;
    return this.db.one(
      'executions.queueDepth',
      sql`
        select count(*) filter (where status = 'queued') as queued,
          count(*) filter (where status = 'running') as running
        from script_runs
        where status in ('queued', 'running')
      `,
    );
  }

  /** One retention batch (see run-history.ts). */
  purgeExpired(
    before: Date,
    batch: number,
    after: PurgePosition = null,
  ): Promise<{ deleted: number; position: PurgePosition }> {
    return purgeExpiredRuns(this.db, before, batch, after);
  }
}
