/**
 * The sandbox of runs: decided once at the executor's start from the configuration
 * and what the host offers (host.ts), logged there, then applied to every run.
 *
 * - namespaces and file system: bubblewrap (policy.ts, command.ts);
 * - per-run totals: a cgroup per run (cgroup.ts), else a watchdog (watchdog.ts);
 * - network: nftables rules for the executor's uids (network.ts), or an empty
 *   network namespace (SCRIPT_NETWORK=none).
 *
 * A host that offers none of it: a production executor refuses to start (unless
 * SCRIPT_SANDBOX=off says so explicitly), a development one runs scripts with the
 * older protections (a uid per run, rlimits) and says so loudly.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../../config.ts';
import type { SandboxUser } from '../process-group.ts';
import { CgroupParent, type RunCgroup } from './cgroup.ts';
import { commandLine } from './command.ts';
import { detectHost, type HostFeatures } from './host.ts';
import { NetworkRules, nameServers, parseAllowList } from './network.ts';
import { type Mechanism, policyFor, type RunLimits } from './policy.ts';
import { sample } from './watchdog.ts';

export type { RunLimits } from './policy.ts';

/** Why the sandbox killed a run: its total memory or CPU time crossed the limit. */
export type LimitReason = 'memory' | 'cpu';

export interface Measurements {
  /** The run's peak total (cgroup peak, or the watchdog's largest sum); null: not measured. */
  peakMemoryMb: number | null;
  /** CPU time of all the run's processes; null: not measured here (GNU time's is used). */
  cpuSeconds: number | null;
  /** The kernel killed a process of the run at its memory total. */
  memoryExceeded: boolean;
}

/** One run's sandbox, as the runner uses it. */
export interface Confinement {
  /** Everything between GNU time and the script (see command.ts). */
  argv: string[];
  /** bubblewrap reports a death by signal N as exit code 128 + N. */
  signalAsExitCode: boolean;
  /**
   * The run's totals (peak memory, CPU time) are the kernel's (a cgroup): GNU time, which
   * would only measure the same less well, is left out of the chain (one program less).
   */
  measuresItself: boolean;
  /** Starts watching the run's totals; `kill` ends the run when one crosses its limit. */
  watch(pgid: number, kill: (reason: LimitReason) => void): void;
  /** SIGKILL to every process of the run (with a cgroup: whatever left the process group). */
  kill(): Promise<void>;
  /** Stops watching, reads the totals, removes the cgroup. Idempotent. */
  finish(): Promise<Measurements>;
}

export interface RunSpec {
  /** Unique among the executor's runs (the scratch folder's name). */
  name: string;
  scratchDir: string;
  /** The script's file in the scratch folder. */
  entry: string;
  user?: SandboxUser;
  env: Record<string, string>;
  command: string[];
  limits: RunLimits;
}

/** What protects runs on this host: logged at start, and by tests. */
export interface Protections {
  namespaces: boolean;
  /** What makes the namespaces: bubblewrap, or util-linux's unshare where bubblewrap is missing. */
  mechanism: Mechanism | null;
  cgroup: 'v1' | 'v2' | null;
  network: 'nftables' | 'namespace' | null;
  /** What is missing, and why. */
  missing: string[];
}

const WATCH_MS = 250;

export interface SandboxOptions {
  config: Config;
  log: Logger;
  /** The uid the executor runs as. */
  processUid: number;
  /** The uids of runs this executor holds (as root). */
  users: SandboxUser[];
  /**
   * Tests only: hold the runs' totals with the watchdog even where a cgroup could be made,
   * so that the fallback of hosts without a writable cgroup is exercised on this one.
   */
  forceWatchdog?: boolean;
}

export class Sandbox {
  /** Runs' sandboxes whose cgroups may still be being removed. */
  private readonly confinements = new Set<RunConfinement>();

  private readonly config: Config;
  readonly protections: Protections;
  private readonly cgroups: CgroupParent | null;
  private readonly network: NetworkRules | null;

  private constructor(
    config: Config,
    protections: Protections,
    cgroups: CgroupParent | null,
    network: NetworkRules | null,
  ) {
    this.config = config;
    this.protections = protections;
    this.cgroups = cgroups;
    this.network = network;
  }

