/**
 * The executor's consumption of the queue: claims runs while it has free slots
 * (wake-ups from NOTIFY, the poll and finished runs coalesce into one loop), and
 * the recovery of a claim whose answer was lost — it may have committed and taken
 * runs nobody starts, so before the next claim those rows are failed. A cancel heard
 * while a claim was on its way back is remembered here, for the run it may concern.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.ts';
import type { ClaimedRun, Lease, RunLeaseRepository } from '../repositories/run-leases.ts';
import type { ActiveRun } from './run-lifecycle.ts';

/** How long a cancel heard while a claim was in flight is remembered. */
const CANCEL_MEMORY_MS = 60_000;
/** How many runs whose outcome could not be recorded are remembered (see `unrecorded`). */
const UNRECORDED_MEMORY = 10_000;

export interface ClaimLoopOptions {
  leases: RunLeaseRepository;
  lease: Lease;
  /** The executor's runs now (shared, not copied). */
  runs: Map<number, ActiveRun>;
  /** How many runs may start now (free slots, and free uids as root). */
  free: () => number;
  /** Starts a claimed run; `claimSentAt` is when the claim (and so its lease) was sent. */
  launch: (claim: ClaimedRun, claimSentAt: number) => void;
  log: Logger;
  metrics?: Metrics;
}

export class ClaimLoop {
  private readonly recentlyCancelled = new Map<number, number>();
  /**
   * Runs this executor started whose outcome it could not record: their rows may
   * still be `running` under its id, and must never be put back in the queue.
   */
  private readonly unrecorded = new Set<number>();
  /** A claim failed without an answer, and may have committed (see failUnstarted). */
  private claimInDoubt = false;
  private started = false;
  private stopped = false;
  private filling: Promise<void> | undefined;
  private refill = false;

  private readonly options: ClaimLoopOptions;

  constructor(options: ClaimLoopOptions) {
    this.options = options;
  }

  /** From now on `fill` claims. */
  start(): void {
    this.started = true;
  }

  /** No new claims; resolves once a claim in flight is back (its runs are launched). */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.filling;
  }

  /** Claims scripts while there are free slots. Re-entrant calls coalesce. */
  fill(): void {
    if (!this.started || this.stopped) return;
    if (this.filling) {
      this.refill = true;
      return;
    }
    // The loop may end without awaiting anything: clear `filling` only once it is set.
    const loop = this.claimWhileFree();
    this.filling = loop.finally(() => {
      this.filling = undefined;
      // A slot freed after the loop's last look, but before this: look again now.
      if (this.refill) this.fill();
    });
  }

  private async claimWhileFree(): Promise<void> {
    try {
      if (this.claimInDoubt) await this.failUnstarted();
      do {
        this.refill = false;
        const free = this.options.free();
        if (free <= 0 || this.stopped) break;
        const sentAt = performance.now();
        let claims: ClaimedRun[];
        try {
          claims = await this.options.leases.claim(this.options.lease, free);
        } catch (err) {
          // It may have committed with its answer lost: those rows are ours, and nobody runs them.
          this.claimInDoubt = true;
          throw err;
        }
        for (const claim of claims) this.options.launch(claim, sentAt);
        if (claims.length === free) this.refill = true; // maybe more waiting
      } while (this.refill && !this.stopped);
    } catch (err) {
      this.refill = false; // the next poll or notification retries, not a tight loop
      this.options.log.warn({ err }, 'could not claim scripts; will retry');
    }
  }

  /** At shutdown, once no run is left: settles the rows of a claim still in doubt, if any. */
  async settle(): Promise<void> {
    if (this.claimInDoubt)
      await this.failUnstarted().catch((err) =>
        this.options.log.warn(
          { err },
          'could not settle the runs of a claim in doubt; their leases will lapse',
        ),
      );
  }

  /**
   * Settles the rows a failed claim may have taken: every row running under this
   * executor's id but the runs it knows it started had no process, and is failed
   * now, saying that it did not run (running → queued is not a transition the
   * status machine has), instead of lapsing later as "outcome unknown".
   */
  private async failUnstarted(): Promise<void> {
    const keep = [...this.options.runs.keys(), ...this.unrecorded];
    const failed = await this.options.leases.failUnstarted(this.options.lease.executorId, keep);
    this.claimInDoubt = false;
    if (failed.length > 0) {
      this.options.metrics?.scriptRuns.inc({ outcome: 'failed' }, failed.length);
      this.options.log.warn(
        { failed },
        'a claim whose answer was lost had taken these scripts; failed them, they did not run',
      );
    }
  }

  /** A run this executor started whose outcome could not be recorded: never failed as unstarted. */
  rememberUnrecorded(id: number): void {
    this.unrecorded.delete(id);
    this.unrecorded.add(id);
    for (const old of this.unrecorded) {
      if (this.unrecorded.size <= UNRECORDED_MEMORY) break;
      this.unrecorded.delete(old);
    }
  }

  /** A cancel of a run this executor is not running: it may be in the answer of the claim in flight. */
  heardCancel(id: number): void {
    if (this.filling === undefined) return; // someone else's run
    const now = performance.now();
    for (const [old, heard] of this.recentlyCancelled)
      if (now - heard > CANCEL_MEMORY_MS) this.recentlyCancelled.delete(old);
    this.recentlyCancelled.set(id, now);
  }

  /** Whether a cancel of `id` was heard while it was being claimed (forgotten once asked). */
  takeCancel(id: number): boolean {
    return this.recentlyCancelled.delete(id);
  }
}
