/**
 * Runs one sandboxed child: its own process group, a wall-clock timeout, and GNU
 * time (running as us, outside the sandbox) recording the exit status, peak
 * resident memory and CPU time into a file the script cannot reach. Everything
 * between time and the script — namespaces, cgroup, uid, rlimits, environment — is
 * the sandbox module's (sandbox/command.ts); so are the run's totals.
 *
 * Nothing outlives the executor: the chain is
 *   setpriv --pdeathsig KILL -- time … <sandbox: bwrap --die-with-parent … setpriv --pdeathsig KILL …> script
 * so `time` gets SIGKILL when the executor dies, and the sandbox when `time` dies
 * (with a pid namespace, every process of the run dies with its init). Without
 * namespaces, processes the script starts do not inherit the parent-death signal:
 * the uid sweep (process-group.ts) and the reaping of dead executors' folders
 * (executor-dir.ts) end those.
 */
import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
// NUL cannot be stored in PostgreSQL text: output shows it as U+FFFD, like undecodable bytes.
import { pgText } from '../domain/text.ts';
import { secretEnvPayload } from './ibkr-credentials.ts';
import { groupMembers, killGroup, killMembers } from './process-group.ts';
import type { Confinement } from './sandbox/confinement.ts';
import { SETPRIV_BIN, TIME_BIN } from './tools.ts';

/**
 * Why a run was killed: its time was up, it was cancelled, the executor shut down,
 * its lease was refused (`lost`: cancelled, deleted or taken over), the executor
 * could not renew the lease in time and killed it itself (`fenced`), or the run's
 * processes together crossed the memory or CPU-time total (`memory`, `cpu`).
 */
export type KillReason = 'timeout' | 'cancelled' | 'shutdown' | 'lost' | 'fenced' | 'memory' | 'cpu';

export interface RunRequest {
  /** The sandbox of the run: its command line (with the script's) and its totals. */
  confinement: Confinement;
  cwd: string;
  timeoutMs: number;
  /** Where GNU time writes its report: a file the child cannot write. */
  statsFile: string;
  /** Variables given to the script through a pipe on fd 3, never argv (ibkr-credentials.ts). */
  secretEnv?: Record<string, string>;
  /** Kills every process of the run's uid, those that left its process group included. */
  killStrays?: () => Promise<void>;
  onOutput: (text: string, stream: 'stdout' | 'stderr') => void;
}

export interface RunOutcome {
  exitCode: number | null;
  signal: string | null;
  wallSeconds: number;
  /** Peak memory of the run: its total (cgroup, watchdog), else GNU time's largest process; null if unknown. */
  peakMemoryMb: number | null;
  /** CPU time of the run's processes (cgroup, else GNU time); null if unknown. */
  cpuSeconds: number | null;
  killed: KillReason | null;
}

export interface RunHandle {
  pid: number;
  done: Promise<RunOutcome>;
  /** Kills the run (first reason wins). */
  kill(reason: KillReason): void;
}

/** After `time` exits, how long its output pipes may stay open (held by an escaped process). */
const CLOSE_AFTER_EXIT_MS = 2000;

export function startRun(request: RunRequest): RunHandle {
  const { confinement } = request;
  const started = process.hrtime.bigint();
  const child = spawnChild(request);
  const pid = child.pid;
  if (pid === undefined) {
    // The spawn failed (EAGAIN, EMFILE, ENOENT, …): Node emits the reason as 'error' on
    // the next tick, and an 'error' without a listener would crash the process.
    const done = new Promise<RunOutcome>((_, reject) => child.once('error', reject));
    return { pid: -1, done, kill: () => {} };
  }

  let killed: KillReason | null = null;
  let exited = false;
  let forceTimer: NodeJS.Timeout | undefined;
  const kill = (reason: KillReason) => {
    if (killed !== null || exited) return;
    killed = reason;
    void killAllButLeader(pid);
    void confinement.kill().catch(() => {});
    // What left the group (setsid) is still the run's uid.
    void request.killStrays?.().catch(() => {});
    // If time itself does not end (it should, once its child is gone), take the leader too.
    forceTimer = setTimeout(() => killGroup(pid), 2000);
  };
  const timeout = setTimeout(() => kill('timeout'), request.timeoutMs);
  confinement.watch(pid, kill);

  pipeOutput(child, request.onOutput);

  const done = new Promise<RunOutcome>((resolve, reject) => {
    child.on('error', reject);
    const closeTimers: NodeJS.Timeout[] = [];
    // The run's wall time ends when `time` exits, not when the last pipe closes.
    let exitedAt: bigint | undefined;
    child.on('exit', () => {
      exited = true;
      exitedAt = process.hrtime.bigint();
      clearTimeout(timeout);
      clearTimeout(forceTimer);
      // Whatever the script left behind in its group (background children) goes too;
      // otherwise they would hold the output pipes open. A process that left the
      // group could too: as root it is the run's uid, killed if the pipes stay open
      // (and swept after the run anyway); without a uid of its own, the pipes are
      // closed from our side after a while.
      killGroup(pid);
      closeTimers.push(
        setTimeout(() => void request.killStrays?.().catch(() => {}), 200),
        setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
        }, CLOSE_AFTER_EXIT_MS),
      );
    });
    child.on('close', (code, signal) => {
      for (const timer of closeTimers) clearTimeout(timer);
      const wallSeconds = Number((exitedAt ?? process.hrtime.bigint()) - started) / 1e9;
      // readTimeReport and finish never reject, and a stats file that cannot be removed goes with
      // the scratch folder: `done` always settles, or the run would hold its slot and lease forever.
      void Promise.all([readTimeReport(request.statsFile), confinement.finish().catch(() => null)]).then(
        ([report, totals]) => {
          if (totals?.memoryExceeded && killed === null) killed = 'memory';
          resolve(outcomeOf({ code, signal }, report, totals, confinement, wallSeconds, killed));
          return rm(request.statsFile, { force: true }).catch(() => {});
        },
      );
    });
  });
  return { pid, done, kill };
}