  static async open(options: SandboxOptions): Promise<Sandbox> {
    const { config, log } = options;
    const production = config.NODE_ENV === 'production';
    const host: HostFeatures =
      config.SCRIPT_SANDBOX === 'off'
        ? {
            root: options.processUid === 0,
            bwrap: 'SCRIPT_SANDBOX=off',
            unshare: 'SCRIPT_SANDBOX=off',
            cgroup: 'SCRIPT_SANDBOX=off',
            nft: 'SCRIPT_SANDBOX=off',
          }
        : detectHost(options.processUid);
    const missing: string[] = [];
    // bubblewrap where it works; util-linux's unshare where it does not (auto) or when asked.
    const wanted = config.SCRIPT_SANDBOX;
    let mechanism: Mechanism | null = null;
    if ((wanted === 'auto' || wanted === 'bwrap') && host.bwrap === true) mechanism = 'bwrap';
    else if ((wanted === 'auto' || wanted === 'unshare') && host.unshare === true) mechanism = 'unshare';
    if (wanted === 'bwrap' && mechanism === null) throw new Error(`SCRIPT_SANDBOX=bwrap: ${host.bwrap}`);
    if (wanted === 'unshare' && mechanism === null)
      throw new Error(`SCRIPT_SANDBOX=unshare: ${host.unshare}`);
    const namespaces = mechanism !== null;
    if (!namespaces) missing.push(`namespaces and a private file system: ${host.bwrap}; ${host.unshare}`);
    else if (mechanism === 'unshare')
      missing.push(
        `a whitelisted file system (${wanted === 'unshare' ? 'SCRIPT_SANDBOX=unshare' : host.bwrap}): with unshare a run ` +
          'sees the host’s root read-only, minus the hidden folders (docs/executor.md)',
      );

    let cgroups: CgroupParent | null = null;
    if (options.forceWatchdog)
      missing.push('a cgroup per run (a watchdog sums the run’s processes instead): forced by a test');
    else if (typeof host.cgroup === 'string')
      missing.push(`a cgroup per run (a watchdog sums the run's processes instead): ${host.cgroup}`);
    else {
      try {
        const reaped = await CgroupParent.reapDead(host.cgroup);
        if (reaped > 0) log.warn({ reaped }, 'removed the run cgroups of dead executors');
        cgroups = CgroupParent.create(host.cgroup);
      } catch (error) {
        missing.push(`a cgroup per run (a watchdog sums the run's processes instead): ${String(error)}`);
      }
    }

    let network: NetworkRules | null = null;
    let networkProtection: Protections['network'] = null;
    if (config.SCRIPT_NETWORK === 'none') {
      if (namespaces) networkProtection = 'namespace';
      else missing.push('SCRIPT_NETWORK=none needs a network namespace: runs use the host network');
    } else {
      const allow = [...parseAllowList(config.SCRIPT_NETWORK_ALLOW), ...nameServers()];
      if (host.nft !== true)
        missing.push(`network rules (runs reach loopback and private addresses): ${host.nft}`);
      else if (options.users.length === 0) missing.push('network rules need uids of runs (root)');
      else {
        const reaped = NetworkRules.reapDead();
        if (reaped.length > 0) log.warn({ tables: reaped }, 'removed the nftables tables of dead executors');
        network = NetworkRules.install(
          options.users.map((u) => u.uid),
          allow,
        );
        networkProtection = 'nftables';
      }
    }

    const protections: Protections = {
      namespaces,
      mechanism,
      cgroup: cgroups ? (cgroups.host.version === 1 ? 'v1' : 'v2') : null,
      network: networkProtection,
      missing,
    };
    const sandbox = new Sandbox(config, protections, cgroups, network);
    const complete = missing.length === 0;
    if (!complete && production && config.SCRIPT_SANDBOX === 'auto' && !namespaces) {
      await sandbox.close();
      throw new Error(
        `this host cannot sandbox scripts: ${missing.join('; ')}. Install bubblewrap and run the executor ` +
          'as root (in a container: see docs/executor.md), or set SCRIPT_SANDBOX=off to accept runs with a uid ' +
          'and rlimits only, or EXECUTOR_ENABLED=false',
      );
    }
    if (!complete && production && config.SCRIPT_NETWORK === 'internet' && network === null) {
      await sandbox.close();
      throw new Error(
        `runs would reach the database, loopback and private addresses: ${missing.join('; ')}. ` +
          'Install nftables and run the executor as root, or set SCRIPT_NETWORK=none',
      );
    }
    const summary = {
      namespaces:
        mechanism === 'bwrap'
          ? `bubblewrap: pid, ipc, uts, mount${config.SCRIPT_NETWORK === 'none' ? ', net' : ''}; read-only system folders, private tmpfs of ${config.SCRIPT_TMP_MB} MB`
          : mechanism === 'unshare'
            ? `unshare (util-linux): pid, ipc, uts, mount${config.SCRIPT_NETWORK === 'none' ? ', net' : ''}; the host's root read-only with private folders hidden, private tmpfs of ${config.SCRIPT_TMP_MB} MB`
            : 'none',
      totals: protections.cgroup ? `cgroup ${protections.cgroup} per run` : 'watchdog over /proc',
      network:
        network !== null
          ? `nftables table ${network.table}: public addresses only`
          : networkProtection === 'namespace'
            ? 'none (empty network namespace)'
            : 'the host network, unfiltered',
    };
    if (complete) log.info(summary, 'sandbox: every protection is active');
    else
      log.warn(
        { ...summary, missing },
        `SANDBOX INCOMPLETE: ${missing.join('; ')}. Never run untrusted scripts like this`,
      );
    return sandbox;
  }

