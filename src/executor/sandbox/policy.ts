/**
 * The whole world of one run, as data: which namespaces it gets, what is mounted
 * where, its limits, uid, environment and command. `policyFor` decides it from the
 * configuration and the run; command.ts turns it into a command line, and nothing
 * else knows a flag. Modelled on bubblewrap/nsjail/isolate: start from nothing and
 * list what the run may see (a whitelist), rather than hide parts of the host.
 */
import { existsSync, lstatSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import path from 'node:path';
import type { SandboxUser } from '../process-group.ts';

export type Namespace = 'pid' | 'ipc' | 'uts' | 'mount' | 'net' | 'cgroup';

export type Mount =
  | { kind: 'ro-bind'; source: string; target: string }
  | { kind: 'symlink'; link: string; target: string }
  | { kind: 'tmpfs'; target: string; sizeBytes: number; mode: number }
  | { kind: 'dir'; target: string; mode: number }
  | { kind: 'proc'; target: string }
  | { kind: 'dev'; target: string }
  /** unshare only: an empty root-owned tmpfs over a host folder the run must not see. */
  | { kind: 'hide'; target: string };

/** How the namespaces are made: bubblewrap, or util-linux's unshare where bubblewrap is missing. */
export type Mechanism = 'bwrap' | 'unshare';

export interface RunLimits {
  /** RLIMIT_AS of each process (the cgroup holds the run's total). */
  addressSpaceBytes: number;
  cpuSeconds: number;
  maxProcesses: number;
  maxOpenFiles: number;
  maxFileBytes: number;
}

export interface SandboxPolicy {
  /** Empty: no namespaces (SCRIPT_SANDBOX=off, or a host that cannot make them). */
  namespaces: Namespace[];
  mechanism: Mechanism;
  /**
   * In order. bwrap: the root of the run is an empty read-only tmpfs holding only these.
   * unshare: the host's root, made read-only, with these mounted on it (hidden folders first).
   */
  mounts: Mount[];
  /** Where the run starts, inside: the scratch folder (a capped tmpfs holding the script). */
  workDir: string;
  user?: SandboxUser;
  limits: RunLimits;
  env: Record<string, string>;
  command: string[];
}

/** What the run may read of the host: the system's programs and libraries, and a few files of /etc. */
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];
/** Name resolution, certificates, time zone, users (for getpwuid), the dynamic linker, Python's config. */
const ETC_ENTRIES = [
  'alternatives',
  'ca-certificates',
  'ca-certificates.conf',
  'gai.conf',
  'group',
  'host.conf',
  'hosts',
  'ld.so.cache',
  'ld.so.conf',
  'ld.so.conf.d',
  'localtime',
  'mime.types',
  'nsswitch.conf',
  'passwd',
  'protocols',
  'resolv.conf',
  'services',
  'ssl',
  'timezone',
];

/**
 * What the unshare mechanism hides under an empty tmpfs (it keeps the host's root, read-only,
 * where bubblewrap builds one from a whitelist): home folders, services' state and logs
 * (PostgreSQL's data in /var/lib), run-time sockets and locks (/run), mounts, /sys.
 */
const UNSHARE_HIDDEN = [
  '/boot',
  '/home',
  '/media',
  '/mnt',
  '/opt',
  '/root',
  '/run',
  '/srv',
  '/sys',
  '/var/backups',
  '/var/cache',
  '/var/lib',
  '/var/log',
  '/var/mail',
  '/var/spool',
];

export interface PolicyInput {
  namespaces: boolean;
  /** bwrap unless said otherwise. */
  mechanism?: Mechanism;
  /** unshare: the app's own folders to hide besides UNSHARE_HIDDEN (storage, data, code, executor's folder). */
  hide?: string[];
  network: 'internet' | 'none';
  /** The run's scratch folder on the host, holding `entry`; the same path inside. */
  scratchDir: string;
  entry: string;
  tmpBytes: number;
  /** Interpreters (PYTHON_BIN, NODE_BIN): their installation is mounted if outside /usr. */
  interpreters: string[];
  user?: SandboxUser;
  limits: RunLimits;
  env: Record<string, string>;
  command: string[];
}

/** The namespaces of every run (and the start-up log's list of them). */
export function runNamespaces(network: PolicyInput['network']): Namespace[] {
  const namespaces: Namespace[] = ['pid', 'ipc', 'uts', 'mount', 'cgroup'];
  if (network === 'none') namespaces.push('net');
  return namespaces;
}