/** Kills the group's members until only the leader (time) is left; a forking script needs a few rounds. */
async function killAllButLeader(pgid: number): Promise<void> {
  try {
    for (let round = 0; round < 10; round++) {
      await killMembers(pgid);
      await new Promise((resolve) => setTimeout(resolve, 50));
      if ((await groupMembers(pgid)).every((pid) => pid === pgid)) return;
    }
  } catch {
    killGroup(pgid);
  }
}

/**
 * GNU time's report: an optional "Command exited with non-zero status N" or
 * "Command terminated by signal N" line, then our format "%x %e %M %U %S".
 */
async function readTimeReport(
  file: string,
): Promise<{ exitCode: number; signal: string | null; peakKib: number; cpuSeconds: number } | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return null;
  }
  const lines = text.trim().split('\n');
  const last = lines.at(-1)?.trim().split(/\s+/) ?? [];
  if (last.length !== 5) return null;
  const [exitCode, , peakKib, user, system] = last.map(Number) as [number, number, number, number, number];
  const signalLine = /terminated by signal (\d+)/.exec(text);
  const signal = signalLine ? nameOfSignal(Number(signalLine[1])) : null;
  if (!Number.isFinite(exitCode) || !Number.isFinite(peakKib)) return null;
  return { exitCode, signal, peakKib, cpuSeconds: user + system };
}

const SIGNALS: Record<number, string> = {
  1: 'SIGHUP',
  2: 'SIGINT',
  3: 'SIGQUIT',
  4: 'SIGILL',
  6: 'SIGABRT',
  7: 'SIGBUS',
  8: 'SIGFPE',
  9: 'SIGKILL',
  11: 'SIGSEGV',
  13: 'SIGPIPE',
  14: 'SIGALRM',
  15: 'SIGTERM',
  24: 'SIGXCPU',
  25: 'SIGXFSZ',
};

function nameOfSignal(n: number): string {
  return SIGNALS[n] ?? `signal ${n}`;
}

/**
 * The chain `setpriv --pdeathsig=KILL -- [time …] <confinement>` in a process group of
 * its own, with the secret variables (if any) written into a pipe on its fd 3.
 */
function spawnChild(request: RunRequest) {
  const { confinement } = request;
  const secret = request.secretEnv === undefined ? '' : secretEnvPayload(request.secretEnv);
  // Without a cgroup, GNU time reports the exit status, the largest process's peak memory and
  // the CPU time; with one, the cgroup's totals say more and the chain is one program shorter.
  const timed = confinement.measuresItself
    ? confinement.argv
    : [TIME_BIN, '-f', '%x %e %M %U %S', '-o', request.statsFile, ...confinement.argv];
  const child = spawn(SETPRIV_BIN, ['--pdeathsig=KILL', '--', ...timed], {
    cwd: request.cwd,
    env: { PATH: '/usr/bin:/bin' },
    detached: true, // its own process group, so the whole group can be killed
    // fd 3 carries the secret variables, when there are any (typed as the three pipes we read).
    stdio: ['ignore', 'pipe', 'pipe', secret === '' ? 'ignore' : 'pipe'] as unknown as [
      'ignore',
      'pipe',
      'pipe',
    ],
  });
  if (secret !== '') {
    const pipe = (child.stdio as unknown as Writable[])[3] as Writable;
    pipe.on('error', () => {}); // the run ended before reading it (EPIPE): nothing to do
    pipe.end(secret);
  }
  return child;
}

/** stdout and stderr as text (UTF-8 split across chunks kept whole, NUL made storable). */
function pipeOutput(child: ReturnType<typeof spawnChild>, onOutput: RunRequest['onOutput']): void {
  for (const [stream, name] of [
    [child.stdout, 'stdout'],
    [child.stderr, 'stderr'],
  ] as const) {
    const decoder = new StringDecoder('utf8');
    stream.on('data', (chunk: Buffer) => {
      const text = decoder.write(chunk);
      if (text !== '') onOutput(pgText(text), name);
    });
    stream.on('end', () => {
      const rest = decoder.end();
      if (rest !== '') onOutput(pgText(rest), name);
    });
  }
}

/** What the run's end says, from the chain's exit, GNU time's report and the cgroup's totals. */
function outcomeOf(
  exit: { code: number | null; signal: NodeJS.Signals | null },
  report: Awaited<ReturnType<typeof readTimeReport>>,
  totals: Awaited<ReturnType<Confinement['finish']>> | null,
  confinement: Confinement,
  wallSeconds: number,
  killed: KillReason | null,
): RunOutcome {
  let exitCode = report?.signal ? null : (report?.exitCode ?? exit.code);
  let signalName = report?.signal ?? exit.signal;
  // bubblewrap exits with 128 + N when the script died of signal N.
  if (confinement.signalAsExitCode && exitCode !== null && exitCode > 128 && exitCode < 160) {
    signalName = nameOfSignal(exitCode - 128);
    exitCode = null;
  }
  return {
    exitCode,
    signal: signalName,
    wallSeconds,
    peakMemoryMb: totals?.peakMemoryMb ?? (report ? report.peakKib / 1024 : null),
    cpuSeconds: totals?.cpuSeconds ?? report?.cpuSeconds ?? null,
    killed,
  };
}
