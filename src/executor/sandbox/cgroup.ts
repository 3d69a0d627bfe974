/**
 * A cgroup per run: the run's totals (memory with its tmpfs pages, processes, CPU
 * time) are the kernel's, whatever the run forks. cgroup v2 where the host has it
 * (memory.max, pids.max, memory.peak, memory.events, cpu.stat, cgroup.kill), v1
 * otherwise (the memory, pids and cpuacct hierarchies, each mounted apart).
 *
 * Runs' cgroups live in a folder of the executor's own under the cgroup the
 * executor itself is in (`dollarclub-<pid>-<random>`), created at start and
 * removed at stop; those of dead executors are removed at the next start.
 * In v2, controllers can only be handed down from a cgroup without processes
 * ("no internal processes"): when the executor's cgroup has them enabled
 * nowhere, it moves itself into a leaf `dollarclub-executor-<pid>` first (what a
 * container's single process must do).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pidExists } from '../../proc.ts';

export type CgroupHost =
  | { version: 1; memory: string; pids: string | null; cpuacct: string | null }
  | { version: 2; dir: string };

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

const PREFIX = 'dollarclub-';

/** v1 mounts each controller apart; v2 has one tree (`unified`). */
type Hierarchy = 'memory' | 'pids' | 'cpuacct' | 'unified';

/**
 * Where this process may create cgroups for its runs, or why it may not. `procSelf` is
 * /proc/self but for tests of the parsing (a folder holding `mountinfo` and `cgroup`).
 */
export function detectCgroups(procSelf = '/proc/self'): CgroupHost | string {
  let mountinfo: string;
  let own: string;
  try {
    mountinfo = readFileSync(path.join(procSelf, 'mountinfo'), 'utf8');
    own = readFileSync(path.join(procSelf, 'cgroup'), 'utf8');
  } catch (error) {
    return `cannot read /proc/self: ${String(error)}`;
  }
  const mounts = mountinfo.split('\n').flatMap((line) => {
    const [before, after] = line.split(' - ');
    if (!before || !after) return [];
    const fields = before.split(' ');
    const [fstype, , options] = after.split(' ');
    return [{ root: fields[3] ?? '/', point: fields[4] ?? '', fstype, options: (options ?? '').split(',') }];
  });
  /** The executor's own cgroup in a hierarchy (`N:controllers:path`; v2 has no controllers). */
  const ownPath = (controller: string | null): string | null => {
    for (const line of own.split('\n')) {
      const m = /^\d+:([^:]*):(.*)$/.exec(line);
      if (m === null) continue;
      const controllers = m[1] as string;
      if (controller === null ? controllers === '' : controllers.split(',').includes(controller))
        return m[2] as string;
    }
    return null;
  };
  const v1 = (controller: string): string | null => {
    const mount = mounts.find((m) => m.fstype === 'cgroup' && m.options.includes(controller));
    const p = ownPath(controller);
    if (!mount || p === null) return null;
    // Inside a cgroup namespace the mount's root is the namespace's: paths are relative to it.
    const relative = mount.root !== '/' && p.startsWith(mount.root) ? p.slice(mount.root.length) : p;
    return path.join(mount.point, relative);
  };
  const memory = v1('memory');
  if (memory !== null) return { version: 1, memory, pids: v1('pids'), cpuacct: v1('cpuacct') };
  const unified = mounts.find((m) => m.fstype === 'cgroup2');
  const p = ownPath(null);
  if (unified && p !== null) {
    const relative = unified.root !== '/' && p.startsWith(unified.root) ? p.slice(unified.root.length) : p;
    const dir = path.join(unified.point, relative);
    let controllers: string[];
    try {
      controllers = readFileSync(path.join(dir, 'cgroup.controllers'), 'utf8').trim().split(/\s+/);
    } catch (error) {
      return `cannot read the controllers of cgroup v2 at ${dir}: ${String(error)}`;
    }
    if (!controllers.includes('memory')) return `cgroup v2 at ${dir} does not offer the memory controller`;
    return { version: 2, dir };
  }
  return 'no memory cgroup (neither v1 nor v2) is mounted';
}

/** The executor's folder of run cgroups: created now, or an error saying why not. */
export class CgroupParent {
  readonly host: CgroupHost;
  /** One folder per hierarchy (v1), or one (v2). */
  private readonly dirs: Record<Hierarchy, string | null>;

  private constructor(host: CgroupHost, dirs: Record<Hierarchy, string | null>) {
    this.host = host;
    this.dirs = dirs;
  }

