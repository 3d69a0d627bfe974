/**
 * One claimed run, from its scratch folder to its recorded outcome: the copy (or
 * compilation) of the script, the sandboxed process, its output on the way to the
 * database, the verdict, and the clean-up of everything the run's uid left.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Metrics } from '../metrics.ts';
import type { Repositories } from '../repositories/index.ts';
import type { ClaimedRun } from '../repositories/run-leases.ts';
import type { PendingChunk } from '../repositories/run-output.ts';
import type { SecretBox } from '../services/secret-box.ts';
import type { Storage } from '../storage/storage.ts';
import { type KillReason, type RunHandle, type RunOutcome, startRun } from './child-process.ts';
import { type IbkrEnvironment, ibkrEnvironment, withSecretEnv } from './ibkr-credentials.ts';
import { LogSink } from './log-sink.ts';
import { type Recorder, verdictOf } from './outcome.ts';
import type { SandboxUser } from './process-group.ts';
import { prepareWorkspace, ScriptCompileError, type Workspace } from './run-workspace.ts';
import type { Confinement } from './sandbox/confinement.ts';
import type { Sandbox } from './sandbox/index.ts';
import { addressSpaceLimitMb, commandFor, scriptEnv } from './script-command.ts';
import type { Sweeper } from './sweeper.ts';

export interface ActiveRun {
  claim: ClaimedRun;
  /** Until when (performance.now(), ms) this executor knows it holds the run's lease. */
  leaseUntil: number;
  handle?: RunHandle;
  /** Why the run is being killed; set before the process exists, it is then never started. */
  pendingKill?: KillReason;
  /** Awaited before the process starts (a check that the run was not cancelled meanwhile). */
  ready?: Promise<void>;
}

export interface RunContext {
  config: Config;
  repos: Repositories;
  storage: Storage;
  metrics?: Metrics;
  log: Logger;
  executorId: string;
  /** The executor's folder, parent of the run's scratch folder. */
  dir: string;
  recorder: Recorder;
  /** Builds each run's namespaces, cgroup and command line. */
  sandbox: Sandbox;
  /** The run's own uid/gid (as root); given back through `giveBackUser` once swept clean. */
  user?: SandboxUser;
  sweeper: Sweeper;
  /** Decrypts the owner's IBKR tokens for runs of scripts with ibkr_access. */
  secrets: SecretBox;
  giveBackUser?: () => void;
  /** A write of the run's output was refused: the run is no longer ours. */
  onLost: () => void;
  /**
   * The outcome is written (`recorded`: the row took it) or given up on: the run's
   * slot is free, its clean-up continues.
   */
  onRecorded?: (recorded: boolean) => void;
}

const NOT_STARTED: Omit<RunOutcome, 'killed'> = {
  exitCode: null,
  signal: null,
  wallSeconds: 0,
  peakMemoryMb: null,
  cpuSeconds: null,
};

