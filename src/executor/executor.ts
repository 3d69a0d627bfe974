/**
 * The script executor: claims queued runs from PostgreSQL (script_runs, fairly
 * between users), runs each in a sandboxed child (run-lifecycle.ts, child-process.ts), streams its
 * output to the database in numbered batches, and records the outcome. Any number of executors may run against one
 * database, and several on one host.
 *
 * - Wake-up: LISTEN run_queued, with a polling fallback (EXECUTOR_POLL_MS).
 * - Claims carry a lease that is renewed every third of EXECUTOR_LEASE_SECONDS;
 *   a run whose renewal is refused (cancelled, deleted, recovered), or one whose
 *   output is refused, is killed at once.
 * - Self-fencing: a run whose lease this executor could not renew in time (the
 *   database is unreachable, renewals throw or hang) is killed by the executor
 *   itself before the lease lapses, since another executor may fail it then.
 * - Runs whose lease lapsed anywhere (their executor died) are failed by whichever
 *   executor notices. They are not re-queued: a trading script that may have
 *   placed orders must not run twice without a person deciding so.
 * - Cancel is immediate: LISTEN run_cancelled kills the run's process group.
 *   A cancel heard while a claim is in flight is remembered, and the claimed run
 *   checked against the database before it starts.
 * - Nothing outlives the executor: see child-process.ts (parent-death signals),
 *   executor-dir.ts (reaping dead executors' folders) and uid-pool.ts (a uid per run).
 * - stop(): no new claims (a claim in flight is awaited and its runs included);
 *   running scripts get the grace period, during which leases are renewed and
 *   cancels heard; then the rest are killed and recorded as failed.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Sql } from '../db/client.ts';
import { Notifications } from '../db/notifications.ts';
import type { Metrics } from '../metrics.ts';
import type { Repositories } from '../repositories/index.ts';
import type { ClaimedRun, Lease } from '../repositories/run-leases.ts';
import { SecretBox } from '../services/secret-box.ts';
import { configuredKeys } from '../services/secret-keys.ts';
import type { Storage } from '../storage/storage.ts';
import type { KillReason } from './child-process.ts';
import { createExecutorDir, newExecutorId, reapDeadExecutors } from './executor-dir.ts';
import { LeaseKeeper } from './leases.ts';
import { Recorder } from './outcome.ts';
import { type ActiveRun, executeRun, measureNodeReserve } from './run-lifecycle.ts';
import { Sandbox } from './sandbox/index.ts';
import { Sweeper } from './sweeper.ts';
import { checkSandboxUser, checkTools } from './tools.ts';
import { UidPool } from './uid-pool.ts';

export interface ExecutorOptions {
  config: Config;
  repos: Repositories;
  /** The pool, for LISTEN (postgres.js gives listeners a connection of their own). */
  sql: Sql;
  storage: Storage;
  log: Logger;
  metrics?: Metrics;
  /** The uid this process runs as (default: the real one); tests pretend with it. */
  processUid?: number;
  /** The IBKR token keyring (loadSecretBox); the keys configured in `config` when absent. */
  secrets?: SecretBox;
}

/** How long a cancel heard while a claim was in flight is remembered. */
const CANCEL_MEMORY_MS = 60_000;
/** How many runs whose outcome could not be recorded are remembered (see `unrecorded`). */
const UNRECORDED_MEMORY = 10_000;

export class Executor {
  readonly id = newExecutorId();
  private readonly runs = new Map<number, ActiveRun>();
  private readonly finished = new Set<Promise<void>>();
  private readonly recentlyCancelled = new Map<number, number>();
  /**
   * Runs this executor started whose outcome it could not record: their rows may
   * still be `running` under its id, and must never be put back in the queue.
   */
  private readonly unrecorded = new Set<number>();
  /** A claim failed without an answer, and may have committed (see failUnstarted). */
  private claimInDoubt = false;
  private readonly log: Logger;
  private readonly lease: Lease;
  private readonly leaseMs: number;
  private readonly recorder: Recorder;
  private readonly sweeper = new Sweeper();
  /** Decrypts IBKR tokens for runs with ibkr_access (the same key as the API's). */
  private readonly secrets: SecretBox;
  private readonly leases: LeaseKeeper;
  private dir: string | undefined;
  private pool: UidPool | undefined;
  private sandbox: Sandbox | undefined;
  private started = false;
  private stopping: Promise<void> | undefined;
  private filling: Promise<void> | undefined;
  private refill = false;
  private timers: NodeJS.Timeout[] = [];
  private unlisten: Array<() => Promise<void>> = [];

  private readonly options: ExecutorOptions;

