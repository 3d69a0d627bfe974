/**
 * What a scheduler does with one due schedule at `now`, as a pure function of its
 * rule, its stored due time and the clock (so tests need no waiting):
 * - occurrences older than the catch-up window (SCHEDULE_CATCHUP_SECONDS) were
 *   missed while nothing ran: skipped and counted;
 * - of the occurrences inside the window, only the latest fires (so a scheduler
 *   that was away fires once on its return, never a burst); earlier ones are
 *   skipped and counted;
 * - the schedule then waits for the first occurrence after `now`.
 */
import type { CronRule } from '../domain/schedule.ts';

/**
 * How many missed occurrences older than the window are counted one by one (croner
 * takes ~0.3 ms an occurrence); past it (a per-minute schedule whose schedulers were
 * all down for a day) the rest are jumped over uncounted, so an outage costs bounded work.
 */
export const MISSED_COUNT_LIMIT = 1_000;

export interface FiringPlan {
  /** The occurrence to fire now, or null when none is recent enough. */
  fire: Date | null;
  /** Occurrences passed over without a run. */
  skipped: number;
  /** The next occurrence after now; null when the rule never fires again. */
  next: Date | null;
}

export function planFiring(rule: CronRule, due: Date, now: Date, catchupSeconds: number): FiringPlan {
  const windowStart = now.getTime() - catchupSeconds * 1000;
  let skipped = 0;
  let at: Date | null = due;
  while (at !== null && at.getTime() < windowStart) {
    skipped++;
    at = skipped < MISSED_COUNT_LIMIT ? rule.nextAfter(at) : rule.nextAfter(new Date(windowStart - 1));
  }
  let fire: Date | null = null;
  while (at !== null && at.getTime() <= now.getTime()) {
    if (fire !== null) skipped++;
    fire = at;
    at = rule.nextAfter(at);
  }
  return { fire, skipped, next: at };
}