export function policyFor(input: PolicyInput): SandboxPolicy {
  const mechanism = input.mechanism ?? 'bwrap';
  const base = {
    mechanism,
    workDir: input.scratchDir,
    user: input.user,
    limits: input.limits,
    command: input.command,
  };
  if (!input.namespaces) return { ...base, namespaces: [], mounts: [], env: input.env };
  const namespaces = runNamespaces(input.network);
  const tmpfs = (target: string, mode: number): Mount => ({
    kind: 'tmpfs',
    target,
    sizeBytes: input.tmpBytes,
    mode,
  });
  const { system, interpreters } = hostMounts(input.interpreters);
  const mounts: Mount[] =
    mechanism === 'bwrap'
      ? [...system]
      : // Outer folders first: a folder inside one already hidden is hidden with it.
        [...new Set([...UNSHARE_HIDDEN, ...(input.hide ?? [])])]
          .filter(hideable)
          .sort((a, b) => a.length - b.length)
          .map((target): Mount => ({ kind: 'hide', target }));
  mounts.push(
    { kind: 'proc', target: '/proc' },
    { kind: 'dev', target: '/dev' },
    tmpfs('/dev/shm', 0o1777),
    tmpfs('/tmp', 0o1777),
    { kind: 'dir', target: '/var', mode: 0o755 },
    tmpfs('/var/tmp', 0o1777),
    // After the private /tmp and /var/tmp: an interpreter installed under one of them
    // (a CI job's Node.js in a temporary folder) stays visible, read-only.
    ...interpreters,
    // The scratch folder keeps its host path (under the private /tmp when it lives in /tmp),
    // so the executor still finds a run's processes by their working folder.
    ...parents(input.scratchDir).map((dir): Mount => ({ kind: 'dir', target: dir, mode: 0o755 })),
    // Writable by the run only: the run's uid is the only non-root user inside.
    tmpfs(input.scratchDir, 0o777),
    {
      kind: 'ro-bind',
      source: path.join(input.scratchDir, input.entry),
      target: path.join(input.scratchDir, input.entry),
    },
  );
  return { ...base, namespaces, mounts, env: { ...input.env, TMPDIR: '/tmp' } };
}

/** Never hidden: the root, what a run needs of the host, and what the sandbox mounts itself. */
function hideable(target: string): boolean {
  const kept = ['/', ...SYSTEM_DIRS, '/etc', '/proc', '/dev', '/tmp', '/var', '/var/tmp'];
  return path.isAbsolute(target) && !kept.some((dir) => dir === target || dir.startsWith(`${target}/`));
}

interface HostMounts {
  /** The system folders and /etc. */
  system: Mount[];
  /** Interpreters outside the system folders: mounted last, so no tmpfs hides them. */
  interpreters: Mount[];
}

let cachedHostMounts: { key: string; mounts: HostMounts } | undefined;

/**
 * What every run sees of the host: the same for every run of an executor, so looked up
 * once (a run's start should not walk /etc).
 */
function hostMounts(interpreters: string[]): HostMounts {
  const key = interpreters.join('\0');
  if (cachedHostMounts?.key !== key) {
    const system: Mount[] = [...systemMounts(), { kind: 'dir', target: '/etc', mode: 0o755 }, ...etcMounts()];
    cachedHostMounts = { key, mounts: { system, interpreters: interpreterMounts(interpreters) } };
  }
  return cachedHostMounts.mounts;
}

/** /usr and the top-level folders of the host as they are: real folders bound, merged-/usr links re-made. */
function systemMounts(): Mount[] {
  const mounts: Mount[] = [];
  for (const dir of SYSTEM_DIRS) {
    const stat = lstatSync(dir, { throwIfNoEntry: false });
    if (stat?.isSymbolicLink()) mounts.push({ kind: 'symlink', link: dir, target: readlinkSync(dir) });
    else if (stat?.isDirectory()) mounts.push({ kind: 'ro-bind', source: dir, target: dir });
  }
  return mounts;
}

function etcMounts(): Mount[] {
  const present = new Set(readdirSync('/etc'));
  return ETC_ENTRIES.filter((name) => present.has(name))
    .concat([...present].filter((name) => /^python3(\.\d+)?$/.test(name)))
    .map((name) => ({ kind: 'ro-bind', source: `/etc/${name}`, target: `/etc/${name}` }));
}

/** An interpreter outside the system folders (nvm, /opt, a package's binary): its installation, read-only. */
function interpreterMounts(binaries: string[]): Mount[] {
  const mounts: Mount[] = [];
  for (const binary of binaries) {
    if (!existsSync(binary)) continue;
    const real = realpathSync(binary);
    if (SYSTEM_DIRS.some((dir) => real.startsWith(`${dir}/`))) continue;
    const bin = path.dirname(real);
    const root = path.basename(bin) === 'bin' ? path.dirname(bin) : bin;
    mounts.push(...traversable(root), { kind: 'ro-bind', source: root, target: root });
    // A link outside the system folders (nvm's `current`): the same link inside.
    if (real !== binary && !SYSTEM_DIRS.some((dir) => binary.startsWith(`${dir}/`)))
      mounts.push(...traversable(binary), { kind: 'ro-bind', source: real, target: binary });
  }
  return mounts;
}

/** Folders the sandbox makes itself; an interpreter's parents below them are made here. */
const SANDBOX_DIRS = new Set(['/tmp', '/var', '/var/tmp', '/dev', '/dev/shm', '/proc', '/etc']);

/**
 * The parents of `target` as plain 0755 folders. bubblewrap would otherwise copy each
 * parent's mode from the host, and a private parent (a 0700 temporary folder, /root of
 * an nvm install) would keep the run's uid from reaching the interpreter.
 */
function traversable(target: string): Mount[] {
  return parents(target)
    .filter((dir) => !SANDBOX_DIRS.has(dir) && !SYSTEM_DIRS.includes(dir))
    .map((dir): Mount => ({ kind: 'dir', target: dir, mode: 0o755 }));
}

/** /a/b/c → ['/a', '/a/b'] */
function parents(dir: string): string[] {
  const out: string[] = [];
  for (let p = path.dirname(dir); p !== '/'; p = path.dirname(p)) out.unshift(p);
  return out;
}
