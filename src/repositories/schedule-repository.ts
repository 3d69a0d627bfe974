/**
 * Schedules: the rows the API manages, and what schedulers claim. `ownerId`
 * (when given) restricts a statement to one user's schedules: someone else's
 * schedule (or script) is simply not found.
 *
 * Firing (src/scheduler/) is three steps in one transaction: claimDue locks due
 * rows (FOR UPDATE SKIP LOCKED, so concurrent schedulers split them), the runs are
 * queued, and recordOutcomes advances every claimed row at once. A row another
 * scheduler advanced and committed meanwhile no longer matches `next_run_at <= now`
 * when it is locked (READ COMMITTED re-checks the condition on the new version), so
 * an occurrence is handled once.
 */
import { Type } from '@sinclair/typebox';
import type { Database } from '../db/database.ts';
import { ConflictError, NotFoundError } from '../domain/errors.ts';
import { type CursorPage, cursorPage, decodeCursor } from '../domain/paging.ts';
import { MAX_SCHEDULES_PER_SCRIPT, SCHEDULE_COLUMNS, type Schedule } from '../domain/schedule.ts';
import { pick } from './rows.ts';

export interface NewSchedule {
  script_id: number;
  cron: string;
  timezone: string;
  enabled: boolean;
  next_run_at: Date | null;
}

/** A due schedule as a scheduler sees it: the rule, the occurrence, and whether its owner may run. */
export interface DueSchedule {
  id: number;
  script_id: number;
  user_id: number;
  cron: string;
  timezone: string;
  next_run_at: Date;
  owner_active: boolean;
}

/** What happened to a claimed schedule: the new due time, and the run queued or the skips. */
export interface ScheduleOutcome {
  id: number;
  /** The next occurrence; null disables the schedule (its rule never fires again). */
  next_run_at: Date | null;
  /** The run queued now, if any. */
  run_id: number | null;
  fired_at: Date | null;
  /** Occurrences skipped now (busy script, owner at its limit, or missed). */
  skipped: number;
  skipped_at: Date | null;
}

export interface ScheduleFilters {
  /** Only this user's schedules; undefined means everyone's (admin). */
  user_id?: number;
}

// A page's cursor is the id of its last row (pages are newest first).
const ScheduleCursor = Type.Tuple([Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })]);