  constructor(options: ExecutorOptions) {
    this.options = options;
    const { config } = options;
    this.log = options.log.child({ executor: this.id });
    this.secrets = options.secrets ?? secretBoxOf(config);
    this.lease = { executorId: this.id, seconds: config.EXECUTOR_LEASE_SECONDS };
    this.leaseMs = config.EXECUTOR_LEASE_SECONDS * 1000;
    this.recorder = new Recorder(options.repos.outcomes, this.id, config.EXECUTOR_LEASE_SECONDS, this.log);
    this.leases = new LeaseKeeper({
      leases: options.repos.leases,
      lease: this.lease,
      runs: this.runs,
      kill: (id, reason) => this.killRun(id, reason),
      log: this.log,
      metrics: options.metrics,
    });
  }

  /** Scripts this executor is running now. */
  get active(): number[] {
    return [...this.runs.keys()];
  }

  async start(): Promise<void> {
    const { sql, config } = this.options;
    await checkTools();
    const processUid = this.options.processUid ?? process.getuid?.() ?? -1;
    const asRoot = checkSandboxUser(processUid, config, this.log);
    try {
      this.dir = await createExecutorDir(config.EXECUTOR_WORK_DIR, this.id);
      const reaped = await reapDeadExecutors(config.EXECUTOR_WORK_DIR, this.id);
      if (reaped.length > 0) this.log.warn({ reaped }, 'reaped the folders and processes of dead executors');
      if (asRoot) {
        this.pool = await UidPool.acquire({
          baseUid: config.SCRIPT_UID,
          baseGid: config.SCRIPT_GID,
          // Twice the slots: a finished run's uid is swept while the next run starts.
          count: 2 * config.EXECUTOR_CONCURRENCY,
          executorId: this.id,
        });
        // A uid taken over from a dead executor may still have processes or files.
        await Promise.all(this.pool.users.map((user) => this.sweeper.sweep(user)));
      }
      // What a Node run's address-space limit must allow for (run-lifecycle.ts), measured off the event loop.
      const reserve = await measureNodeReserve(config.NODE_BIN);
      this.log.debug({ node_bin: config.NODE_BIN, reserved_mb: reserve }, 'address space Node reserves');
      this.sandbox = await Sandbox.open({
        config,
        log: this.log,
        processUid,
        users: this.pool?.users ?? [],
      });
      const notifications = new Notifications(sql);
      const queued = await notifications.onRunQueued(() => this.fill());
      this.unlisten.push(queued.unlisten);
      const cancelled = await notifications.onRunCancelled((id) => this.onCancelled(id));
      this.unlisten.push(cancelled.unlisten);
    } catch (error) {
      await this.teardown();
      throw error;
    }
    if (this.stopping) return this.teardown(); // stopped while starting
    this.every(Math.max(250, this.leaseMs / 3), () => this.leases.renew());
    this.every(Math.min(1000, this.leaseMs / 8), () => this.leases.fence());
    this.every(this.leaseMs, () => this.leases.failExpired());
    this.every(config.EXECUTOR_POLL_MS, () => this.fill());
    this.started = true;
    this.log.info(
      { concurrency: config.EXECUTOR_CONCURRENCY, uids: this.pool?.users.map((u) => u.uid), dir: this.dir },
      'executor started',
    );
    await this.leases.failExpired();
    this.fill();
  }

  /**
   * Stops claiming (a claim in flight is awaited: its runs count as running), lets
   * running scripts finish within the grace period while leases are renewed and
   * cancels heard, then kills the rest and records them as failed.
   */
  stop(graceMs = this.options.config.EXECUTOR_SHUTDOWN_GRACE_SECONDS * 1000): Promise<void> {
    this.stopping ??= (async () => {
      await this.filling;
      if (this.runs.size > 0) {
        this.log.info({ running: this.active, graceMs }, 'waiting for running scripts');
        let timer: NodeJS.Timeout | undefined;
        const grace = new Promise((resolve) => {
          timer = setTimeout(resolve, graceMs);
        });
        await Promise.race([Promise.all(this.finished), grace]);
        clearTimeout(timer);
        for (const id of this.runs.keys()) this.killRun(id, 'shutdown');
        await Promise.all(this.finished);
      }
      if (this.claimInDoubt)
        await this.failUnstarted().catch((err) =>
          this.log.warn({ err }, 'could not settle the runs of a claim in doubt; their leases will lapse'),
        );
      await this.teardown();
      this.log.info('executor stopped');
    })();
    return this.stopping;
  }

