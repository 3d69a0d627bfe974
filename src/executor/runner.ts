/**
 * Runs one command as a sandboxed child: its own process group, rlimits from
 * prlimit (address space, CPU time, processes, open files, file size, no core
 * dumps), an unprivileged uid/gid via setpriv when we are root, a clean
 * environment, a wall-clock timeout. GNU time (running as us, outside the
 * sandbox) records the exit status and peak resident memory into a file the
 * script cannot reach.
 */
import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { groupMembers, killGroup, killMembers } from './process-group.js';

export type KillReason = 'timeout' | 'cancelled' | 'shutdown' | 'lost';

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
  /** Drop to this uid/gid (when running as root). */
  user?: { uid: number; gid: number };
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

export const TIME_BIN = '/usr/bin/time';
export const PRLIMIT_BIN = '/usr/bin/prlimit';
export const SETPRIV_BIN = '/usr/bin/setpriv';
export const ENV_BIN = '/usr/bin/env';

export function startRun(request: RunRequest): RunHandle {
  const { limits, user } = request;
  const sandbox = [
    ...(user
      ? [SETPRIV_BIN, `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--no-new-privs']
      : []),
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
  const child = spawn(TIME_BIN, ['-f', '%x %e %M', '-o', request.statsFile, ...sandbox], {
    cwd: request.cwd,
    env: { PATH: '/usr/bin:/bin' },
    detached: true, // its own process group, so the whole group can be killed
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = child.pid;
  if (pid === undefined) {
    const error = new Error(`could not start ${TIME_BIN}`);
    return { pid: -1, done: Promise.reject(error), kill: () => {} };
  }

  let killed: KillReason | null = null;
  let exited = false;
  let forceTimer: NodeJS.Timeout | undefined;
  const kill = (reason: KillReason) => {
    if (killed !== null || exited) return;
    killed = reason;
    void killAllButLeader(pid);
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
      if (text !== '') request.onOutput(text, name);
    });
    stream.on('end', () => {
      const rest = decoder.end();
      if (rest !== '') request.onOutput(rest, name);
    });
  }

  const done = new Promise<RunOutcome>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', () => {
      exited = true;
      clearTimeout(timeout);
      clearTimeout(forceTimer);
      // Whatever the script left behind in its group (background children) goes too;
      // otherwise they would hold the output pipes open.
      killGroup(pid);
    });
    child.on('close', async (code, signal) => {
      const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
      const report = await readTimeReport(request.statsFile);
      await rm(request.statsFile, { force: true });
      resolve({
        exitCode: report?.signal ? null : (report?.exitCode ?? code),
        signal: report?.signal ?? signal,
        wallSeconds,
        peakMemoryMb: report ? report.peakKib / 1024 : null,
        killed,
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
