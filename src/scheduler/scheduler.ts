/**
 * The scheduler: runs in every executor process (`npm start`, `npm run worker`)
 * and fires due schedules (API.md, Schedules).
 *
 * A tick claims due schedules in batches, each batch one transaction: the rows are
 * locked with FOR UPDATE SKIP LOCKED (so concurrent schedulers split them), each
 * schedule's run is queued or its skip recorded, and every row's next_run_at is
 * advanced, all committed together. An occurrence is therefore handled exactly once
 * however many schedulers run; a scheduler that dies mid-batch commits nothing, and
 * another takes the batch over.
 *
 * An occurrence cannot queue when its script already has a queued or running run, or
 * its owner is at MAX_CONCURRENT_SCRIPTS, or the owner is deactivated: it is skipped,
 * never queued late, and counted (last_skipped_at, skipped_count). Missed occurrences
 * follow planFiring (plan.ts): the latest one fires if at most SCHEDULE_CATCHUP_SECONDS
 * old, the others are skipped.
 *
 * Wake-up: after a tick it sleeps until the earliest next_run_at (at most
 * MAX_SLEEP_MS), and sooner when `schedule_changed` is notified with an earlier time
 * (a schedule created, enabled, or moved earlier). Time comes from `clock`, so tests
 * move it and call tick() instead of waiting.
 */
import type { Logger } from 'pino';
import type { Sql } from '../db/client.ts';
import { isRetryable } from '../db/map-error.ts';
import { Notifications } from '../db/notifications.ts';
import { DatabaseUnavailableError, DomainError } from '../domain/errors.ts';
import { CronRule } from '../domain/schedule.ts';
import type { Repositories } from '../repositories/index.ts';
import type { DueSchedule, ScheduleOutcome } from '../repositories/schedule-repository.ts';
import { type Clock, systemClock } from '../services/schedule-service.ts';
import { type FiringPlan, planFiring } from './plan.ts';

/**
 * Queues the runs of due occurrences inside the scheduler's transaction and returns
 * their ids by schedule id. A schedule without a run could not queue (its script
 * already has a queued or running run, its owner is at the limit, or it is gone):
 * that occurrence is skipped.
 */
export type RunQueuer = (
  tx: Repositories,
  schedules: readonly DueSchedule[],
  maxActive: number,
) => Promise<Map<number, number>>;

/** Runs with `trigger: 'schedule'` and their schedule_id, the whole batch in one statement. */
export const queueScheduledRuns: RunQueuer = (tx, schedules, maxActive) =>
  tx.runs.queueScheduled(
    schedules.map((s) => ({ schedule_id: s.id, script_id: s.script_id, user_id: s.user_id })),
    maxActive,
  );

export interface SchedulerOptions {
  repos: Repositories;
  /** The pool, for LISTEN; without it the scheduler only sleeps until the next due time. */
  sql?: Sql;
  log: Logger;
  catchupSeconds: number;
  maxConcurrentScripts: number;
  clock?: Clock;
  queueRun?: RunQueuer;
  /** Schedules per transaction. */
  batchSize?: number;
}

export interface TickResult {
  fired: number;
  skipped: number;
}

/** The longest a scheduler sleeps without looking (a missed notification costs at most this). */
export const MAX_SLEEP_MS = 30_000;
const MIN_SLEEP_MS = 200;
const ERROR_BACKOFF_MS = [1_000, 2_000, 5_000, 10_000, 30_000];
const RULE_CACHE_SIZE = 1_000;

export class Scheduler {
  private readonly clock: Clock;
  private readonly queueRun: RunQueuer;
  private readonly batchSize: number;
  private readonly log: Logger;
  private readonly rules = new Map<string, CronRule>();
  private running: Promise<void> | undefined;
  private stopping = false;
  private wakeAt = Number.POSITIVE_INFINITY;
  private wake: (() => void) | undefined;
  /** A notification arrived while awake: the next sleep is skipped. */
  private poked = false;
  private unlisten: (() => Promise<void>) | undefined;

  private readonly options: SchedulerOptions;

  constructor(options: SchedulerOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.queueRun = options.queueRun ?? queueScheduledRuns;
    this.batchSize = options.batchSize ?? 100;
    this.log = options.log.child({ component: 'scheduler' });
  }

  /** Starts the loop: a first tick at once (catching up what was missed), then as due. */
  async start(): Promise<void> {
    if (this.running) return;
    if (this.options.sql) {
      const listener = await new Notifications(this.options.sql).onScheduleChanged(
        (nextRunAtMs) => {
          if (nextRunAtMs < this.wakeAt) this.poke();
        },
        // (Re)connected: a notification may have been lost meanwhile.
        () => this.poke(),
      );
      this.unlisten = listener.unlisten;
    }
    this.running = this.loop();
    this.log.info({ catchup_seconds: this.options.catchupSeconds }, 'scheduler started');
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.poke();
    await this.running;
    await this.unlisten?.().catch(() => {});
    this.unlisten = undefined;
    this.running = undefined;
  }

