/**
 * Killing what a script started. A run is its own process group (spawned
 * detached); its leader is GNU time, which must outlive the script to report the
 * peak memory, so the group's other members are killed first and the leader last.
 *
 * A process that leaves the group (setsid) escapes a group kill. As root, every
 * run has a uid of its own (uid-pool.ts), and the sweeper (sweeper.ts) ends every
 * process of that uid, wherever it went.
 */
import { readdir } from 'node:fs/promises';
import { statFields } from '../proc.ts';

export interface SandboxUser {
  uid: number;
  gid: number;
}

/** Pids of the processes whose process group is `pgid` (from /proc). */
export async function groupMembers(pgid: number): Promise<number[]> {
  const members: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    // Null: the process ended while we looked.
    const fields = await statFields(Number(entry));
    if (fields !== null && Number(fields[2]) === pgid) members.push(Number(entry));
  }
  return members;
}

/** SIGKILL to every member of the group except its leader. */
export async function killMembers(pgid: number): Promise<void> {
  for (const pid of await groupMembers(pgid)) {
    if (pid !== pgid) signal(pid, 'SIGKILL');
  }
}

/** SIGKILL to the whole group, leader included. */
export function killGroup(pgid: number): void {
  signal(-pgid, 'SIGKILL');
}

/**
 * Never throws: callers kill from timers and event handlers, where a throw would
 * crash the executor. ESRCH (already gone) is the common case; EPERM would mean the
 * pid was reused by a process we may not signal, which is then not ours to kill.
 */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone, or not ours
  }
}
