/**
 * The script executor: claims queued scripts from PostgreSQL, runs each in a
 * sandboxed child (runner.ts), streams its output to the database in batches,
 * and records the outcome. Any number of executors may run against one database.
 *
 * - Wake-up: LISTEN script_queued, with a polling fallback (EXECUTOR_POLL_MS).
 * - Claims carry a lease that is renewed every third of EXECUTOR_LEASE_SECONDS;
 *   a run whose renewal is refused (cancelled, deleted, recovered) is killed.
 * - Runs whose lease lapsed anywhere (their executor died) are failed by whichever
 *   executor notices. They are not re-queued: a trading script that may have
 *   placed orders must not run twice without a person deciding so.
 * - Cancel is immediate: LISTEN script_cancelled kills the run's process group.
 * - stop(): no new claims; running scripts get the grace period, then are killed
 *   and recorded as failed; nothing stays `running` without a live lease.
 */
import { randomBytes } from 'node:crypto';
import { access } from 'node:fs/promises';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Sql } from '../db/client.js';
import { DatabaseUnavailableError, InvalidStateError } from '../domain/errors.js';
import type { ScriptExtension } from '../domain/script.js';
import type { Metrics } from '../metrics.js';
import type { ClaimedRun, Lease, RunResult } from '../repositories/execution-repository.js';
import type { Repositories } from '../repositories/index.js';
import type { Storage } from '../storage/file-storage.js';
import { LogSink } from './log-sink.js';
import {
  type KillReason,
  PRLIMIT_BIN,
  type RunHandle,
  type RunOutcome,
  SETPRIV_BIN,
  startRun,
  TIME_BIN,
} from './runner.js';
import { prepareWorkspace, ScriptCompileError } from './workspace.js';

export interface ExecutorOptions {
  config: Config;
  repos: Repositories;
  /** The pool, for LISTEN (postgres.js gives listeners a connection of their own). */
  sql: Sql;
  storage: Storage;
  log: Logger;
  metrics?: Metrics;
}

interface ActiveRun {
  claim: ClaimedRun;
  handle?: RunHandle;
  /** Set before the process exists (cancelled while preparing). */
  pendingKill?: KillReason;
}

export class Executor {
  readonly id = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  private readonly runs = new Map<number, ActiveRun>();
  private readonly finished = new Set<Promise<void>>();
  private readonly log: Logger;
  private readonly lease: Lease;
  private stopping = false;
  private filling = false;
  private refill = false;
  private timers: NodeJS.Timeout[] = [];
  private unlisten: Array<() => Promise<void>> = [];

  constructor(private readonly options: ExecutorOptions) {
    this.log = options.log.child({ executor: this.id });
    this.lease = { executorId: this.id, seconds: options.config.EXECUTOR_LEASE_SECONDS };
  }

  /** Scripts this executor is running now. */
  get active(): number[] {
    return [...this.runs.keys()];
  }

  async start(): Promise<void> {
    await checkTools();
    const { sql, config } = this.options;
    const queued = await sql.listen('script_queued', () => this.fill());
    const cancelled = await sql.listen('script_cancelled', (payload) =>
      this.killRun(Number(payload), 'cancelled'),
    );
    this.unlisten.push(queued.unlisten, cancelled.unlisten);
    const leaseMs = config.EXECUTOR_LEASE_SECONDS * 1000;
    this.every(Math.max(500, leaseMs / 3), () => this.renewLeases());
    this.every(leaseMs, () => this.failExpiredLeases());
    this.every(config.EXECUTOR_POLL_MS, () => this.fill());
    this.log.info({ concurrency: config.EXECUTOR_CONCURRENCY, user: this.sandboxUser() }, 'executor started');
    await this.failExpiredLeases();
    this.fill();
  }