export class ScheduleRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  private get sql() {
    return this.db.sql;
  }

  /**
   * Adds a schedule to a script (owned by `ownerId` when given), unless the script
   * has MAX_SCHEDULES_PER_SCRIPT already (TOO_MANY_SCHEDULES). The script's row is
   * locked first, so concurrent creations on one script are counted one at a time;
   * FOR NO KEY UPDATE does not block the key-share locks that foreign keys take.
   */
  async create(input: NewSchedule, ownerId?: number): Promise<Schedule> {
    return this.db.transaction(async (tx) => {
      const sql = tx.sql;
      const script = await tx.maybeOne<{ id: number; user_id: number }>(
        'schedules.create.lockScript',
        sql`
          select id, user_id
          from scripts
          where id = ${input.script_id} ${ownerId === undefined ? sql`` : sql`and user_id = ${ownerId}`}
          for no key update
        `,
      );
      if (script === null) throw new NotFoundError('script');
      // A statement of its own, after the lock: its snapshot sees every schedule committed before.
      const created = await tx.maybeOne<Schedule>(
        'schedules.create',
        sql`
          insert into script_schedules (script_id, user_id, cron, timezone, enabled, next_run_at)
          select ${script.id}, ${script.user_id}, ${input.cron}, ${input.timezone}, ${input.enabled},
            ${input.next_run_at}
          where (select count(*) from script_schedules where script_id = ${script.id}) < ${MAX_SCHEDULES_PER_SCRIPT}
          returning ${sql(SCHEDULE_COLUMNS)}
        `,
      );
      if (created === null)
        throw new ConflictError(
          'TOO_MANY_SCHEDULES',
          `a script may have at most ${MAX_SCHEDULES_PER_SCRIPT} schedules`,
        );
      return created;
    });
  }

  async findById(id: number, ownerId?: number): Promise<Schedule | null> {
    const sql = this.sql;
    return this.db.maybeOne<Schedule>(
      'schedules.findById',
      sql`
        select ${sql(SCHEDULE_COLUMNS)}
        from script_schedules
        where id = ${id} ${this.owned(ownerId)}
      `,
    );
  }

  async getById(id: number, ownerId?: number): Promise<Schedule> {
    const schedule = await this.findById(id, ownerId);
    if (schedule === null) throw new NotFoundError('schedule');
    return schedule;
  }

  /** Locks a schedule for a change computed in TypeScript (inside a transaction). */
  async lockById(id: number, ownerId?: number): Promise<Schedule> {
    const sql = this.sql;
    const schedule = await this.db.maybeOne<Schedule>(
      'schedules.lockById',
      sql`
        select ${sql(SCHEDULE_COLUMNS)}
        from script_schedules
        where id = ${id} ${this.owned(ownerId)}
        for no key update
      `,
    );
    if (schedule === null) throw new NotFoundError('schedule');
    return schedule;
  }

  /** A script's schedules, oldest first; NotFoundError when the script is missing or not the owner's. */
  async listByScript(scriptId: number, ownerId?: number): Promise<Schedule[]> {
    const db = this.db.reader;
    const sql = db.sql;
    const rows = await db.many<{ found: number } & { [K in keyof Schedule]: Schedule[K] | null }>(
      'schedules.listByScript',
      sql`
        select s.id as found, ${sql(SCHEDULE_COLUMNS.map((c) => `sch.${c}`))}
        from scripts as s
        left join script_schedules as sch on sch.script_id = s.id
        where s.id = ${scriptId} ${ownerId === undefined ? sql`` : sql`and s.user_id = ${ownerId}`}
        order by sch.id
      `,
    );
    if (rows.length === 0) throw new NotFoundError('script');
    return rows.filter((r) => r.id !== null).map((row) => pick<Schedule>(row, SCHEDULE_COLUMNS));
  }

  /** Keyset page, newest first; `cursor` null for the first. */
  async listAfter(
    filters: ScheduleFilters,
    cursor: string | null,
    limit: number,
  ): Promise<CursorPage<Schedule>> {
    const db = this.db.reader;
    const sql = db.sql;
    const [afterId] = cursor === null ? [null] : decodeCursor(cursor, ScheduleCursor);
    const rows = await db.many<Schedule>(
      'schedules.listAfter',
      sql`
        select ${sql(SCHEDULE_COLUMNS)}
        from script_schedules
        where true
          ${filters.user_id === undefined ? sql`` : sql`and user_id = ${filters.user_id}`}
          ${afterId === null ? sql`` : sql`and id < ${afterId}`}
        order by id desc
        limit ${limit + 1}
      `,
    );
    return cursorPage(rows, limit, (row) => [row.id]);
  }

  /** Sets a locked schedule's rule, state and due time (see lockById). */
  async update(
    id: number,
    change: { cron: string; timezone: string; enabled: boolean; next_run_at: Date | null },
  ): Promise<Schedule> {
    const sql = this.sql;
    return this.db.one<Schedule>(
      'schedules.update',
      sql`
        update script_schedules
        set cron = ${change.cron}, timezone = ${change.timezone}, enabled = ${change.enabled},
          next_run_at = ${change.next_run_at}
        where id = ${id}
        returning ${sql(SCHEDULE_COLUMNS)}
      `,
    );
  }

  async delete(id: number, ownerId?: number): Promise<void> {
    const sql = this.sql;
    const deleted = await this.db.count(
      'schedules.delete',
      sql`delete from script_schedules where id = ${id} ${this.owned(ownerId)}`,
    );
    if (deleted === 0) throw new NotFoundError('schedule');
  }

  /**
   * Locks up to `limit` schedules due at `now`, earliest first, skipping those another
   * scheduler holds. Only inside a transaction (the locks last until it ends).
   */
  async claimDue(now: Date, limit: number): Promise<DueSchedule[]> {
    const sql = this.sql;
    return this.db.many<DueSchedule>(
      'schedules.claimDue',
      sql`
        select sch.id, sch.script_id, sch.user_id, sch.cron, sch.timezone, sch.next_run_at,
          u.is_active as owner_active
        from script_schedules as sch
        join users as u on u.id = sch.user_id
        where sch.enabled and sch.next_run_at <= ${now}
        order by sch.next_run_at, sch.id
        limit ${limit}
        for update of sch skip locked
      `,
    );
  }

  /** Records what happened to claimed schedules, in one statement. */
  async recordOutcomes(outcomes: readonly ScheduleOutcome[]): Promise<number> {
    if (outcomes.length === 0) return 0;
    const sql = this.sql;
    return this.db.count(
      'schedules.recordOutcomes',
      sql`
        update script_schedules as s
        set next_run_at = o.next_run_at,
          enabled = s.enabled and o.next_run_at is not null,
          last_run_id = coalesce(o.run_id, s.last_run_id),
          last_fired_at = coalesce(o.fired_at, s.last_fired_at),
          last_skipped_at = case when o.skipped > 0 then o.skipped_at else s.last_skipped_at end,
          skipped_count = s.skipped_count + o.skipped
        from jsonb_to_recordset(${JSON.stringify(outcomes)}::text::jsonb) as o(
          id bigint, next_run_at timestamptz, run_id bigint, fired_at timestamptz,
          skipped bigint, skipped_at timestamptz
        )
        where s.id = o.id
      `,
    );
  }

  /** The earliest next_run_at of any enabled schedule (when a scheduler should wake), or null. */
  async nextDueAt(): Promise<Date | null> {
    const sql = this.sql;
    const row = await this.db.one<{ at: Date | null }>(
      'schedules.nextDueAt',
      sql`select min(next_run_at) as at from script_schedules where enabled`,
    );
    return row.at;
  }

  private owned(ownerId: number | undefined) {
    const sql = this.sql;
    return ownerId === undefined ? sql`` : sql`and user_id = ${ownerId}`;
  }
}
