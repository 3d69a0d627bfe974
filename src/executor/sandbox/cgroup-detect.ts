/**
 * Where this process may create cgroups for its runs: its own cgroup in the memory
 * hierarchy of cgroup v1 (and the pids and cpuacct ones, each mounted apart), else in
 * cgroup v2's one tree when it offers the memory controller — found from
 * /proc/self/mountinfo and /proc/self/cgroup, inside a cgroup namespace too.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

export type CgroupHost =
  | { version: 1; memory: string; pids: string | null; cpuacct: string | null }
  | { version: 2; dir: string };

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
