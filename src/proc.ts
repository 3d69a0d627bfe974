/** Small facts about processes of this host, from the kernel (/proc, signal 0). */
import { readFile } from 'node:fs/promises';

/**
 * The fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, … (so
 * field N of proc(5) is index N - 3). The command name may contain spaces and
 * parentheses; the fields after its last ')' are fixed. Null when there is no such process.
 */
export async function statFields(pid: number): Promise<string[] | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** Whether a process with this pid exists (whatever it is, ours to signal or not). */
export function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
