/**
 * SCRIPT_NETWORK=internet: a run may open connections to public addresses only.
 *
 * Chosen: nftables rules on the host's own network, matching the uids runs get
 * (`meta skuid`), rather than a network namespace per run with a veth pair and NAT.
 * A uid of its own per run already exists (uid-pool.ts), the rules are one table
 * installed once per executor (nothing per run: no start-up cost, nothing to leave
 * behind when a run dies), and they need no IP forwarding or NAT, which are
 * host-wide settings an executor should not change. What it costs: a run shares the
 * host's network namespace, so abstract unix sockets of host services stay
 * reachable (filesystem ones are not mounted in the sandbox).
 *
 * Locally generated packets pass the `output` hook with the socket's owner; for
 * the executor's uids, in order: the allow-list (SCRIPT_NETWORK_ALLOW, and the
 * name servers of /etc/resolv.conf on port 53) is accepted; the host's own
 * addresses (`fib daddr type local`: every address of every interface), loopback,
 * RFC 1918, RFC 6598, link-local (169.254.169.254 included), ULA, multicast and
 * the other special ranges are refused at once (a TCP reset: connect() fails with
 * ECONNREFUSED rather than timing out; ICMP admin-prohibited for the rest).
 *
 * The table is the executor's own (`dollarclub_<pid>_<random>`, family inet),
 * deleted at stop; tables of dead executors are deleted at the next start.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { pidExists } from '../../proc.ts';
import { NFT_BIN } from './host.ts';

/** Where a run must not connect (besides the host's own addresses). */
export const REFUSED_IPV4 = [
  '0.0.0.0/8', // "this network"
  '10.0.0.0/8', // RFC 1918
  '100.64.0.0/10', // RFC 6598 carrier-grade NAT
  '127.0.0.0/8', // loopback
  '169.254.0.0/16', // link-local, cloud metadata (169.254.169.254)
  '172.16.0.0/12', // RFC 1918
  '192.0.0.0/24', // IETF protocol assignments
  '192.168.0.0/16', // RFC 1918
  '198.18.0.0/15', // benchmarking
  '224.0.0.0/3', // multicast, reserved, broadcast
];
export const REFUSED_IPV6 = [
  '::/127', // unspecified, loopback
  '::ffff:0:0/96', // IPv4-mapped
  '64:ff9b::/96', // NAT64 (would reach IPv4 private ranges)
  '64:ff9b:1::/48', // local-use NAT64
  'fc00::/7', // ULA
  'fe80::/10', // link-local
  'ff00::/8', // multicast
];

export interface AllowRule {
  family: 4 | 6;
  /** An address or a CIDR. */
  address: string;
  port?: number;
}

/** SCRIPT_NETWORK_ALLOW: `10.0.0.0/8`, `192.168.1.5`, `127.0.0.1:4002`, `[::1]:4002`, `fd00::/8`. */
export function parseAllowList(text: string): AllowRule[] {
  const rules: AllowRule[] = [];
  for (const raw of text.split(',').map((s) => s.trim())) {
    if (raw === '') continue;
    const bad = () => new Error(`SCRIPT_NETWORK_ALLOW: "${raw}" is not a CIDR, an address or address:port`);
    let address = raw;
    let port: number | undefined;
    const bracketed = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(raw);
    const v4port = /^([0-9.]+):(\d+)$/.exec(raw);
    if (bracketed || v4port) {
      const m = (bracketed ?? v4port) as RegExpExecArray;
      address = m[1] as string;
      port = Number(m[2]);
      if (!(port >= 1 && port <= 65535)) throw bad();
    }
    const [ip, prefix, ...extra] = address.split('/');
    const family = isIP(ip ?? '');
    if (family === 0 || extra.length > 0) throw bad();
    if (prefix !== undefined) {
      const bits = Number(prefix);
      if (port !== undefined || !/^\d+$/.test(prefix) || bits > (family === 4 ? 32 : 128)) throw bad();
    }
    rules.push({ family: family as 4 | 6, address, port });
  }
  return rules;
}

/** The name servers a run needs to resolve names (often on a private address: allowed on port 53 only). */
export function nameServers(resolvConf = '/etc/resolv.conf'): AllowRule[] {
  let text = '';
  try {
    text = readFileSync(resolvConf, 'utf8');
  } catch {
    return [];
  }
  return [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)].flatMap((m) => {
    const address = (m[1] as string).replace(/%.*$/, '');
    const family = isIP(address);
    return family === 0 ? [] : [{ family: family as 4 | 6, address, port: 53 }];
  });
}

/** The rule set, as `nft -f` reads it. */
export function ruleSet(table: string, uids: number[], allow: AllowRule[]): string {
  const accept = allow.map((rule) => {
    const daddr = `${rule.family === 4 ? 'ip' : 'ip6'} daddr ${rule.address}`;
    return `    ${daddr}${rule.port === undefined ? '' : ` meta l4proto { tcp, udp } th dport ${rule.port}`} accept`;
  });
  return [
    `table inet ${table} {`,
    '  chain output {',
    '    type filter hook output priority filter; policy accept;',
    `    meta skuid { ${uids.join(', ')} } jump run`,
    '  }',
    '  chain run {',
    ...accept,
    '    fib daddr type { local, broadcast, multicast } jump refuse',
    `    ip daddr { ${REFUSED_IPV4.join(', ')} } jump refuse`,
    `    ip6 daddr { ${REFUSED_IPV6.join(', ')} } jump refuse`,
    '  }',
    '  chain refuse {',
    '    meta l4proto tcp reject with tcp reset',
    '    reject with icmpx type admin-prohibited',
    '  }',
    '}',
    '',
  ].join('\n');
}

const TABLE = /^dollarclub_(\d+)_[0-9a-f]+$/;

export class NetworkRules {
  readonly table: string;

  private constructor(table: string) {
    this.table = table;
  }

  /** Installs the executor's table (atomically: `nft -f` applies all or nothing). */
  static install(uids: number[], allow: AllowRule[]): NetworkRules {
    const table = `dollarclub_${process.pid}_${Math.random().toString(16).slice(2, 10)}`;
    nft(['-f', '-'], ruleSet(table, uids, allow));
    return new NetworkRules(table);
  }

  remove(): void {
    try {
      nft(['delete', 'table', 'inet', this.table]);
    } catch {
      // already gone
    }
  }

  /** Deletes the tables of executors of this host that are gone; their names. */
  static reapDead(): string[] {
    const reaped: string[] = [];
    let listing = '';
    try {
      listing = nft(['list', 'tables', 'inet']);
    } catch {
      return reaped;
    }
    for (const m of listing.matchAll(/^table inet (\S+)$/gm)) {
      const name = m[1] as string;
      const owner = TABLE.exec(name);
      if (owner === null || pidExists(Number(owner[1]))) continue;
      try {
        nft(['delete', 'table', 'inet', name]);
        reaped.push(name);
      } catch {
        // deleted meanwhile
      }
    }
    return reaped;
  }
}

function nft(args: string[], input?: string): string {
  const result = spawnSync(NFT_BIN, args, { input, encoding: 'utf8', timeout: 10_000 });
  if (result.status !== 0)
    throw new Error(`nft ${args.join(' ')} failed: ${(result.stderr || result.error?.message || '').trim()}`);
  return result.stdout;
}
