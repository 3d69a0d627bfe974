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
import type { Sql } from '../db/client.js';
import { isRetryable } from '../db/map-error.js';
import { DatabaseUnavailableError, DomainError } from '../domain/errors.js';
import { CronRule } from '../domain/schedule.js';
import type { Repositories } from '../repositories/index.js';
import type { DueSchedule, ScheduleOutcome } from '../repositories/schedule-repository.js';
import { type Clock, systemClock } from '../services/schedule-service.js';
import { planFiring } from './plan.js';

/**
 * Queues the run of a due occurrence inside the scheduler's transaction and returns
 * its id, or null when it cannot queue (the script already has a queued or running
 * run, its owner is at the limit, or it is gone): that occurrence is skipped.
 */
export type RunQueuer = (
  tx: Repositories,
  schedule: DueSchedule,
  maxActive: number,
) => Promise<number | null>;

/** A run with `trigger: 'schedule'` and its schedule_id, as RunRepository queues every run. */
export const queueScheduledRun: RunQueuer = async (tx, schedule, maxActive) => {
  const result = await tx.runs.tryQueue(schedule.script_id, {
    ownerId: schedule.user_id,
    maxActive,
    trigger: 'schedule',
    scheduleId: schedule.id,
  });
  return 'run' in result ? result.run.id : null;
};

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

  constructor(private readonly options: SchedulerOptions) {
    this.clock = options.clock ?? systemClock;
    this.queueRun = options.queueRun ?? queueScheduledRun;
    this.batchSize = options.batchSize ?? 100;
    this.log = options.log.child({ component: 'scheduler' });
  }

  /** Starts the loop: a first tick at once (catching up what was missed), then as due. */
  async start(): Promise<void> {
    if (this.running) return;
    if (this.options.sql) {
      const listener = await this.options.sql.listen(
        'schedule_changed',
        (payload) => {
          if (Number(payload) < this.wakeAt) this.poke();
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

  /** Handles every schedule due now, batch after batch, until none is left that this scheduler can lock. */
  async tick(): Promise<TickResult> {
    const total: TickResult = { fired: 0, skipped: 0 };
    for (;;) {
      const now = this.clock();
      const batch = await this.options.repos.transaction(async (tx) => {
        const due = await tx.schedules.claimDue(now, this.batchSize);
        // One lock order for every scheduler (queueing locks the owner, then the script),
        // so two batches that share users never deadlock.
        due.sort((a, b) => a.user_id - b.user_id || a.script_id - b.script_id || a.id - b.id);
        const outcomes: ScheduleOutcome[] = [];
        for (const schedule of due) outcomes.push(await this.handle(tx, schedule, now));
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

  private async handle(tx: Repositories, schedule: DueSchedule, now: Date): Promise<ScheduleOutcome> {
    const plan = planFiring(
      this.rule(schedule.cron, schedule.timezone),
      schedule.next_run_at,
      now,
      this.options.catchupSeconds,
    );
    let skipped = plan.skipped;
    let runId: number | null = null;
    let fired = false;
    if (plan.fire !== null) {
      if (!schedule.owner_active) skipped++;
      else {
        runId = await this.queueOrSkip(tx, schedule);
        if (runId === null) skipped++;
        else fired = true;
      }
    }
    if (plan.next === null)
      this.log.warn({ schedule_id: schedule.id }, 'a schedule never fires again: disabled');
    return {
      id: schedule.id,
      next_run_at: plan.next,
      run_id: runId,
      fired_at: fired ? now : null,
      skipped,
      skipped_at: skipped > 0 ? now : null,
    };
  }

  /**
   * The queue step runs in a savepoint (RunRepository), so when it fails on a rule of
   * the data (a conflict, a state the summary and the runs disagree on) only that step
   * is rolled back: the occurrence is skipped and logged, and the batch goes on, so one
   * bad schedule cannot hold back the others. The database being unavailable, or a
   * serialization failure, fails the batch (it is retried whole).
   */
  private async queueOrSkip(tx: Repositories, schedule: DueSchedule): Promise<number | null> {
    try {
      return await this.queueRun(tx, schedule, this.options.maxConcurrentScripts);
    } catch (err) {
      if (!(err instanceof DomainError) || err instanceof DatabaseUnavailableError || isRetryable(err))
        throw err;
      this.log.warn({ err, schedule_id: schedule.id }, 'a scheduled run could not be queued: skipped');
      return null;
    }
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