export async function executeRun(ctx: RunContext, active: ActiveRun): Promise<void> {
  const { claim } = active;
  const { id } = claim;
  const { config, user } = ctx;
  const log = ctx.log.child({ run_id: id, script_id: claim.script_id });
  let workspace: Workspace | undefined;
  let recorded = false;
  try {
    try {
      const content = await ctx.storage.open({ script_id: claim.script_id, user_id: claim.user_id });
      if (content === null) throw new ScriptCompileError('the content of the script is missing');
      workspace = await prepareWorkspace({
        root: ctx.dir,
        scriptId: claim.script_id,
        source: content.stream,
        extension: claim.file_extension,
        user,
      });
    } catch (err) {
      const compile = err instanceof ScriptCompileError;
      if (!compile) log.error({ err }, 'could not prepare the workspace');
      const message = compile ? err.message : 'the script could not be prepared for running';
      recorded = await finish(ctx, id, { ...NOT_STARTED, killed: null }, log, { failure: message });
      return;
    }
    await active.ready;
    // Cancelled (or stopped) while the folder was prepared: the script never starts.
    if (active.pendingKill) {
      recorded = await finish(ctx, id, { ...NOT_STARTED, killed: active.pendingKill }, log);
      return;
    }
    // Read now, as the run starts: a link removed while it was queued is not used. A script
    // that may use the link does not start without knowing it: the run fails, and says why.
    let ibkr: IbkrEnvironment | undefined;
    try {
      ibkr = await ibkrEnvironment(ctx.repos, ctx.secrets, claim.script_id, log);
    } catch (err) {
      log.error({ err }, 'could not read the IBKR link of the script');
    }
    // Cancelled (or stopped) while the link was read, or the link unreadable: the script never starts.
    if (active.pendingKill || ibkr === undefined) {
      const why = active.pendingKill
        ? {}
        : { failure: 'the script could not be started: its IBKR link could not be read; try again' };
      recorded = await finish(ctx, id, { ...NOT_STARTED, killed: active.pendingKill ?? null }, log, why);
      return;
    }
    const sink = new LogSink({
      maxBytes: config.MAX_LOG_BYTES,
      write: (seq, text) => ctx.repos.output.appendLog(id, ctx.executorId, seq, text),
      onError: (err) => log.warn({ err }, 'could not store output; will retry'),
      onLost: ctx.onLost,
    });
    const secretEnv = ibkr.env;
    // The owner reads the run's output, not the operator's log: say there what the run lacks.
    for (const name of ibkr.undecryptable)
      sink.push(
        `[dollarclub] ${name} is not set: the stored token could not be decrypted; link the IBKR account again\n`,
      );
    let stderrTail = '';
    log.info({ uid: user?.uid, ibkr_credentials: 'IBKR_USER_ID' in secretEnv }, 'run starting');
    let outcome: RunOutcome;
    let confinement: Confinement | undefined;
    try {
      confinement = await ctx.sandbox.confine({
        name: path.basename(workspace.dir),
        scratchDir: workspace.dir,
        entry: workspace.entry,
        user,
        env: scriptEnv(workspace.dir, claim.script_id, id),
        command: withSecretEnv(commandFor(claim.file_extension, workspace.entry, config), secretEnv),
        limits: {
          addressSpaceBytes: addressSpaceLimitMb(claim.file_extension, config) * 1024 * 1024,
          cpuSeconds: config.SCRIPT_CPU_SECONDS,
          maxProcesses: config.SCRIPT_MAX_PROCESSES,
          maxOpenFiles: 256,
          maxFileBytes: 64 * 1024 * 1024,
        },
      });
      // spawn throws some failures (ENOMEM) and reports others through `done`.
      const handle = startRun({
        confinement,
        cwd: workspace.dir,
        timeoutMs: config.MAX_EXECUTION_SECONDS * 1000,
        statsFile: workspace.statsFile,
        secretEnv,
        killStrays: user && (() => ctx.sweeper.kill(user)),
        onOutput: (text, stream) => {
          sink.push(text);
          if (stream === 'stderr') stderrTail = (stderrTail + text).slice(-2000);
        },
      });
      active.handle = handle;
      // A kill that came while the sandbox was set up found no process to stop: stop it now.
      if (active.pendingKill) handle.kill(active.pendingKill);
      outcome = await handle.done;
    } catch (err) {
      log.error({ err }, 'could not start the script');
      await confinement?.finish().catch(() => {});
      const failure = 'the script could not be started';
      recorded = await finish(ctx, id, { ...NOT_STARTED, killed: null }, log, { failure });
      return;
    }
    await sink.flush();
    if (sink.lost && outcome.killed === null) outcome.killed = 'lost';
    recorded = await finish(ctx, id, outcome, log, {
      stderrTail,
      unwritten: sink.drain(),
      started: true,
      logTruncated: sink.isTruncated,
    });
  } finally {
    ctx.onRecorded?.(recorded);
    await cleanUp(ctx, workspace, log);
  }
}

interface FinishOptions {
  stderrTail?: string;
  /** Output the sink could not store. */
  unwritten?: PendingChunk[];
  /** The output was cut at MAX_LOG_BYTES. */
  logTruncated?: boolean;
  /** Overrides the verdict: why a run could not start. */
  failure?: string;
  /** False (the default) for a run that never had a process: wall time 0, no exit code, no memory. */
  started?: boolean;
}

async function finish(
  ctx: RunContext,
  id: number,
  outcome: RunOutcome,
  log: Logger,
  options: FinishOptions = {},
): Promise<boolean> {
  const started = options.started ?? false;
  const verdict =
    options.failure === undefined
      ? verdictOf(outcome, options.stderrTail ?? '', ctx.config, started)
      : { kind: 'fail' as const, message: options.failure, label: 'failed' };
  const recorded = await ctx.recorder.record(
    id,
    verdict.kind,
    {
      exit_code: outcome.exitCode,
      execution_time_seconds: outcome.wallSeconds,
      memory_usage_mb: outcome.peakMemoryMb,
      cpu_time_seconds: outcome.cpuSeconds,
      log_truncated: options.logTruncated ?? false,
    },
    verdict.message,
    options.unwritten ?? [],
  );
  ctx.metrics?.scriptRuns.inc({ outcome: verdict.label });
  ctx.metrics?.scriptRunDuration.observe({ outcome: verdict.label }, outcome.wallSeconds);
  log.info(
    {
      outcome: verdict.label,
      recorded,
      started,
      exit_code: outcome.exitCode,
      signal: outcome.signal,
      seconds: outcome.wallSeconds,
      memory_mb: outcome.peakMemoryMb,
      cpu_seconds: outcome.cpuSeconds,
    },
    'run finished',
  );
  return recorded;
}

/**
 * As root: kills whatever still runs as the run's uid and deletes what it left in
 * the shared temporary folders, then gives the uid back; a uid that could not be
 * swept is not reused. Then the scratch folder goes.
 */
async function cleanUp(ctx: RunContext, workspace: Workspace | undefined, log: Logger): Promise<void> {
  if (ctx.user) {
    let clean = false;
    for (let attempt = 0; attempt < 3 && !clean; attempt++) {
      clean = await ctx.sweeper.sweep(ctx.user).then(
        () => true,
        (err) => {
          log.warn({ err, uid: ctx.user?.uid }, 'could not sweep the run’s uid');
          return false;
        },
      );
    }
    if (clean) ctx.giveBackUser?.();
    else log.error({ uid: ctx.user.uid }, 'the run’s uid is not reused: it could not be swept clean');
  }
  await workspace?.remove().catch((err) => log.warn({ err }, 'could not remove the scratch folder'));
}