  /** The sandbox of one run: its cgroup is made now. */
  async confine(run: RunSpec): Promise<Confinement> {
    const { config } = this;
    const policy = policyFor({
      namespaces: this.protections.namespaces,
      mechanism: this.protections.mechanism ?? 'bwrap',
      // unshare keeps the host's root: the app's own folders are hidden (bubblewrap never mounts them).
      hide: [
        path.resolve(config.STORAGE_DIR),
        path.resolve('.data'),
        process.cwd(),
        path.resolve(config.EXECUTOR_WORK_DIR),
        path.dirname(run.scratchDir),
      ],
      network: config.SCRIPT_NETWORK,
      scratchDir: run.scratchDir,
      entry: run.entry,
      tmpBytes: config.SCRIPT_TMP_MB * 1024 * 1024,
      interpreters: [config.PYTHON_BIN, config.NODE_BIN],
      user: run.user,
      limits: run.limits,
      env: run.env,
      command: run.command,
    });
    const memoryBytes = config.SCRIPT_MEMORY_MB * 1024 * 1024;
    const cgroup = await this.cgroups?.createRun({
      memoryBytes,
      maxProcesses: config.SCRIPT_MAX_PROCESSES,
    });
    const confinement = new RunConfinement(
      policy.namespaces.length > 0,
      commandLine(policy, cgroup?.procsFiles),
      cgroup ?? null,
      {
        user: run.user,
        memoryBytes,
        cpuSeconds: config.SCRIPT_CPU_SECONDS,
      },
      () => this.confinements.delete(confinement),
    );
    this.confinements.add(confinement);
    return confinement;
  }

  /** Removes the executor's cgroups and network table (once no run is left). */
  async close(): Promise<void> {
    await Promise.all([...this.confinements].map((c) => c.removal?.catch(() => {})));
    this.confinements.clear();
    this.network?.remove();
    await this.cgroups?.remove();
  }
}

class RunConfinement implements Confinement {
  private timer: NodeJS.Timeout | undefined;
  private peakBytes = 0;
  private cpuSeconds = 0;
  private finished: Promise<Measurements> | undefined;
  private pgid: number | undefined;
  readonly measuresItself: boolean;
  /** The cgroup's removal, once the run ended. */
  removal: Promise<void> | undefined;

  readonly signalAsExitCode: boolean;
  readonly argv: string[];
  private readonly cgroup: RunCgroup | null;
  private readonly limits: { user?: SandboxUser; memoryBytes: number; cpuSeconds: number };
  /** Called once nothing of the run is left (its cgroup removed). */
  private readonly gone: () => void;

  constructor(
    signalAsExitCode: boolean,
    argv: string[],
    cgroup: RunCgroup | null,
    limits: { user?: SandboxUser; memoryBytes: number; cpuSeconds: number },
    gone: () => void,
  ) {
    this.signalAsExitCode = signalAsExitCode;
    this.argv = argv;
    this.cgroup = cgroup;
    this.limits = limits;
    this.gone = gone;
    this.measuresItself = cgroup !== null;
  }

  watch(pgid: number, kill: (reason: LimitReason) => void): void {
    this.pgid = pgid;
    let busy = false;
    this.timer = setInterval(() => {
      if (busy) return;
      busy = true;
      void this.look()
        .then((over) => {
          if (over) kill(over);
        })
        .catch(() => {})
        .finally(() => {
          busy = false;
        });
    }, WATCH_MS);
    this.timer.unref();
  }

  async kill(): Promise<void> {
    await this.cgroup?.kill();
  }

  finish(): Promise<Measurements> {
    this.finished ??= (async () => {
      clearInterval(this.timer);
      if (this.cgroup === null) {
        this.gone();
        return {
          peakMemoryMb: this.peakBytes > 0 ? this.peakBytes / 1024 / 1024 : null,
          cpuSeconds: this.cpuSeconds > 0 ? this.cpuSeconds : null,
          memoryExceeded: false,
        };
      }
      const usage = await this.cgroup.usage();
      // The measurements are what the run waits for; the cgroup goes meanwhile (the
      // executor's close awaits it).
      this.removal = this.cgroup
        .kill()
        .then(() => this.cgroup?.remove())
        .then(() => {})
        .finally(this.gone);
      return {
        peakMemoryMb: usage.peakBytes === null ? null : usage.peakBytes / 1024 / 1024,
        cpuSeconds: usage.cpuSeconds,
        memoryExceeded: usage.oomKills > 0,
      };
    })();
    return this.finished;
  }

  /** One look at the totals: the limit crossed, if any. */
  private async look(): Promise<LimitReason | null> {
    if (this.cgroup !== null) {
      const usage = await this.cgroup.usage();
      // The kernel already killed one process at the limit; the run goes with it.
      if (usage.oomKills > 0) return 'memory';
      if (usage.cpuSeconds !== null && usage.cpuSeconds > this.limits.cpuSeconds) return 'cpu';
      return null;
    }
    const now = await sample(this.limits.user ? { uid: this.limits.user.uid } : { pgid: this.pgid });
    this.peakBytes = Math.max(this.peakBytes, now.bytes);
    this.cpuSeconds = Math.max(this.cpuSeconds, now.cpuSeconds);
    if (now.bytes > this.limits.memoryBytes) return 'memory';
    if (now.cpuSeconds > this.limits.cpuSeconds) return 'cpu';
    return null;
  }
}
