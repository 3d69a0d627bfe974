/**
 * The sandbox of runs: decided once at the executor's start from the configuration
 * and what the host offers (protections.ts, host.ts), then applied to every run:
 * `confine` turns a run into its policy (policy.ts), its command line (command.ts)
 * and its cgroup, watched by its confinement (confinement.ts).
 *
 * - namespaces and file system: bubblewrap (policy.ts, command.ts);
 * - per-run totals: a cgroup per run (cgroup-parent.ts, run-cgroup.ts), else a watchdog
 *   (watchdog.ts);
 * - network: nftables rules for the executor's uids (network.ts), or an empty
 *   network namespace (SCRIPT_NETWORK=none).
 *
 * A host that offers none of it: a production executor refuses to start (unless
 * SCRIPT_SANDBOX=off says so explicitly), a development one runs scripts with the
 * older protections (a uid per run, rlimits) and says so loudly.
 */
import path from 'node:path';
import type { Config } from '../../config.ts';
import type { SandboxUser } from '../process-group.ts';
import type { CgroupParent } from './cgroup-parent.ts';
import { commandLine } from './command.ts';
import { type Confinement, RunConfinement } from './confinement.ts';
import type { NetworkRules } from './network.ts';
import { policyFor, type RunLimits } from './policy.ts';
import { chooseProtections, type Protections, type SandboxOptions } from './protections.ts';

export type { RunLimits } from './policy.ts';

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
    const { protections, cgroups, network } = await chooseProtections(options);
    return new Sandbox(options.config, protections, cgroups, network);
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
