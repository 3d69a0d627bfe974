/**
 * Lists of runs (newest first, keyset on id, so page 5,000 costs what page 1 does) and
 * retention (expired runs deleted in small batches, never a script's latest run).
 * RunRepository exposes these.
 */
import { Type } from '@sinclair/typebox';
import type { Database } from '../db/database.ts';
import type { RunStatus, RunTrigger } from '../domain/enums.ts';
import { type CursorPage, cursorPage, decodeCursor } from '../domain/paging.ts';
import { RUN_COLUMNS, type Run } from '../domain/run.ts';

export interface RunFilters {
  /** Only this user's runs; undefined: everyone's (admin). */
  user_id?: number;
  script_id?: number;
  status?: RunStatus;
  trigger?: RunTrigger;
  /** Queued at or after. */
  since?: Date;
}

const RunCursor = Type.Tuple([
  Type.Literal('run'),
  Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
]);

/** One page of runs, newest first; `cursor` null for the first page. */
export async function listRuns(
  db: Database,
  filters: RunFilters,
  cursor: string | null,
  limit: number,
): Promise<CursorPage<Run>> {
  const sql = db.sql;
  const before = cursor === null ? null : decodeCursor(cursor, RunCursor)[1];
  const rows = await db.many<Run>(
    'runs.list',
    sql`
      select ${sql(RUN_COLUMNS)}
      from script_runs
      where true
        ${filters.user_id === undefined ? sql`` : sql`and user_id = ${filters.user_id}`}
        ${filters.script_id === undefined ? sql`` : sql`and script_id = ${filters.script_id}`}
        ${filters.status === undefined ? sql`` : sql`and status = ${filters.status}`}
        ${filters.trigger === undefined ? sql`` : sql`and trigger = ${filters.trigger}`}
        ${filters.since === undefined ? sql`` : sql`and queued_at >= ${filters.since}`}
        ${before === null ? sql`` : sql`and id < ${before}`}
      order by id desc
      limit ${limit + 1}
    `,
  );
  return cursorPage(rows, limit, (row) => ['run', row.id]);
}

/** Where a purge pass has got to: the (completed_at as text, id) of the last run it deleted. */
export type PurgePosition = [completedAt: string, id: number] | null;

/**
 * Deletes up to `batch` runs that finished before `before` and are not their script's
 * latest run, with their output, in one statement (one short transaction); returns
 * how many and where it got to, to pass as `after` to the next batch (so a pass reads
 * the kept latest runs among the expired ones once, not once per batch). SKIP LOCKED:
 * rows someone is writing are left for the next pass.
 */
export async function purgeExpiredRuns(
  db: Database,
  before: Date,
  batch: number,
  after: PurgePosition,
): Promise<{ deleted: number; position: PurgePosition }> {
  const sql = db.sql;
  const [row] = await db.many<{ deleted: number; last_at: string | null; last_id: number | null }>(
    'runs.purgeExpired',
    sql`
      with doomed as (
        select r.id, r.completed_at
        from script_runs as r
        where r.status in ('completed', 'failed', 'cancelled')
          and r.completed_at < ${before}
          ${after === null ? sql`` : sql`and (r.completed_at, r.id) > (${after[0]}::text::timestamptz, ${after[1]})`}
          and not exists (select 1 from scripts as s where s.last_run_id = r.id and s.user_id = r.user_id)
        order by r.completed_at, r.id
        limit ${batch}
        for update of r skip locked
      ), chunks as (
        delete from run_log_chunks as k using doomed where k.run_id = doomed.id
      ), deleted as (
        delete from script_runs as r using doomed where r.id = doomed.id
        returning r.id, r.completed_at
      ), last as (
        select completed_at::text as at, id from deleted order by completed_at desc, id desc limit 1
      )
      select (select count(*) from deleted)::int as deleted, (select at from last) as last_at,
        (select id from last) as last_id
    `,
  );
  const deleted = row?.deleted ?? 0;
  const position: PurgePosition =
    row?.last_at != null && row.last_id != null ? [row.last_at, row.last_id] : after;
  return { deleted, position };
}
