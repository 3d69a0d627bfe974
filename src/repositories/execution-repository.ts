/**
 * What executors do with runs, in one repository: claims, leases, output, and the
 * records of how runs ended (run-leases.ts, run-output.ts). Ids here are run ids.
 * Queueing and cancelling are RunRepository's (the API's side of the queue).
 */
import type { Database } from '../db/database.js';
import type { Run } from '../domain/run.js';
import { pgText } from '../domain/text.js';
import { type ClaimedRun, type Lease, RunLeaseRepository, type RunResult } from './run-leases.js';
import { type PendingChunk, RunOutputRepository } from './run-output.js';

export type { ClaimedRun, Lease, RunResult } from './run-leases.js';
export type { LogState, PendingChunk } from './run-output.js';

export class ExecutionRepository {
  private readonly leases: RunLeaseRepository;
  private readonly output: RunOutputRepository;

  constructor(private readonly db: Database) {
    this.leases = new RunLeaseRepository(db);
    this.output = new RunOutputRepository(db);
  }

  /** Claims up to `limit` queued runs for an executor, fairly between users (SKIP LOCKED). */
  claim(lease: Lease, limit = 1): Promise<ClaimedRun[]> {
    return this.leases.claim(lease, limit);
  }

  /** queued → running for one given run (an executor that picks its own work; tests). */
  start(id: number, lease: Lease): Promise<Run> {
    return this.leases.start(id, lease);
  }

  /** After a claim in doubt: the executor's running runs other than `keep` are failed (never started). */
  failUnstarted(executorId: string, keep: readonly number[]): Promise<number[]> {
    return this.leases.failUnstarted(executorId, keep);
  }

  /** Extends the leases this executor holds; returns the ids it still holds (the others were lost). */
  renewLeases(ids: number[], lease: Lease): Promise<number[]> {
    return this.leases.renewLeases(ids, lease);
  }

  /** What the killed process of a run cancelled under its executor measured, and its last output. */
  recordCancelledRun(
    id: number,
    executorId: string,
    result: RunResult,
    unwritten: readonly PendingChunk[] = [],
  ): Promise<boolean> {
    return this.leases.recordCancelledRun(id, executorId, result, unwritten);
  }

  /** Fails every run whose lease lapsed; returns their ids. */
  failExpiredLeases(): Promise<number[]> {
    return this.leases.failExpiredLeases();
  }

  /** Appends batch `seq` of output to a run this executor still holds (see run-output.ts). */
  appendLog(id: number, executorId: string, seq: number, data: string): Promise<boolean> {
    return this.output.appendLog(id, executorId, seq, data);
  }

  /** running → completed, with the run's metrics and its output not stored yet. */
  complete(
    id: number,
    result: RunResult,
    executorId?: string,
    unwritten: readonly PendingChunk[] = [],
  ): Promise<Run> {
    return this.leases.finish(id, 'completed', result, { executorId, unwritten });
  }

  /**
   * running → failed, with why and whatever was measured. The message cannot be
   * refused: NUL, which PostgreSQL text cannot hold, becomes U+FFFD.
   */
  fail(
    id: number,
    message: string,
    result: RunResult,
    executorId?: string,
    unwritten: readonly PendingChunk[] = [],
  ): Promise<Run> {
    return this.leases.finish(id, 'failed', result, { executorId, message: pgText(message), unwritten });
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
}
