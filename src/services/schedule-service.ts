/**
 * Schedules as the API manages them: who may reach which (a user its own, an
 * admin all; someone else's is a 404), the validation of cron and time zone, and
 * the due time, computed here from the rule and stored. Firing is the scheduler's
 * (src/scheduler/).
 */
import { ForbiddenError } from '../domain/errors.ts';
import type { CursorPage } from '../domain/paging.ts';
import { CronRule, checkTimezone, normalizeCron, type Schedule } from '../domain/schedule.ts';
import type { Repositories } from '../repositories/index.ts';
import type { Principal } from './auth-service.ts';

/** Where "now" comes from: the wall clock, or a test's. */
export type Clock = () => Date;
export const systemClock: Clock = () => new Date();

export interface NewScheduleRequest {
  cron: string;
  timezone: string;
  enabled?: boolean;
}

export interface ScheduleChange {
  cron?: string;
  timezone?: string;
  enabled?: boolean;
}

export interface ScheduleListQuery {
  /** Admins only: everyone's schedules. */
  all?: boolean;
  per_page?: number;
  /** Empty or absent for the first page, then the previous page's next_cursor. */
  cursor?: string;
}

const PER_PAGE_DEFAULT = 20;

export class ScheduleService {
  private readonly repos: Repositories;
  private readonly clock: Clock;

  constructor(repos: Repositories, clock: Clock = systemClock) {
    this.repos = repos;
    this.clock = clock;
  }

  /** `ownerId` undefined: an admin, who may schedule anyone's script (the schedule is the script owner's). */
  async create(scriptId: number, request: NewScheduleRequest, ownerId?: number): Promise<Schedule> {
    const now = this.clock();
    const rule = CronRule.parse(request.cron, request.timezone, now);
    const enabled = request.enabled ?? true;
    return this.repos.schedules.create(
      {
        script_id: scriptId,
        cron: rule.expression,
        timezone: rule.timezone,
        enabled,
        next_run_at: enabled ? rule.nextAfter(now) : null,
      },
      ownerId,
    );
  }

  get(id: number, ownerId?: number): Promise<Schedule> {
    return this.repos.schedules.getById(id, ownerId);
  }

  listByScript(scriptId: number, ownerId?: number): Promise<Schedule[]> {
    return this.repos.schedules.listByScript(scriptId, ownerId);
  }

  /** Own schedules, newest first; an admin's `all=true` lists everyone's. */
  async list(principal: Principal, query: ScheduleListQuery): Promise<CursorPage<Schedule>> {
    if (query.all === true && principal.role !== 'admin')
      throw new ForbiddenError('only admins may list schedules of other users');
    const cursor = query.cursor === undefined || query.cursor === '' ? null : query.cursor;
    return this.repos.schedules.listAfter(
      { user_id: query.all === true ? undefined : principal.user_id },
      cursor,
      query.per_page ?? PER_PAGE_DEFAULT,
    );
  }

  /**
   * Changes the rule or the state. `next_run_at` is recomputed from now (the next
   * occurrence of the new rule; null when disabled), under a lock on the row, so a
   * scheduler never fires the old rule's occurrence after the change is answered.
   */
  async update(id: number, change: ScheduleChange, ownerId?: number): Promise<Schedule> {
    // The fields given are checked before any lock is taken; the rule as a whole after.
    if (change.cron !== undefined) normalizeCron(change.cron);
    if (change.timezone !== undefined) checkTimezone(change.timezone);
    return this.repos.transaction(async (tx) => {
      const current = await tx.schedules.lockById(id, ownerId);
      const now = this.clock();
      const rule = CronRule.parse(change.cron ?? current.cron, change.timezone ?? current.timezone, now);
      const enabled = change.enabled ?? current.enabled;
      return tx.schedules.update(id, {
        cron: rule.expression,
        timezone: rule.timezone,
        enabled,
        next_run_at: enabled ? rule.nextAfter(now) : null,
      });
    });
  }

  delete(id: number, ownerId?: number): Promise<void> {
    return this.repos.schedules.delete(id, ownerId);
  }
}
