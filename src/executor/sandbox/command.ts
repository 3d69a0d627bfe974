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

import { ENV_BIN, PRLIMIT_BIN, SETPRIV_BIN } from '../tools.ts';
import { BWRAP_BIN, UNSHARE_BIN } from './host.ts';
import type { Mount, RunLimits, SandboxPolicy } from './policy.ts';

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
  const sandbox = policy.mechanism === 'bwrap' ? bubblewrap(policy) : unshare(policy);
  return [...prepare(ulimits(policy.limits), cgroupProcs), ...sandbox];
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
    case 'hide':
      // Only the unshare mechanism hides (bubblewrap's root holds nothing it did not list).
      return ['--perms', '0755', '--tmpfs', mount.target];
  }
}

/**
 * util-linux's unshare where bubblewrap is missing: the same namespaces, then a root shell
 * inside them (UNSHARE_SETUP) makes the host's mounts read-only, hides the listed folders
 * under empty tmpfs, mounts the private tmpfs and a minimal /dev, binds the script (and an
 * interpreter outside the system folders) read-only from descriptors opened before anything
 * hid them, and drops to the run's uid. unshare has no --die-with-parent: setpriv gives it
 * the parent-death signal, and --kill-child takes the namespace's init with it.
 */
function unshare(policy: SandboxPolicy): string[] {
  const flags: string[] = [];
  for (const ns of policy.namespaces) {
    if (ns === 'pid') flags.push('--pid', '--fork', '--kill-child', '--mount-proc');
    else if (ns === 'ipc') flags.push('--ipc');
    else if (ns === 'uts') flags.push('--uts');
    else if (ns === 'net') flags.push('--net');
    else if (ns === 'cgroup') flags.push('--cgroup');
    else if (ns === 'mount') flags.push('--mount', '--propagation', 'private');
  }
  const sources: string[] = [];
  const steps: string[] = [];
  for (const mount of policy.mounts) {
    if (mount.kind === 'ro-bind') {
      sources.push(mount.source);
      steps.push('bind', mount.target, '');
    } else if (mount.kind === 'tmpfs')
      steps.push('tmpfs', mount.target, `size=${mount.sizeBytes},mode=${octal(mount.mode)}`);
    else if (mount.kind === 'dir') steps.push('dir', mount.target, octal(mount.mode));
    else if (mount.kind === 'hide') steps.push('hide', mount.target, '');
    else if (mount.kind === 'dev') steps.push('dev', mount.target, '');
    // 'proc': unshare --mount-proc; 'symlink': bubblewrap's root only (the host's are there).
  }
  if (sources.length > UNSHARE_FDS.length)
    throw new Error(`the unshare sandbox binds at most ${UNSHARE_FDS.length} files or folders`);
  return [
    SETPRIV_BIN,
    '--pdeathsig=KILL',
    '--',
    UNSHARE_BIN,
    ...flags,
    '--',
    '/bin/sh',
    '-c',
    UNSHARE_SETUP,
    'sh',
    String(sources.length),
    ...sources,
    ...steps,
    '--',
    policy.workDir,
    // The rlimits are the outer shell's; the environment is env -i's.
    ...dropPrivileges(policy, { rlimits: false, env: true }),
  ];
}

/** Descriptors for the binds' sources (3 carries secrets to the script, 4 is left alone). */
const UNSHARE_FDS = [5, 6, 7, 8, 9];

/**
 * Runs as root inside the new namespaces. Arguments: the number of bind sources, the
 * sources, triples `<step> <target> <options>`, `--`, the working folder, the command.
 * Fails closed (set -e): a mount that cannot be made ends the run before the script starts.
 */
const UNSHARE_SETUP = `set -e
PATH=/usr/bin:/bin:/usr/sbin:/sbin
fd=5; n=$1; shift
while [ "$n" -gt 0 ]; do
  case $fd in 5) exec 5<"$1" ;; 6) exec 6<"$1" ;; 7) exec 7<"$1" ;; 8) exec 8<"$1" ;; 9) exec 9<"$1" ;; esac
  fd=$((fd + 1)); n=$((n - 1)); shift
done
mount -o remount,bind,ro /
for point in $(cut -d' ' -f5 /proc/self/mountinfo); do mount -o remount,bind,ro "$point" 2>/dev/null || true; done
fd=5
while [ "$1" != -- ]; do
  case "$1" in
    hide) if [ -d "$2" ]; then mount -t tmpfs -o size=64k,mode=0755,nosuid,nodev,noexec tmpfs "$2"; fi ;;
    tmpfs) mkdir -p "$2"; mount -t tmpfs -o "nosuid,nodev,$3" tmpfs "$2" ;;
    dir) [ -d "$2" ] || mkdir -m "$3" "$2" ;;
    bind)
      if [ -d "/proc/self/fd/$fd" ]; then mkdir -p "$2"; elif [ ! -e "$2" ]; then : > "$2"; fi
      mount --bind --no-canonicalize "/proc/self/fd/$fd" "$2"
      mount -o remount,bind,ro,nosuid,nodev "$2"
      fd=$((fd + 1)) ;;
    dev)
      mount -t tmpfs -o size=64k,mode=0755,nosuid,noexec tmpfs "$2"
      mknod -m 666 "$2/null" c 1 3; mknod -m 666 "$2/zero" c 1 5; mknod -m 666 "$2/full" c 1 7
      mknod -m 666 "$2/random" c 1 8; mknod -m 666 "$2/urandom" c 1 9; mknod -m 666 "$2/tty" c 5 0
      ln -s /proc/self/fd "$2/fd"; ln -s /proc/self/fd/0 "$2/stdin"
      ln -s /proc/self/fd/1 "$2/stdout"; ln -s /proc/self/fd/2 "$2/stderr" ;;
  esac
  shift 3
done
shift
cd "$1"; shift
exec 5<&- 6<&- 7<&- 8<&- 9<&-
exec "$@"`;

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
