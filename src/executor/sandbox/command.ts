/**
 * A policy (policy.ts) as a command line: the only place that knows the flags.
 *
 *   sh -c 'join the run's cgroups'  →  bwrap (namespaces, mounts)  →
 *   setpriv (the run's uid, no new privileges, parent-death signal)  →
 *   prlimit (per-process rlimits)  →  env -i (exactly the run's environment)  →  the script
 *
 * The cgroup is joined first, so that everything after it — the namespaces' init
 * included — is counted and limited. setpriv runs inside the namespaces, as root
 * (bubblewrap run by root keeps its capabilities and makes no user namespace), and
 * drops to the run's uid last: a uid change from root clears every capability.
 */

import { ENV_BIN, PRLIMIT_BIN, SETPRIV_BIN } from '../tools.js';
import { BWRAP_BIN } from './host.js';
import type { Mount, SandboxPolicy } from './policy.js';

/** Writes its own pid into each cgroup.procs file given, then becomes the rest of the command. */
const JOIN_CGROUPS =
  'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done; exec "$@"';

export function commandLine(policy: SandboxPolicy, cgroupProcs: string[] = []): string[] {
  const join =
    cgroupProcs.length > 0
      ? ['/bin/sh', '-c', JOIN_CGROUPS, 'sh', String(cgroupProcs.length), ...cgroupProcs]
      : [];
  return [...join, ...namespaces(policy), ...dropPrivileges(policy)];
}

function namespaces(policy: SandboxPolicy): string[] {
  if (policy.namespaces.length === 0) return [];
  const args = [BWRAP_BIN, '--die-with-parent'];
  for (const ns of policy.namespaces) {
    if (ns === 'pid') args.push('--unshare-pid');
    else if (ns === 'ipc') args.push('--unshare-ipc');
    else if (ns === 'uts') args.push('--unshare-uts', '--hostname', 'run');
    else if (ns === 'net') args.push('--unshare-net');
    else if (ns === 'cgroup') args.push('--unshare-cgroup-try');
    // 'mount': bubblewrap always makes one.
  }
  for (const mount of policy.mounts) args.push(...mountArgs(mount));
  // The root itself (a tmpfs bubblewrap made) is read-only once everything is in place.
  args.push('--remount-ro', '/', '--chdir', policy.workDir, '--');
  return args;
}

function mountArgs(mount: Mount): string[] {
  switch (mount.kind) {
    case 'ro-bind':
      return ['--ro-bind', mount.source, mount.target];
    case 'symlink':
      return ['--symlink', mount.target, mount.link];
    case 'tmpfs':
      return ['--size', String(mount.sizeBytes), '--perms', octal(mount.mode), '--tmpfs', mount.target];
    case 'dir':
      return ['--perms', octal(mount.mode), '--dir', mount.target];
    case 'proc':
      return ['--proc', mount.target];
    case 'dev':
      return ['--dev', mount.target];
  }
}

function dropPrivileges(policy: SandboxPolicy): string[] {
  const { user, limits } = policy;
  return [
    SETPRIV_BIN,
    ...(user ? [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups'] : []),
    '--no-new-privs',
    '--pdeathsig=KILL',
    '--',
    PRLIMIT_BIN,
    `--as=${limits.addressSpaceBytes}`,
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
    ...Object.entries(policy.env).map(([key, value]) => `${key}=${value}`),
    ...policy.command,
  ];
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}
