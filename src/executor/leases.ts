/**
 * The leases of an executor's runs: renewed every third of the lease; a run whose
 * renewal is refused is killed (`lost`), and one whose lease could not be renewed
 * in time is killed by its own executor (`fenced`) before it lapses. Runs whose
 * lease lapsed anywhere are failed here too (any executor may do it).
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.ts';
import type { Lease, RunLeaseRepository } from '../repositories/run-leases.ts';
import type { KillReason } from './child-process.ts';
import type { ActiveRun } from './run-lifecycle.ts';

export interface LeaseKeeperOptions {
  leases: RunLeaseRepository;
  lease: Lease;
  /** The executor's runs now (shared, not copied). */
  runs: Map<number, ActiveRun>;
  kill: (id: number, reason: KillReason) => void;
  log: Logger;
  metrics?: Metrics;
}

export class LeaseKeeper {
  private readonly leaseMs: number;
  private renewing = false;

  private readonly options: LeaseKeeperOptions;

  constructor(options: LeaseKeeperOptions) {
    this.options = options;
    this.leaseMs = options.lease.seconds * 1000;
  }

  /** One renewal for one run: a refusal means it was cancelled (or deleted) under us. */
  async confirm(id: number): Promise<void> {
    try {
      const held = await this.options.leases.renewLeases([id], this.options.lease);
      if (!held.includes(id)) this.options.kill(id, 'cancelled');
    } catch (err) {
      this.options.log.warn({ err, run_id: id }, 'could not check a run cancelled while it was claimed');
    }
  }

  async renew(): Promise<void> {
    const ids = [...this.options.runs.keys()];
    if (ids.length === 0 || this.renewing) return;
    this.renewing = true;
    const sentAt = performance.now();
    try {
      const held = new Set(await this.options.leases.renewLeases(ids, this.options.lease));
      for (const id of ids) {
        const active = this.options.runs.get(id);
        if (active === undefined) continue;
        if (held.has(id)) active.leaseUntil = Math.max(active.leaseUntil, sentAt + this.leaseMs);
        else this.options.kill(id, 'lost');
      }
    } catch (err) {
      this.options.log.warn({ err }, 'could not renew leases');
    } finally {
      this.renewing = false;
    }
  }

  /**
   * Kills the runs whose lease this executor has not confirmed for nearly a lease
   * period: once it lapses, another executor fails the run, and a script nobody
   * watches must not go on (it would have no wall-clock limit that anybody records).
   */
  fence(): void {
    const margin = Math.min(this.leaseMs / 5, 5000);
    const now = performance.now();
    for (const [id, active] of this.options.runs) {
      if (active.pendingKill === undefined && now > active.leaseUntil - margin) {
        this.options.log.error({ run_id: id }, 'could not renew the lease of a run in time; killing it');
        this.options.kill(id, 'fenced');
      }
    }
  }

  async failExpired(): Promise<void> {
    try {
      const failed = await this.options.leases.failExpiredLeases();
      if (failed.length > 0) {
        this.options.metrics?.scriptRuns.inc({ outcome: 'lease_lost' }, failed.length);
        this.options.log.warn({ run_ids: failed }, 'failed runs whose executor stopped renewing its lease');
      }
    } catch (err) {
      this.options.log.warn({ err }, 'could not check for lapsed leases');
    }
  }
}