  /** Claims scripts while there are free slots. Re-entrant calls coalesce. */
  private fill(): void {
    if (!this.started || this.stopping) return;
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
        const free = Math.min(
          this.options.config.EXECUTOR_CONCURRENCY - this.runs.size,
          this.pool?.available ?? Number.POSITIVE_INFINITY,
        );
        if (free <= 0 || this.stopping) break;
        const sentAt = performance.now();
        let claims: ClaimedRun[];
        try {
          claims = await this.options.repos.leases.claim(this.lease, free);
        } catch (err) {
          // It may have committed with its answer lost: those rows are ours, and nobody runs them.
          this.claimInDoubt = true;
          throw err;
        }
        for (const claim of claims) this.launch(claim, sentAt);
        if (claims.length === free) this.refill = true; // maybe more waiting
      } while (this.refill && !this.stopping);
    } catch (err) {
      this.refill = false; // the next poll or notification retries, not a tight loop
      this.log.warn({ err }, 'could not claim scripts; will retry');
    }
  }

  /**
   * Settles the rows a failed claim may have taken: every row running under this
   * executor's id but the runs it knows it started had no process, and is failed
   * now, saying that it did not run (running → queued is not a transition the
   * status machine has), instead of lapsing later as "outcome unknown".
   */
  private async failUnstarted(): Promise<void> {
    const keep = [...this.runs.keys(), ...this.unrecorded];
    const failed = await this.options.repos.leases.failUnstarted(this.id, keep);
    this.claimInDoubt = false;
    if (failed.length > 0) {
      this.options.metrics?.scriptRuns.inc({ outcome: 'failed' }, failed.length);
      this.log.warn(
        { failed },
        'a claim whose answer was lost had taken these scripts; failed them, they did not run',
      );
    }
  }

  private launch(claim: ClaimedRun, claimSentAt: number): void {
    const active: ActiveRun = { claim, leaseUntil: claimSentAt + this.leaseMs };
    this.runs.set(claim.id, active);
    // A cancel may have arrived before the claim's answer: ask the database before starting.
    if (this.recentlyCancelled.delete(claim.id)) active.ready = this.leases.confirm(claim.id);
    const user = this.pool?.take();
    const { config, repos, storage, metrics } = this.options;
    const finished = executeRun(
      {
        config,
        repos,
        storage,
        metrics,
        log: this.log,
        executorId: this.id,
        dir: this.dir as string,
        recorder: this.recorder,
        sandbox: this.sandbox as Sandbox,
        sweeper: this.sweeper,
        secrets: this.secrets,
        user,
        giveBackUser: user && (() => this.pool?.give(user)),
        onLost: () => this.killRun(claim.id, 'lost'),
        onRecorded: (recorded) => {
          if (!recorded) this.rememberUnrecorded(claim.id);
          this.forget(claim.id, active);
          this.fill();
        },
      },
      active,
    )
      .catch((err) => this.log.error({ err, run_id: claim.id }, 'run failed unexpectedly'))
      .finally(() => {
        this.forget(claim.id, active);
        this.finished.delete(finished);
        this.fill();
      });
    this.finished.add(finished);
  }

  /** Removes a run from the active ones, unless a new run of the same script has replaced it. */
  private forget(id: number, active: ActiveRun): void {
    if (this.runs.get(id) === active) this.runs.delete(id);
  }

  private rememberUnrecorded(id: number): void {
    this.unrecorded.delete(id);
    this.unrecorded.add(id);
    for (const old of this.unrecorded) {
      if (this.unrecorded.size <= UNRECORDED_MEMORY) break;
      this.unrecorded.delete(old);
    }
  }

  private onCancelled(id: number): void {
    if (this.runs.has(id)) {
      this.killRun(id, 'cancelled');
      return;
    }
    if (this.filling === undefined) return; // someone else's run
    const now = performance.now();
    for (const [old, heard] of this.recentlyCancelled)
      if (now - heard > CANCEL_MEMORY_MS) this.recentlyCancelled.delete(old);
    this.recentlyCancelled.set(id, now);
  }

  private killRun(id: number, reason: KillReason): void {
    const active = this.runs.get(id);
    if (active === undefined || active.pendingKill !== undefined) return;
    this.log.info({ run_id: id, reason }, 'killing a run');
    active.pendingKill = reason;
    active.handle?.kill(reason);
  }

  /** Timers, listeners, uids and the executor's folder: released once no run is left. */
  private async teardown(): Promise<void> {
    for (const timer of this.timers.splice(0)) clearInterval(timer);
    await Promise.all(this.unlisten.splice(0).map((unlisten) => unlisten().catch(() => {})));
    this.sweeper.close();
    await this.sandbox
      ?.close()
      .catch((err) => this.log.warn({ err }, 'could not remove the sandbox’s cgroups or rules'));
    await this.pool?.release().catch((err) => this.log.warn({ err }, 'could not release the script uids'));
    if (this.dir) await rm(this.dir, { recursive: true, force: true }).catch(() => {});
  }

  private every(ms: number, fn: () => unknown): void {
    const timer = setInterval(() => void fn(), ms);
    timer.unref();
    this.timers.push(timer);
  }
}

/** The keys configured in `config`; a run needing a token fails to decrypt it when none is. */
function secretBoxOf(config: Config): SecretBox {
  const keys = configuredKeys(config);
  // A key of this process only: nothing it encrypts is stored, and nothing it was not given decrypts.
  return new SecretBox(keys.length > 0 ? keys : randomBytes(32).toString('base64'));
}
