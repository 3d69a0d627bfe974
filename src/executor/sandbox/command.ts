/**
 * A policy (policy.ts) as a command line: the only place that knows the flags.
 *
 * With namespaces (bubblewrap):
 *   sh (join the run's cgroups, set its rlimits)  →  bwrap (namespaces, mounts, exactly the
 *   run's environment)  →  setpriv (the run's uid, no new privileges, parent-death signal)  →  the script
 * Without (SCRIPT_SANDBOX=off, or a host that offers none):
 *   [sh (join the cgroups)]  →  setpriv  →  prlimit  →  env -i  →  the script
 *
 * The cgroup is joined first, so that everything after it — the namespaces' init
 * included — is counted and limited. setpriv runs inside the namespaces, as root
 * (bubblewrap run by root keeps its capabilities and makes no user namespace), and
 * drops to the run's uid last: a uid change from root clears every capability.
 *
 * Every program in the chain costs a start (≈3–10 ms on a loaded 2-core machine), so the
 * sandboxed chain sets the rlimits with the shell's `ulimit` (rlimits survive exec and
 * the uid change; root's own processes are exempt from RLIMIT_NPROC, the run's uid is
 * not) and the environment with bubblewrap's `--clearenv`/`--setenv`, not with prlimit
 * and env: two programs fewer than the chain without namespaces.
 */

import { ENV_BIN, PRLIMIT_BIN, SETPRIV_BIN } from '../tools.js';
import { BWRAP_BIN } from './host.js';
import type { Mount, RunLimits, SandboxPolicy } from './policy.js';

/**
 * Sets the rlimits given as `ulimit` arguments, writes its own pid into each cgroup.procs
 * file given, then becomes the rest of the command.
 * Arguments: <ulimit args…> -- <n> <procs files…> <command…>
 */
const PREPARE = [
  'while [ "$1" != -- ]; do ulimit "$1" "$2" || exit 125; shift 2; done; shift',
  'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done',
  'exec "$@"',
].join('\n');

export function commandLine(policy: SandboxPolicy, cgroupProcs: string[] = []): string[] {
  if (policy.namespaces.length === 0) {
    const join = cgroupProcs.length > 0 ? prepare([], cgroupProcs) : [];
    return [...join, ...dropPrivileges(policy, { rlimits: true, env: true })];
  }
  return [...prepare(ulimits(policy.limits), cgroupProcs), ...bubblewrap(policy)];
}

function prepare(limits: string[], cgroupProcs: string[]): string[] {
  return ['/bin/sh', '-c', PREPARE, 'sh', ...limits, '--', String(cgroupProcs.length), ...cgroupProcs];
}

/** The rlimits as dash/POSIX `ulimit` options (each sets the soft and the hard limit). */
function ulimits(limits: RunLimits): string[] {
  return [
    '-v',
    String(Math.floor(limits.addressSpaceBytes / 1024)), // KiB
    '-t',
    String(limits.cpuSeconds),
    '-p',
    String(limits.maxProcesses),
    '-n',
    String(limits.maxOpenFiles),
    '-f',
    String(Math.floor(limits.maxFileBytes / 512)), // 512-byte blocks
    '-c',
    '0',
  ];
}

function bubblewrap(policy: SandboxPolicy): string[] {
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
  // The script's environment is exactly `env`, whatever the executor's own
  // environment holds or any wrapper (a test runner's spawn hook) adds.
  args.push('--clearenv');
  for (const [key, value] of Object.entries(policy.env)) args.push('--setenv', key, value);
  // The root itself (a tmpfs bubblewrap made) is read-only once everything is in place.
  args.push('--remount-ro', '/', '--chdir', policy.workDir, '--');
  return [...args, ...dropPrivileges(policy, { rlimits: false, env: false })];
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

/** setpriv to the run's uid; prlimit and env -i where nothing before in the chain set those. */
function dropPrivileges(policy: SandboxPolicy, wrap: { rlimits: boolean; env: boolean }): string[] {
  const { user, limits } = policy;
  const argv = [
    SETPRIV_BIN,
    ...(user ? [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups'] : []),
    '--no-new-privs',
    '--pdeathsig=KILL',
    '--',
  ];
  if (wrap.rlimits)
    argv.push(
      PRLIMIT_BIN,
      `--as=${limits.addressSpaceBytes}`,
      `--cpu=${limits.cpuSeconds}`,
      `--nproc=${limits.maxProcesses}`,
      `--nofile=${limits.maxOpenFiles}`,
      `--fsize=${limits.maxFileBytes}`,
      '--core=0',
      '--',
    );
  // The script's environment is exactly `env`, whatever the executor's own
  // environment holds or any wrapper (a test runner's spawn hook) adds.
  if (wrap.env)
    argv.push(ENV_BIN, '-i', ...Object.entries(policy.env).map(([key, value]) => `${key}=${value}`));
  return [...argv, ...policy.command];
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}
