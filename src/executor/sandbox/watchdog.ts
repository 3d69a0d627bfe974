/**
 * Per-run totals where no cgroup can be made: the run's processes (its uid, as
 * root; else its process group) summed from /proc every tick. Coarser than a
 * cgroup — memory that lives between two looks, tmpfs pages and processes that
 * have already exited are not seen — but a run that keeps more than its total is
 * killed within a tick.
 */
import { lstat, readdir } from 'node:fs/promises';
import { statFields } from '../../proc.ts';

const PAGE_BYTES = 4096;
/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on every Linux ABI we run on). */
const TICKS_PER_SECOND = 100;

export interface Selector {
  uid?: number;
  pgid?: number;
}

export interface Sample {
  bytes: number;
  cpuSeconds: number;
}

/** The run's processes now: resident memory summed, CPU time (their own and their waited-for children's). */
export async function sample(select: Selector): Promise<Sample> {
  let bytes = 0;
  let ticks = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    if (select.uid !== undefined) {
      const owner = await lstat(`/proc/${entry}`).catch(() => null);
      if (owner?.uid !== select.uid) continue;
    }
    const fields = await statFields(Number(entry));
    if (fields === null) continue;
    // proc(5) field N is index N - 3: pgrp 5, utime 14, stime 15, cutime 16, cstime 17, rss 24.
    if (select.uid === undefined && Number(fields[2]) !== select.pgid) continue;
    ticks += [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0);
    bytes += Number(fields[21] ?? 0) * PAGE_BYTES;
  }
  return { bytes, cpuSeconds: ticks / TICKS_PER_SECOND };
}
