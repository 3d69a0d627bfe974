/**
 * What protects runs on this host, decided once at the executor's start: the
 * mechanism of the namespaces (bubblewrap, else util-linux's unshare), a cgroup per
 * run or the watchdog, nftables rules or an empty network namespace — from the
 * configuration and what the host offers (host.ts). Logged here; a production
 * executor that would run scripts unprotected refuses to start.
 */
import type { Logger } from 'pino';
import type { Config } from '../../config.ts';
import type { SandboxUser } from '../process-group.ts';
import { CgroupParent } from './cgroup-parent.ts';
import { detectHost, type HostFeatures } from './host.ts';
import { NetworkRules, nameServers, parseAllowList } from './network.ts';
import { type Mechanism, runNamespaces } from './policy.ts';

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

/** The protections chosen, and the executor's cgroups and network rules they hold. */
export interface ChosenProtections {
  protections: Protections;
  cgroups: CgroupParent | null;
  network: NetworkRules | null;
}

/** Detects the host, sets up the executor's cgroups and network rules, logs what is active. */
export async function chooseProtections(options: SandboxOptions): Promise<ChosenProtections> {
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
  if (wanted === 'unshare' && mechanism === null) throw new Error(`SCRIPT_SANDBOX=unshare: ${host.unshare}`);
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
  const release = async () => {
    network?.remove();
    await cgroups?.remove();
  };
  const complete = missing.length === 0;
  if (!complete && production && config.SCRIPT_SANDBOX === 'auto' && !namespaces) {
    await release();
    throw new Error(
      `this host cannot sandbox scripts: ${missing.join('; ')}. Install bubblewrap and run the executor ` +
        'as root (in a container: see docs/executor.md), or set SCRIPT_SANDBOX=off to accept runs with a uid ' +
        'and rlimits only, or EXECUTOR_ENABLED=false',
    );
  }
  if (!complete && production && config.SCRIPT_NETWORK === 'internet' && network === null) {
    await release();
    throw new Error(
      `runs would reach the database, loopback and private addresses: ${missing.join('; ')}. ` +
        'Install nftables and run the executor as root, or set SCRIPT_NETWORK=none',
    );
  }
  if (production && config.SCRIPT_NETWORK === 'none' && networkProtection === null) {
    await release();
    throw new Error(
      'SCRIPT_NETWORK=none needs a network namespace, and runs get none here (SCRIPT_SANDBOX=off, or neither ' +
        'bubblewrap nor unshare): they would use the host network unfiltered. Let SCRIPT_SANDBOX give them ' +
        'namespaces, or set SCRIPT_NETWORK=internet with nftables',
    );
  }
  // Read from the policy every run gets, so the log cannot claim a namespace a run lacks.
  const kinds = runNamespaces(config.SCRIPT_NETWORK).join(', ');
  const summary = {
    namespaces:
      mechanism === 'bwrap'
        ? `bubblewrap: ${kinds}; read-only system folders, private tmpfs of ${config.SCRIPT_TMP_MB} MB`
        : mechanism === 'unshare'
          ? `unshare (util-linux): ${kinds}; the host's root read-only with private folders hidden, private tmpfs of ${config.SCRIPT_TMP_MB} MB`
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
  return { protections, cgroups, network };
}