  static create(host: CgroupHost): CgroupParent {
    const name = `${PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`;
    if (host.version === 1) {
      const make = (base: string | null) => {
        if (base === null) return null;
        const dir = path.join(base, name);
        mkdirSync(dir);
        return dir;
      };
      return new CgroupParent(host, {
        memory: make(host.memory),
        pids: make(host.pids),
        cpuacct: make(host.cpuacct),
        unified: null,
      });
    }
    enableV2Controllers(host.dir);
    const dir = path.join(host.dir, name);
    mkdirSync(dir);
    // Hand the controllers on to the runs' cgroups.
    writeFileSync(path.join(dir, 'cgroup.subtree_control'), '+memory +pids +cpu');
    return new CgroupParent(host, { memory: null, pids: null, cpuacct: null, unified: dir });
  }

  /** The next run's cgroup, made ahead (after the previous run started), and the limits it has. */
  private spare: { limits: string; cgroup: Promise<RunCgroup> } | undefined;
  private made = 0;

  /**
   * A fresh cgroup for one run, with its limits set: the one made ahead when there is one,
   * so that a run's start waits for no mkdir and no limit file. Never reused: a v1 memory
   * cgroup keeps the page cache a previous run touched charged to it, and v2's memory.peak
   * can only be reset on recent kernels (6.12); a fresh cgroup counts from zero everywhere.
   */
  async createRun(limits: CgroupLimits): Promise<RunCgroup> {
    const key = JSON.stringify(limits);
    const spare = this.spare;
    this.spare = undefined;
    let cgroup: RunCgroup | undefined;
    if (spare !== undefined) {
      const ready = await spare.cgroup.catch(() => undefined);
      if (spare.limits === key) cgroup = ready;
      else await ready?.remove();
    }
    cgroup ??= await this.make(limits);
    const next = this.make(limits);
    next.catch(() => {}); // taken (and its error seen) by the next run, or removed at close
    this.spare = { limits: key, cgroup: next };
    return cgroup;
  }

  private async make(limits: CgroupLimits): Promise<RunCgroup> {
    const runName = `run-${++this.made}-${randomBytes(4).toString('hex')}`;
    const dirs: Partial<Record<Hierarchy, string>> = {};
    const cg = new RunCgroup(this.host.version, dirs);
    try {
      await Promise.all(
        (Object.entries(this.dirs) as Array<[Hierarchy, string | null]>).map(async ([hierarchy, parent]) => {
          if (parent === null) return;
          const dir = path.join(parent, runName);
          await mkdir(dir);
          dirs[hierarchy] = dir;
        }),
      );
      await cg.setLimits(limits);
      return cg;
    } catch (error) {
      await cg.remove();
      throw error;
    }
  }

  async remove(): Promise<void> {
    await (await this.spare?.cgroup.catch(() => undefined))?.remove();
    this.spare = undefined;
    for (const dir of Object.values(this.dirs)) if (dir !== null) await removeTree(dir);
  }

  /** Removes the run cgroups left by executors of this host that are gone. */
  static async reapDead(host: CgroupHost): Promise<number> {
    const bases = host.version === 1 ? [host.memory, host.pids, host.cpuacct] : [host.dir];
    let reaped = 0;
    for (const base of bases) {
      if (base === null) continue;
      for (const name of await readdir(base).catch(() => [] as string[])) {
        const m = /^dollarclub-(\d+)-[0-9a-f]+$/.exec(name);
        if (m === null || pidExists(Number(m[1]))) continue;
        if (await removeTree(path.join(base, name))) reaped++;
      }
    }
    return reaped;
  }
}

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

/** rmdir, deepest first, retrying while the last processes are being reaped (EBUSY). */
async function removeTree(dir: string): Promise<boolean> {
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (entry.isDirectory()) await removeTree(path.join(dir, entry.name));
  }
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      await rmdir(dir);
      return true;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return true;
      if (code !== 'EBUSY') return false;
      const procs = await readText(path.join(dir, 'cgroup.procs'));
      for (const pid of procs.split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  return false;
}

/** v2: enables memory, pids and cpu below `dir`, moving this process into a leaf first if it must. */
function enableV2Controllers(dir: string): void {
  const control = path.join(dir, 'cgroup.subtree_control');
  const enabled = readFileSync(control, 'utf8');
  if (['memory', 'pids'].every((c) => enabled.includes(c))) return;
  try {
    writeFileSync(control, '+memory +pids +cpu');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EBUSY') throw error;
    const leaf = path.join(dir, `${PREFIX}executor-${process.pid}`);
    mkdirSync(leaf, { recursive: true });
    writeFileSync(path.join(leaf, 'cgroup.procs'), String(process.pid));
    writeFileSync(control, '+memory +pids +cpu');
  }
}

async function readText(file: string): Promise<string> {
  return readFile(file, 'utf8').catch(() => '');
}

async function readNumber(file: string): Promise<number | null> {
  const value = Number.parseInt(await readText(file), 10);
  return Number.isFinite(value) ? value : null;
}

async function exists(file: string): Promise<boolean> {
  return readFile(file).then(
    () => true,
    () => false,
  );
}

/** `key N` from a flat-keyed cgroup file. */
function keyed(text: string, key: string): number | null {
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : null;
}
