/**
 * A cgroup per run: the run's totals (memory with its tmpfs pages, processes, CPU
 * time) are the kernel's, whatever the run forks. cgroup v2 where the host has it
 * (memory.max, pids.max, memory.peak, memory.events, cpu.stat, cgroup.kill), v1
 * otherwise (the memory, pids and cpuacct hierarchies, each mounted apart). This file
 * holds the executor's folder of them; one run's cgroup is run-cgroup.ts, where the
 * folder may go cgroup-detect.ts.
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
import { mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { pidExists } from '../../proc.ts';
import type { CgroupHost } from './cgroup-detect.ts';
import { removeTree } from './cgroup-fs.ts';
import { type CgroupLimits, type Hierarchy, RunCgroup } from './run-cgroup.ts';

const PREFIX = 'dollarclub-';

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