  /**
   * Stops claiming, lets running scripts finish within the grace period, then
   * kills the rest and records them as failed.
   */
  async stop(graceMs = this.options.config.EXECUTOR_SHUTDOWN_GRACE_SECONDS * 1000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const timer of this.timers.splice(0)) clearInterval(timer);
    await Promise.all(this.unlisten.splice(0).map((unlisten) => unlisten().catch(() => {})));
    if (this.runs.size > 0) {
      this.log.info({ running: this.active, graceMs }, 'waiting for running scripts');
      const allDone = Promise.all(this.finished);
      const grace = new Promise((resolve) => setTimeout(resolve, graceMs).unref());
      await Promise.race([allDone, grace]);
      for (const id of this.runs.keys()) this.killRun(id, 'shutdown');
      // Leases keep being renewed by nobody now; record outcomes before leaving.
      await Promise.all(this.finished);
    }
    this.log.info('executor stopped');
  }

  /** Claims scripts while there are free slots. Re-entrant calls coalesce. */
  private fill(): void {
    if (this.stopping) return;
    if (this.filling) {
      this.refill = true;
      return;
    }
    this.filling = true;
    void (async () => {
      try {
        do {
          this.refill = false;
          const free = this.options.config.EXECUTOR_CONCURRENCY - this.runs.size;
          if (free <= 0 || this.stopping) break;
          const claims = await this.options.repos.executions.claim(this.lease, free);
          for (const claim of claims) this.launch(claim);
          if (claims.length === free) this.refill = true; // maybe more waiting
        } while (this.refill && !this.stopping);
      } catch (err) {
        this.log.warn({ err }, 'could not claim scripts; will retry');
      } finally {
        this.filling = false;
      }
    })();
  }

  private launch(claim: ClaimedRun): void {
    const active: ActiveRun = { claim };
    this.runs.set(claim.id, active);
    const finished = this.execute(active)
      .catch((err) => this.log.error({ err, script_id: claim.id }, 'run failed unexpectedly'))
      .finally(() => {
        this.runs.delete(claim.id);
        this.finished.delete(finished);
        this.fill();
      });
    this.finished.add(finished);
  }

  private async execute(active: ActiveRun): Promise<void> {
    const { claim } = active;
    const { config, repos, storage } = this.options;
    const log = this.log.child({ script_id: claim.id });
    const user = this.sandboxUser();
    let workspace: Awaited<ReturnType<typeof prepareWorkspace>>;
    try {
      workspace = await prepareWorkspace({
        root: config.EXECUTOR_WORK_DIR,
        scriptId: claim.id,
        sourcePath: storage.pathOf(claim.file_path),
        extension: claim.file_extension,
        user,
      });
    } catch (err) {
      const message =
        err instanceof ScriptCompileError ? err.message : 'the script could not be prepared for running';
      if (!(err instanceof ScriptCompileError)) log.error({ err }, 'could not prepare the workspace');
      await this.record(
        claim.id,
        'fail',
        { exit_code: null, execution_time_seconds: 0, memory_usage_mb: null },
        message,
      );
      return;
    }
    const sink = new LogSink({
      maxBytes: config.MAX_LOG_BYTES,
      write: (text) => repos.executions.appendLog(claim.id, this.id, text),
      onError: (err) => log.warn({ err }, 'could not store output; will retry'),
    });
    let stderrTail = '';
    try {
      log.info('run starting');
      const handle = startRun({
        command: commandFor(claim.file_extension, workspace.entry, config),
        cwd: workspace.dir,
        env: {
          PATH: '/usr/local/bin:/usr/bin:/bin',
          HOME: workspace.dir,
          TMPDIR: workspace.dir,
          LANG: 'C.UTF-8',
          LC_ALL: 'C.UTF-8',
          PYTHONUNBUFFERED: '1',
          PYTHONDONTWRITEBYTECODE: '1',
          DOLLARCLUB_SCRIPT_ID: String(claim.id),
        },
        statsFile: workspace.statsFile,
        user,
        limits: {
          timeoutMs: config.MAX_EXECUTION_SECONDS * 1000,
          memoryBytes: addressSpaceLimitMb(claim.file_extension, config) * 1024 * 1024,
          cpuSeconds: config.SCRIPT_CPU_SECONDS,
          maxProcesses: config.SCRIPT_MAX_PROCESSES,
          maxOpenFiles: 256,
          maxFileBytes: 64 * 1024 * 1024,
        },
        onOutput: (text, stream) => {
          sink.push(text);
          if (stream === 'stderr') stderrTail = (stderrTail + text).slice(-2000);
        },
      });
      active.handle = handle;
      if (active.pendingKill) handle.kill(active.pendingKill);
      const outcome = await handle.done;
      await sink.flush();
      if (sink.lost && outcome.killed === null) outcome.killed = 'lost';
      await this.finish(claim.id, outcome, stderrTail, sink.drain(), log);
    } finally {
      await workspace.remove().catch((err) => log.warn({ err }, 'could not remove the scratch folder'));
    }
  }

  private async finish(
    id: number,
    outcome: RunOutcome,
    stderrTail: string,
    unwritten: string,
    log: Logger,
  ): Promise<void> {
    const { config } = this.options;
    const result: RunResult = {
      exit_code: outcome.exitCode,
      execution_time_seconds: outcome.wallSeconds,
      memory_usage_mb: outcome.peakMemoryMb,
    };
    let label: string;
    if (outcome.killed === 'cancelled' || outcome.killed === 'lost') {
      label = outcome.killed;
      await this.record(id, 'cancelled', result, '', unwritten);
    } else if (outcome.killed === 'timeout') {
      label = 'timeout';
      await this.record(
        id,
        'fail',
        result,
        `timed out after ${config.MAX_EXECUTION_SECONDS} s; the script and its processes were killed`,
      );
    } else if (outcome.killed === 'shutdown') {
      label = 'shutdown';
      await this.record(
        id,
        'fail',
        result,
        'the executor shut down before the script finished; it was killed',
      );
    } else if (outcome.exitCode === 0 && outcome.signal === null) {
      label = 'completed';
      await this.record(id, 'complete', result);
    } else {
      label = 'failed';
      await this.record(id, 'fail', result, failureMessage(outcome, stderrTail, config));
    }
    this.options.metrics?.scriptRuns.inc({ outcome: label });
    this.options.metrics?.scriptRunDuration.observe({ outcome: label }, outcome.wallSeconds);
    log.info(
      {
        outcome: label,
        exit_code: outcome.exitCode,
        signal: outcome.signal,
        seconds: outcome.wallSeconds,
        memory_mb: outcome.peakMemoryMb,
      },
      'run finished',
    );
  }

  /**
   * Writes a run's outcome, retrying while the database is unavailable (within the
   * lease: after that another executor fails the run, and our late write is a no-op).
   */
  private async record(
    id: number,
    kind: 'complete' | 'fail' | 'cancelled',
    result: RunResult,
    message = '',
    unwritten = '',
  ): Promise<void> {
    const executions = this.options.repos.executions;
    const deadline = Date.now() + this.lease.seconds * 1000;
    for (let attempt = 0; ; attempt++) {
      try {
        if (kind === 'complete') await executions.complete(id, result, this.id);
        else if (kind === 'fail') await executions.fail(id, message, result, this.id);
        else await executions.recordCancelledRun(id, this.id, result, unwritten);
        return;
      } catch (err) {
        if (err instanceof InvalidStateError) {
          // Cancelled (or recovered) between the end of the process and this write:
          // the measurements still belong to a cancelled run of ours, if it is one.
          await executions.recordCancelledRun(id, this.id, result, unwritten).catch(() => false);
          return;
        }
        if (!(err instanceof DatabaseUnavailableError) || Date.now() > deadline) {
          this.log.error({ err, script_id: id }, 'could not record the outcome of a run');
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** attempt, 5000)));
      }
    }
  }

  private killRun(id: number, reason: KillReason): void {
    const active = this.runs.get(id);
    if (active === undefined) return;
    this.log.info({ script_id: id, reason }, 'killing a run');
    if (active.handle) active.handle.kill(reason);
    else active.pendingKill ??= reason;
  }

  private async renewLeases(): Promise<void> {
    const ids = this.active;
    if (ids.length === 0) return;
    try {
      const held = new Set(await this.options.repos.executions.renewLeases(ids, this.lease));
      for (const id of ids) if (!held.has(id) && this.runs.has(id)) this.killRun(id, 'lost');
    } catch (err) {
      this.log.warn({ err }, 'could not renew leases');
    }
  }

  private async failExpiredLeases(): Promise<void> {
    try {
      const failed = await this.options.repos.executions.failExpiredLeases();
      if (failed.length > 0)
        this.log.warn({ script_ids: failed }, 'failed runs whose executor stopped renewing its lease');
    } catch (err) {
      this.log.warn({ err }, 'could not check for lapsed leases');
    }
  }

  private sandboxUser(): { uid: number; gid: number } | undefined {
    if (process.getuid?.() !== 0) return undefined;
    return { uid: this.options.config.SCRIPT_UID, gid: this.options.config.SCRIPT_GID };
  }

  private every(ms: number, fn: () => unknown): void {
    const timer = setInterval(() => void fn(), ms);
    timer.unref();
    this.timers.push(timer);
  }
}

