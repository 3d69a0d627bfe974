/**
 * What only executors do to take and hold runs: claim queued runs (FOR UPDATE SKIP LOCKED,
 * fairly between users), hold them by a lease (executor_id + lease_expires_at) that they
 * renew, and fail the runs whose lease lapsed or whose claim was lost. Every write is
 * guarded by the executor id, so an executor that lost its lease changes nothing; every
 * write also updates the script's latest-run summary in the same statement
 * (run-summary.ts). How a run ended is written by run-outcomes.ts. Repositories exposes
 * it as `leases`.
 */
import type { Database } from '../db/database.ts';
import type { Run } from '../domain/run.ts';
import type { ScriptExtension } from '../domain/script.ts';
import { runOf, type TransitionRow } from './run-outcomes.ts';
import { logBytes, RUN_RETURNING, summaryFrom } from './run-summary.ts';

/** A claimed run: which run, of which script and user (the script's bytes are `Storage`'s, by script and user). */
export interface ClaimedRun {
  id: number;
  script_id: number;
  user_id: number;
  file_extension: ScriptExtension;
}

export interface Lease {
  executorId: string;
  seconds: number;
}

export class RunLeaseRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  /**
   * Claims up to `limit` queued runs for an executor, in one statement. Fair between
   * users (issue 7): each queued run's turn is its owner's running runs plus its place
   * in the owner's queue (1 for the oldest), and runs are taken by turn, then oldest
   * queued: the next run goes to the user with the fewest running runs, and several
   * free slots are shared out as if claimed one at a time. SKIP LOCKED: concurrent
   * executors take different rows and never wait on each other. The queue is small
   * (MAX_CONCURRENT_SCRIPTS per user), so ranking all of it is cheap.
   */
  async claim(lease: Lease, limit = 1): Promise<ClaimedRun[]> {
    const sql = this.db.sql;
    return this.db.many<ClaimedRun>(
      'executions.claim',
      sql`
        with running as (
          select user_id, count(*) as n
          from script_runs
          where status = 'running'
          group by user_id
        ), ranked as materialized (
          select q.id, q.queued_at,
            coalesce(running.n, 0) + row_number() over (partition by q.user_id order by q.queued_at, q.id) as turn
          from script_runs as q
          left join running on running.user_id = q.user_id
          where q.status = 'queued'
        ), picked as (
          select q.id
          from script_runs as q
          join ranked on ranked.id = q.id
          where q.status = 'queued'
          order by ranked.turn, ranked.queued_at, q.id
          limit ${limit}
          for update of q skip locked
        ), claimed as (
          update script_runs as r
          set status = 'running', started_at = now(), executor_id = ${lease.executorId},
              lease_expires_at = now() + make_interval(secs => ${lease.seconds})
          from picked
          where r.id = picked.id
          returning ${sql(RUN_RETURNING)}
        ), summary as (
          ${summaryFrom(sql, 'claimed', 'running')}
        )
        select c.id, c.script_id, c.user_id, s.file_extension
        from claimed as c
        join scripts as s on s.id = c.script_id
        order by c.id
      `,
    );
  }

  /** queued → running for one given run (an executor that picks its own work; tests). */
  async start(id: number, lease: Lease): Promise<Run> {
    const sql = this.db.sql;
    const row = await this.db.maybeOne<TransitionRow>(
      'executions.start',
      sql`
        with target as (
          select id, status from script_runs where id = ${id}
        ), changed as (
          update script_runs as r
          set status = 'running', started_at = now(), executor_id = ${lease.executorId},
              lease_expires_at = now() + make_interval(secs => ${lease.seconds})
          from target
          where r.id = target.id and r.status = 'queued'
          returning ${sql(RUN_RETURNING)}
        ), summary as (
          ${summaryFrom(sql, 'changed', 'running')}
        )
        select target.status as previous_status, changed.*
        from target
        left join changed on true
      `,
    );
    return runOf(row, 'running');
  }

  /**
   * After a claim whose answer never came (the connection dropped, the client gave up)
   * but which may have committed: fails the executor's running runs other than `keep`,
   * the runs it knows it started. Those never had a process; the status machine has no
   * way back from running to queued, so they are failed at once, saying that the script
   * did not run, rather than left to lapse as "outcome unknown". Returns their ids.
   */
  async failUnstarted(executorId: string, keep: readonly number[]): Promise<number[]> {
    const sql = this.db.sql;
    const rows = await this.db.many<{ id: number }>(
      'executions.failUnstarted',
      sql`
        with failed as (
          update script_runs as r
          set status = 'failed', completed_at = now(),
              error_message = 'the executor lost the answer to its claim of this run (the database '
                || 'connection failed) and did not start it; the script did not run'
          where r.status = 'running'
            and r.executor_id = ${executorId}
            and r.id <> all(${keep as number[]}::bigint[])
          returning ${sql(RUN_RETURNING)}
        ), summary as (
          ${summaryFrom(sql, 'failed', 'failed')}
        )
        select id from failed
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
        update script_runs
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
          update script_runs as r
          set status = 'failed', completed_at = now(),
              error_message = 'the executor running this script stopped renewing its lease '
                || '(it died, hung or lost the database); the outcome of the run is unknown, '
                || 'and so are its exit code, wall time and peak memory',
              ${logBytes(sql)}
          where r.status = 'running' and r.lease_expires_at < now()
          returning ${sql(RUN_RETURNING)}
        ), summary as (
          ${summaryFrom(sql, 'expired', 'failed')}
        )
        select id from expired
      `,
    );
    return rows.map((r) => r.id);
  }
}
