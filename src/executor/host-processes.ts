/**
 * Processes of this host, from /proc: who is alive (a pid alone can be reused, so
 * a process is named by pid, start time and boot), and who works in a folder.
 */
import { readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { statFields } from '../proc.ts';

/** A process, named so that a reused pid or a reboot is not mistaken for it. */
export interface ProcessIdentity {
  boot: string;
  pid: number;
  /** Start time in clock ticks since boot (/proc/<pid>/stat, field 22). */
  start: string;
}

let bootId: Promise<string> | undefined;

function currentBoot(): Promise<string> {
  bootId ??= readFile('/proc/sys/kernel/random/boot_id', 'utf8').then((s) => s.trim());
  return bootId;
}

async function startTime(pid: number): Promise<string | null> {
  return (await statFields(pid))?.[19] ?? null;
}

export async function identify(pid = process.pid): Promise<ProcessIdentity> {
  const start = await startTime(pid);
  if (start === null) throw new Error(`process ${pid} does not exist`);
  return { boot: await currentBoot(), pid, start };
}

/** Whether the process named by `who` still runs. */
export async function isAlive(who: ProcessIdentity): Promise<boolean> {
  if (who.boot !== (await currentBoot())) return false;
  return (await startTime(who.pid)) === who.start;
}

/** Reads an identity written by `JSON.stringify`; null when it is not one. */
export function parseIdentity(text: string): (ProcessIdentity & Record<string, unknown>) | null {
  try {
    const value = JSON.parse(text);
    if (typeof value?.boot === 'string' && Number.isInteger(value?.pid) && typeof value?.start === 'string')
      return value;
  } catch {
    // not JSON
  }
  return null;
}

/** Pids of live processes whose working directory is `dir` or inside it. */
async function processesIn(dir: string): Promise<number[]> {
  const prefix = dir.endsWith(path.sep) ? dir : dir + path.sep;
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cwd = await readlink(`/proc/${entry}/cwd`);
      if (cwd === dir || cwd.startsWith(prefix)) pids.push(Number(entry));
    } catch {
      // gone, or a kernel thread
    }
  }
  return pids;
}

/** SIGKILLs the processes working in `dir` until none is left (a forking one takes a few rounds). */
export async function killProcessesIn(dir: string): Promise<number> {
  let killed = 0;
  for (let round = 0; round < 20; round++) {
    const pids = (await processesIn(dir)).filter((pid) => pid !== process.pid);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
        killed++;
      } catch {
        // already gone
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return killed;
}
