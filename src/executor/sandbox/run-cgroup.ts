/**
 * One run's cgroup (a folder per v1 hierarchy, or one in v2): its limits
 * (memory.max / memory.limit_in_bytes, pids.max), its totals (memory.peak /
 * memory.max_usage_in_bytes, cpu.stat / cpuacct.usage, the OOM kills), the kill of
 * all its processes (v2's cgroup.kill, v1 by the list) and its removal.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { exists, keyed, readNumber, readText, removeTree } from './cgroup-fs.ts';

export interface CgroupLimits {
  memoryBytes: number;
  maxProcesses: number;
}

export interface CgroupUsage {
  /** The run's peak total: memory.peak / memory.max_usage_in_bytes. */
  peakBytes: number | null;
  cpuSeconds: number | null;
  /** Processes the kernel killed because the run's total reached its limit. */
  oomKills: number;
}

/** v1 mounts each controller apart; v2 has one tree (`unified`). */
export type Hierarchy = 'memory' | 'pids' | 'cpuacct' | 'unified';

export class RunCgroup {
  private readonly version: 1 | 2;
  private readonly dirs: Partial<Record<Hierarchy, string>>;

  constructor(version: 1 | 2, dirs: Partial<Record<Hierarchy, string>>) {
    this.version = version;
    this.dirs = dirs;
  }

  /** The files a process writes its pid to, to join the run's cgroup(s). */
  get procsFiles(): string[] {
    return Object.values(this.dirs).map((dir) => path.join(dir, 'cgroup.procs'));
  }

  async setLimits(limits: CgroupLimits): Promise<void> {
    const set = (file: string, value: string | number) =>
      writeFile(this.file(file), String(value)).catch((error) => {
        throw new Error(`could not set ${file} of the run's cgroup: ${String(error)}`);
      });
    if (this.version === 2) {
      await set('memory.max', limits.memoryBytes);
      // No swap: the limit is the run's memory, not memory plus disk.
      await set('memory.swap.max', 0).catch(() => {});
      // One process past the limit takes the whole run with it.
      await set('memory.oom.group', 1).catch(() => {});
      await set('pids.max', limits.maxProcesses);
      return;
    }
    await set('memory.limit_in_bytes', limits.memoryBytes);
    // With swap accounting, the same limit on memory + swap (must follow memory.limit_in_bytes).
    if (await exists(this.file('memory.memsw.limit_in_bytes')))
      await set('memory.memsw.limit_in_bytes', limits.memoryBytes);
    if (this.dirs.pids !== undefined) await set('pids.max', limits.maxProcesses);
  }

  async usage(): Promise<CgroupUsage> {
    if (this.version === 2) {
      const peak = await readNumber(this.file('memory.peak'));
      const cpu = keyed(await readText(this.file('cpu.stat')), 'usage_usec');
      const oom = keyed(await readText(this.file('memory.events')), 'oom_kill');
      return { peakBytes: peak, cpuSeconds: cpu === null ? null : cpu / 1e6, oomKills: oom ?? 0 };
    }
    const peak = await readNumber(this.file('memory.max_usage_in_bytes'));
    const cpu = this.dirs.cpuacct === undefined ? null : await readNumber(this.file('cpuacct.usage'));
    const oom = keyed(await readText(this.file('memory.oom_control')), 'oom_kill');
    return { peakBytes: peak, cpuSeconds: cpu === null ? null : cpu / 1e9, oomKills: oom ?? 0 };
  }

  /** SIGKILL to every process of the run (v2: at once with cgroup.kill; v1: by the list, until empty). */
  async kill(): Promise<void> {
    if (
      this.version === 2 &&
      (await writeFile(this.file('cgroup.kill'), '1').then(
        () => true,
        () => false,
      ))
    )
      return;
    const procs = this.procsFiles[0];
    if (procs === undefined) return;
    // v1 has no cgroup.kill: kill by the list, again while a fork races the kill.
    for (let round = 0; round < 20; round++) {
      const pids = (await readText(procs)).split('\n').filter(Boolean).map(Number);
      if (pids.length === 0) return;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Removes the cgroup once its processes are gone (kills what is left); true when it is gone. */
  async remove(): Promise<boolean> {
    let removed = true;
    for (const dir of Object.values(this.dirs)) removed = (await removeTree(dir)) && removed;
    return removed;
  }

  /** The file of a controller: v1 hierarchies each have their own folder. */
  private file(name: string): string {
    const hierarchy: Hierarchy =
      this.version === 2
        ? 'unified'
        : name.startsWith('pids.')
          ? 'pids'
          : name.startsWith('cpuacct.')
            ? 'cpuacct'
            : 'memory';
    return path.join(this.dirs[hierarchy] ?? '/nonexistent', name);
  }
}