/**
 * Python runs isolated from its environment (-I) and unbuffered (-u). Node's heap
 * is capped at SCRIPT_MEMORY_MB; V8 reserves far more address space than it uses.
 */
function commandFor(extension: ScriptExtension, entry: string, config: Config): string[] {
  if (extension === '.py') return [config.PYTHON_BIN, '-I', '-u', entry];
  return [config.NODE_BIN, `--max-old-space-size=${config.SCRIPT_MEMORY_MB}`, entry];
}

/**
 * RLIMIT_AS is the memory limit of a Python run. V8 reserves about 800 MB of
 * address space before running a line, so a Node run gets SCRIPT_MEMORY_MB plus
 * 1 GiB of address space, and its heap limit does the real limiting.
 */
const V8_RESERVED_MB = 1024;
function addressSpaceLimitMb(extension: ScriptExtension, config: Config): number {
  return extension === '.py' ? config.SCRIPT_MEMORY_MB : config.SCRIPT_MEMORY_MB + V8_RESERVED_MB;
}

function failureMessage(outcome: RunOutcome, stderrTail: string, config: Config): string {
  const lastLine = stderrTail.trim().split('\n').at(-1)?.trim().slice(0, 300) ?? '';
  const because = lastLine ? `: ${lastLine}` : '';
  if (
    outcome.signal === 'SIGXCPU' ||
    (outcome.signal === 'SIGKILL' && outcome.wallSeconds >= config.SCRIPT_CPU_SECONDS)
  )
    return `killed by ${outcome.signal}: CPU time limit of ${config.SCRIPT_CPU_SECONDS} s reached`;
  if (outcome.signal) return `killed by ${outcome.signal}${because}`;
  if (/MemoryError|heap out of memory|Cannot allocate memory/.test(stderrTail))
    return `exited with code ${outcome.exitCode}: out of memory (limit ${config.SCRIPT_MEMORY_MB} MB)${because}`;
  return `exited with code ${outcome.exitCode}${because}`;
}

/** The sandbox needs GNU time and util-linux's prlimit (and setpriv as root). */
async function checkTools(): Promise<void> {
  const tools = [TIME_BIN, PRLIMIT_BIN, ...(process.getuid?.() === 0 ? [SETPRIV_BIN] : [])];
  for (const tool of tools) {
    try {
      await access(tool);
    } catch {
      throw new Error(
        `the executor needs ${tool} (Debian packages: time, util-linux); install it or set EXECUTOR_ENABLED=false`,
      );
    }
  }
}
