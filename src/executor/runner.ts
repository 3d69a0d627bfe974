/**
 * Runs one command as a sandboxed child: its own process group, rlimits from
 * prlimit (address space, CPU time, processes, open files, file size, no core
 * dumps), the run's own uid/gid via setpriv when we are root, a clean
 * environment, a wall-clock timeout. GNU time (running as us, outside the
 * sandbox) records the exit status and peak resident memory into a file the
 * script cannot reach.
 *
 * Nothing outlives the executor: the chain is
 *   setpriv --pdeathsig KILL -- time … setpriv [--reuid …] --pdeathsig KILL -- prlimit … env -i … script
 * so `time` gets SIGKILL when the executor dies, and the script when `time` dies.
 * setpriv sets the parent-death signal after changing the uid (a uid change
 * clears it), and prlimit, env and the interpreter keep it across exec (none is
 * set-uid). Processes the script starts do not inherit it: the uid sweep
 * (process-group.ts) and the reaping of dead executors' folders (work-dir.ts) end those.
 */
import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
// NUL cannot be stored in PostgreSQL text: output shows it as U+FFFD, like undecodable bytes.
import { pgText } from '../repositories/run-output.js';
import { groupMembers, killGroup, killMembers, type SandboxUser } from './process-group.js';
import { ENV_BIN, PRLIMIT_BIN, SETPRIV_BIN, TIME_BIN } from './tools.js';

/**
 * Why a run was killed: its time was up, it was cancelled, the executor shut down,
 * its lease was refused (`lost`: cancelled, deleted or taken over), or the executor
 * could not renew the lease in time and killed it itself (`fenced`).
 */
export type KillReason = 'timeout' | 'cancelled' | 'shutdown' | 'lost' | 'fenced';

export interface RunLimits {
  timeoutMs: number;
  memoryBytes: number;
  cpuSeconds: number;
  maxProcesses: number;
  maxOpenFiles: number;
  maxFileBytes: number;
}

export interface RunRequest {
  command: string[];
  cwd: string;
  env: Record<string, string>;
  /** Where GNU time writes its report: a file the child cannot write. */
  statsFile: string;
  /** Drop to this uid/gid, the run's own (when running as root). */
  user?: SandboxUser;
  /** Kills every process of the run's uid, those that left its process group included. */
  killStrays?: () => Promise<void>;
  limits: RunLimits;
  onOutput: (text: string, stream: 'stdout' | 'stderr') => void;
}

export interface RunOutcome {
  exitCode: number | null;
  signal: string | null;
  wallSeconds: number;
  /** Peak resident memory of the script, from GNU time; null if time could not report it. */
  peakMemoryMb: number | null;
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
  const { limits, user } = request;
  const sandbox = [
    SETPRIV_BIN,
    ...(user ? [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups'] : []),
    '--no-new-privs',
    '--pdeathsig=KILL',
    '--',
    PRLIMIT_BIN,
    `--as=${limits.memoryBytes}`,
    `--cpu=${limits.cpuSeconds}`,
    `--nproc=${limits.maxProcesses}`,
    `--nofile=${limits.maxOpenFiles}`,
    `--fsize=${limits.maxFileBytes}`,
    '--core=0',
    '--',
    // The script's environment is exactly `env`, whatever the executor's own
    // environment holds or any wrapper (a test runner's spawn hook) adds.
    ENV_BIN,
    '-i',
    ...Object.entries(request.env).map(([key, value]) => `${key}=${value}`),
    ...request.command,
  ];
  const started = process.hrtime.bigint();
  const timed = [TIME_BIN, '-f', '%x %e %M', '-o', request.statsFile, ...sandbox];
  const child = spawn(SETPRIV_BIN, ['--pdeathsig=KILL', '--', ...timed], {
    cwd: request.cwd,
    env: { PATH: '/usr/bin:/bin' },
    detached: true, // its own process group, so the whole group can be killed
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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
    // What left the group (setsid) is still the run's uid.
    void request.killStrays?.().catch(() => {});
    // If time itself does not end (it should, once its child is gone), take the leader too.
    forceTimer = setTimeout(() => killGroup(pid), 2000);
  };
  const timeout = setTimeout(() => kill('timeout'), limits.timeoutMs);

  for (const [stream, name] of [
    [child.stdout, 'stdout'],
    [child.stderr, 'stderr'],
  ] as const) {
    const decoder = new StringDecoder('utf8');
    stream.on('data', (chunk: Buffer) => {
      const text = decoder.write(chunk);
      if (text !== '') request.onOutput(pgText(text), name);
    });
    stream.on('end', () => {
      const rest = decoder.end();
      if (rest !== '') request.onOutput(pgText(rest), name);
    });
  }

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
      // readTimeReport never rejects, and a stats file that cannot be removed goes with the
      // scratch folder: `done` always settles, or the run would hold its slot and lease forever.
      void readTimeReport(request.statsFile).then((report) => {
        resolve({
          exitCode: report?.signal ? null : (report?.exitCode ?? code),
          signal: report?.signal ?? signal,
          wallSeconds,
          peakMemoryMb: report ? report.peakKib / 1024 : null,
          killed,
        });
        return rm(request.statsFile, { force: true }).catch(() => {});
      });
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
 * "Command terminated by signal N" line, then our format "%x %e %M".
 */
async function readTimeReport(
  file: string,
): Promise<{ exitCode: number; signal: string | null; peakKib: number } | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return null;
  }
  const lines = text.trim().split('\n');
  const last = lines.at(-1)?.trim().split(/\s+/) ?? [];
  if (last.length !== 3) return null;
  const [exitCode, , peakKib] = last.map(Number);
  const signalLine = /terminated by signal (\d+)/.exec(text);
  const signal = signalLine ? signalName(Number(signalLine[1])) : null;
  if (!Number.isFinite(exitCode) || !Number.isFinite(peakKib)) return null;
  return { exitCode: exitCode as number, signal, peakKib: peakKib as number };
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

function signalName(n: number): string {
  return SIGNALS[n] ?? `signal ${n}`;
}
