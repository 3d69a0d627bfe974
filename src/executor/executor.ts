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
 *
 * Here: start, the runs under way, cancels and shutdown; the claims are
 * claim-loop.ts, the leases leases.ts, what it holds on the host
 * executor-resources.ts, one run run-lifecycle.ts.
 */
import { randomBytes } from 'node:crypto';
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
import { ClaimLoop } from './claim-loop.ts';
import { newExecutorId } from './executor-dir.ts';
import { ExecutorResources } from './executor-resources.ts';
import { LeaseKeeper } from './leases.ts';
import { Recorder } from './outcome.ts';
import { type ActiveRun, executeRun } from './run-lifecycle.ts';
import type { Sandbox } from './sandbox/index.ts';
import { checkSandboxUser, checkTools } from './tools.ts';

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

export class Executor {
  readonly id = newExecutorId();
  private readonly runs = new Map<number, ActiveRun>();
  private readonly finished = new Set<Promise<void>>();
  private readonly log: Logger;
  private readonly lease: Lease;
  private readonly leaseMs: number;
  private readonly recorder: Recorder;
  /** Decrypts IBKR tokens for runs with ibkr_access (the same key as the API's). */
  private readonly secrets: SecretBox;
  private readonly leases: LeaseKeeper;
  private readonly claims: ClaimLoop;
  private readonly host = new ExecutorResources();
  private stopping: Promise<void> | undefined;
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
    this.claims = new ClaimLoop({
      leases: options.repos.leases,
      lease: this.lease,
      runs: this.runs,
      free: () =>
        Math.min(
          config.EXECUTOR_CONCURRENCY - this.runs.size,
          this.host.pool?.available ?? Number.POSITIVE_INFINITY,
        ),
      launch: (claim, sentAt) => this.launch(claim, sentAt),
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
      await this.host.acquire({ config, executorId: this.id, asRoot, processUid, log: this.log });
      const notifications = new Notifications(sql);
      const queued = await notifications.onRunQueued(() => this.claims.fill());
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
    this.every(config.EXECUTOR_POLL_MS, () => this.claims.fill());
    this.claims.start();
    this.log.info(
      {
        concurrency: config.EXECUTOR_CONCURRENCY,
        uids: this.host.pool?.users.map((u) => u.uid),
        dir: this.host.dir,
      },
      'executor started',
    );
    await this.leases.failExpired();
    this.claims.fill();
  }

  /**
   * Stops claiming (a claim in flight is awaited: its runs count as running), lets
   * running scripts finish within the grace period while leases are renewed and
   * cancels heard, then kills the rest and records them as failed.
   */
  stop(graceMs = this.options.config.EXECUTOR_SHUTDOWN_GRACE_SECONDS * 1000): Promise<void> {
    this.stopping ??= (async () => {
      await this.claims.stop();
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
      await this.claims.settle();
      await this.teardown();
      this.log.info('executor stopped');
    })();
    return this.stopping;
  }

  private launch(claim: ClaimedRun, claimSentAt: number): void {
    const active: ActiveRun = { claim, leaseUntil: claimSentAt + this.leaseMs };
    this.runs.set(claim.id, active);
    // A cancel may have arrived before the claim's answer: ask the database before starting.
    if (this.claims.takeCancel(claim.id)) active.ready = this.leases.confirm(claim.id);
    const user = this.host.pool?.take();
    const { config, repos, storage, metrics } = this.options;
    const finished = executeRun(
      {
        config,
        repos,
        storage,
        metrics,
        log: this.log,
        executorId: this.id,
        dir: this.host.dir as string,
        recorder: this.recorder,
        sandbox: this.host.sandbox as Sandbox,
        sweeper: this.host.sweeper,
        secrets: this.secrets,
        user,
        giveBackUser: user && (() => this.host.pool?.give(user)),
        onLost: () => this.killRun(claim.id, 'lost'),
        onRecorded: (recorded) => {
          if (!recorded) this.claims.rememberUnrecorded(claim.id);
          this.forget(claim.id, active);
          this.claims.fill();
        },
      },
      active,
    )
      .catch((err) => this.log.error({ err, run_id: claim.id }, 'run failed unexpectedly'))
      .finally(() => {
        this.forget(claim.id, active);
        this.finished.delete(finished);
        this.claims.fill();
      });
    this.finished.add(finished);
  }

  /** Removes a run from the active ones, unless a new run of the same script has replaced it. */
  private forget(id: number, active: ActiveRun): void {
    if (this.runs.get(id) === active) this.runs.delete(id);
  }

  private onCancelled(id: number): void {
    if (this.runs.has(id)) {
      this.killRun(id, 'cancelled');
      return;
    }
    this.claims.heardCancel(id);
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
    await this.host.release(this.log);
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