  /**
   * Handles every schedule due now, batch after batch, until none is left that this
   * scheduler can lock. "Now" is read once: what falls due meanwhile is the next tick's.
   */
  async tick(): Promise<TickResult> {
    const total: TickResult = { fired: 0, skipped: 0 };
    const now = this.clock();
    // Schedules due at one instant mostly share a few rules (everyone's 9:30 New York):
    // their plans are computed once.
    const plans = new Map<string, FiringPlan>();
    for (;;) {
      const batch = await this.options.repos.transaction(async (tx) => {
        const due = await tx.schedules.claimDue(now, this.batchSize);
        const outcomes = await this.handle(tx, due, now, plans);
        await tx.schedules.recordOutcomes(outcomes);
        return { claimed: due.length, outcomes };
      });
      for (const outcome of batch.outcomes) {
        if (outcome.fired_at !== null) total.fired++;
        total.skipped += outcome.skipped;
      }
      if (batch.claimed > 0) this.log.debug({ claimed: batch.claimed, ...total }, 'schedules handled');
      if (batch.claimed < this.batchSize || this.stopping) return total;
    }
  }

  private async handle(
    tx: Repositories,
    due: readonly DueSchedule[],
    now: Date,
    plans: Map<string, FiringPlan>,
  ): Promise<ScheduleOutcome[]> {
    const planned = due.map((schedule) => {
      const key = `${schedule.timezone} ${schedule.cron} ${schedule.next_run_at.getTime()}`;
      let plan = plans.get(key);
      if (plan === undefined) {
        const rule = this.rule(schedule.cron, schedule.timezone);
        plan = planFiring(rule, schedule.next_run_at, now, this.options.catchupSeconds);
        plans.set(key, plan);
      }
      return { schedule, plan };
    });
    // Earliest occurrence first: when an owner has fewer free slots than due schedules,
    // the earliest due win.
    const toQueue = planned
      .filter(({ schedule, plan }) => plan.fire !== null && schedule.owner_active)
      .map(({ schedule }) => schedule);
    const runs = await this.queue(tx, toQueue);
    return planned.map(({ schedule, plan }) => {
      const runId = runs.get(schedule.id) ?? null;
      if (plan.next === null)
        this.log.warn({ schedule_id: schedule.id }, 'a schedule never fires again: disabled');
      // An occurrence due to fire that did not queue is skipped (busy, at the limit, or owner inactive).
      const skipped = plan.skipped + (plan.fire !== null && runId === null ? 1 : 0);
      return {
        id: schedule.id,
        next_run_at: plan.next,
        run_id: runId,
        fired_at: runId === null ? null : now,
        skipped,
        skipped_at: skipped > 0 ? now : null,
      };
    });
  }

  /**
   * The queue step runs in a savepoint. When the whole batch fails on a rule of the data
   * (a conflict, a script whose summary and runs disagree), it is rolled back alone and
   * retried one schedule at a time, each in its own savepoint: a schedule that still
   * fails is skipped and logged, so one bad schedule cannot hold back the others. The
   * database being unavailable, or a serialization failure, fails the batch (it is
   * retried whole).
   */
  private async queue(tx: Repositories, schedules: DueSchedule[]): Promise<Map<number, number>> {
    if (schedules.length === 0) return new Map();
    const max = this.options.maxConcurrentScripts;
    try {
      return await tx.transaction((sp) => this.queueRun(sp, schedules, max));
    } catch (err) {
      if (!isDataError(err)) throw err;
      this.log.warn(
        { err, schedules: schedules.length },
        'a batch of scheduled runs failed; queueing one by one',
      );
    }
    const queued = new Map<number, number>();
    for (const schedule of schedules) {
      try {
        const one = await tx.transaction((sp) => this.queueRun(sp, [schedule], max));
        for (const [id, run] of one) queued.set(id, run);
      } catch (err) {
        if (!isDataError(err)) throw err;
        this.log.warn({ err, schedule_id: schedule.id }, 'a scheduled run could not be queued: skipped');
      }
    }
    return queued;
  }

  /** Parsed rules, kept for the schedules seen most (parsing is the costly part). */
  private rule(cron: string, timezone: string): CronRule {
    const key = `${timezone} ${cron}`;
    let rule = this.rules.get(key);
    if (rule === undefined) {
      rule = CronRule.stored(cron, timezone);
      if (this.rules.size >= RULE_CACHE_SIZE) this.rules.clear();
      this.rules.set(key, rule);
    }
    return rule;
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      let delay: number;
      try {
        const result = await this.tick();
        if (result.fired + result.skipped > 0) this.log.info(result, 'schedules fired');
        const next = await this.options.repos.schedules.nextDueAt();
        delay = next === null ? MAX_SLEEP_MS : next.getTime() - this.clock().getTime();
        // Due but not claimed: another scheduler holds it (or is about to). Look again shortly.
        delay = Math.min(MAX_SLEEP_MS, Math.max(MIN_SLEEP_MS, delay));
        failures = 0;
      } catch (err) {
        delay = ERROR_BACKOFF_MS[Math.min(failures, ERROR_BACKOFF_MS.length - 1)] ?? MAX_SLEEP_MS;
        failures++;
        this.log.warn({ err, retry_in_ms: delay }, 'scheduler tick failed');
      }
      await this.sleep(delay);
    }
  }

  private poke(): void {
    if (this.wake) this.wake();
    else this.poked = true;
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopping || this.poked) {
      this.poked = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.wakeAt = this.clock().getTime() + ms;
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.wake = undefined;
        self.wakeAt = Number.POSITIVE_INFINITY;
        resolve();
      }
      this.wake = done;
    });
  }
}

/** An error about the data (a constraint, a state), which a retry of the same batch would meet again. */
function isDataError(err: unknown): boolean {
  return err instanceof DomainError && !(err instanceof DatabaseUnavailableError) && !isRetryable(err);
}
