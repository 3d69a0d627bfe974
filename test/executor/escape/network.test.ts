/**
 * SCRIPT_NETWORK: with `internet`, a run is refused at once (not left to time out)
 * on the database port, the API's port, other loopback addresses, ::1 and the
 * host's own addresses, except what SCRIPT_NETWORK_ALLOW lets through; with `none`
 * it reaches nothing. Every connection here goes to this machine's own listeners:
 * no packet leaves it (private ranges and metadata addresses are tested in
 * private-ranges.test.ts, against hosts made in network namespaces).
 */
import { spawnSync } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { Test } from 'tap';
import t from 'tap';
import { NFT_BIN } from '../../../src/executor/sandbox/host.ts';
import { REFUSED_IPV4, REFUSED_IPV6 } from '../../../src/executor/sandbox/network.ts';
import { assertRefusal, escapeFixture, sandboxAvailable, verdicts } from '../../helpers/escape.ts';
import { executorFixture } from '../../helpers/executor.ts';

async function listen(t: Test, host: string): Promise<number> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {}); // the probes close at once
    socket.on('close', () => sockets.delete(socket));
    socket.end('hello\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** The host's own first non-loopback IPv4 address (its packets to itself stay on it). */
function ownAddress(): string | null {
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return null;
}

interface Target {
  name: string;
  host: string;
  port: number;
}

const pythonProbe = (targets: Target[]) => `
import json, socket
for t in json.loads(${JSON.stringify(JSON.stringify(targets))}):
    family = socket.AF_INET6 if ":" in t["host"] else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((t["host"], t["port"]))
        print(t["name"], "ok", "connected")
    except ConnectionRefusedError:
        print(t["name"], "refused", "ECONNREFUSED")
    except OSError as e:
        print(t["name"], "refused", type(e).__name__, e.errno)
    finally:
        s.close()
`;

// Many sandboxed runs: more than tap's 120 s per file on a loaded 2-core machine.
t.setTimeout(300_000);

const jsProbe = (targets: Target[]) => `
const net = require('node:net');
(async () => {
  for (const t of ${JSON.stringify(targets)}) {
    const verdict = await new Promise((resolve) => {
      const s = net.connect({ host: t.host, port: t.port, timeout: 5000 });
      s.on('connect', () => { s.destroy(); resolve('ok connected'); });
      s.on('timeout', () => { s.destroy(); resolve('refused TIMEOUT'); });
      s.on('error', (e) => resolve('refused ' + e.code));
    });
    console.log(t.name, verdict);
  }
})();
`;

t.test(
  'SCRIPT_NETWORK=internet: loopback, the database, the API and the host itself are refused at once',
  async (t) => {
    if (!sandboxAvailable(t)) return assertRefusal(t, await executorFixture(t));
    const host = spawnSync(NFT_BIN, ['list', 'tables'], { encoding: 'utf8' });
    if (host.status !== 0) {
      t.comment(`nftables is not usable here (${host.stderr.trim()}): checking the production refusal`);
      return assertRefusal(t, await executorFixture(t));
    }
    const allowed = await listen(t, '127.0.0.1');
    const e = await escapeFixture(t, { SCRIPT_NETWORK_ALLOW: `127.0.0.1:${allowed}` });
    // The API as `npm start` serves it, on a loopback port.
    await e.f.app.listen({ host: '127.0.0.1', port: 0 });
    const apiAddress = e.f.app.server.address();
    const apiPort = typeof apiAddress === 'object' && apiAddress ? apiAddress.port : 0;
    const dbPort = Number(new URL(e.f.database.url).port || 5432);
    const targets: Target[] = [
      { name: 'database', host: '127.0.0.1', port: dbPort },
      { name: 'api', host: '127.0.0.1', port: apiPort },
      { name: 'loopback-other', host: '127.0.0.2', port: await listen(t, '127.0.0.2') },
      { name: 'ipv6-loopback', host: '::1', port: await listen(t, '::1') },
      { name: 'mapped-loopback', host: '::ffff:127.0.0.1', port: apiPort },
      { name: 'allowed', host: '127.0.0.1', port: allowed },
    ];
    const own = ownAddress();
    if (own) targets.push({ name: 'own-address', host: own, port: await listen(t, own) });
    else t.comment('this host has no non-loopback IPv4 address: its own addresses are not probed');

    // From outside the sandbox every one of them answers: a refusal inside is the rules' doing.
    const control = spawnSync('/usr/bin/python3', ['-c', pythonProbe(targets)], { encoding: 'utf8' });
    for (const target of targets)
      t.match(verdicts(control.stdout).get(target.name), /^ok/, `${target.name} answers outside the sandbox`);

    const refused = targets.filter((x) => x.name !== 'allowed').map((x) => x.name);
    for (const [name, source] of [
      ['net.py', pythonProbe(targets)],
      ['net.js', jsProbe(targets)],
    ] as const) {
      const { script, output } = await e.run(name, source);
      t.equal(script.status, 'completed', `${name}: ${script.error_message ?? ''}`);
      const seen = verdicts(output);
      for (const what of refused)
        t.match(seen.get(what), /^refused ECONNREFUSED/, `${name}: ${what} refused at once (not a timeout)`);
      t.match(seen.get('allowed'), /^ok/, `${name}: SCRIPT_NETWORK_ALLOW lets 127.0.0.1:${allowed} through`);
    }

    // The rule set as installed: the executor's own table, for its uids only. Read as text
    // (`nft list`): no packet goes to these ranges.
    const table = String(e.logs.find((l) => typeof l.network === 'string')?.network ?? '').match(
      /dollarclub_\d+_[0-9a-f]+/,
    )?.[0];
    t.ok(table, 'the start-up log names the table');
    const listing = spawnSync(NFT_BIN, ['list', 'table', 'inet', String(table)], { encoding: 'utf8' }).stdout;
    // Text looked up in the rule listing; nothing is sent to these ranges.
    for (const range of ['10.0.0.0/8', '100.64.0.0/10', '169.254.0.0/16', '172.16.0.0/12', '192.168.0.0/16'])
      t.ok(REFUSED_IPV4.includes(range) && listing.includes(range), `${range} is refused`);
    for (const range of ['fc00::/7', 'fe80::/10'])
      t.ok(REFUSED_IPV6.includes(range) && listing.includes(range), `${range} is refused`);
    t.match(
      listing,
      /fib daddr type \{ local, broadcast, multicast \} jump refuse/,
      'and the host’s own addresses',
    );
    t.match(listing, /meta skuid \{ [\d, ]+ \} jump run/, 'for the runs’ uids only');
    await e.executor.stop(0);
    const after = spawnSync(NFT_BIN, ['list', 'table', 'inet', String(table)], { encoding: 'utf8' });
    t.not(after.status, 0, 'the table is gone once the executor stops');
  },
);

t.test('SCRIPT_NETWORK=none: an empty network namespace, the allow-list included', async (t) => {
  if (!sandboxAvailable(t)) return assertRefusal(t, await executorFixture(t));
  const allowed = await listen(t, '127.0.0.1');
  const e = await escapeFixture(t, { SCRIPT_NETWORK: 'none', SCRIPT_NETWORK_ALLOW: `127.0.0.1:${allowed}` });
  const own = ownAddress();
  // Each address with a listener of its own: a refusal inside cannot come from a closed port.
  const targets: Target[] = [
    { name: 'allowed', host: '127.0.0.1', port: allowed },
    { name: 'ipv6-loopback', host: '::1', port: await listen(t, '::1') },
    ...(own ? [{ name: 'own-address', host: own, port: await listen(t, own) }] : []),
  ];
  const control = spawnSync('/usr/bin/python3', ['-c', pythonProbe(targets)], { encoding: 'utf8' });
  for (const target of targets)
    t.match(verdicts(control.stdout).get(target.name), /^ok/, `${target.name} answers outside the sandbox`);
  const { script, output } = await e.run('none.py', pythonProbe(targets));
  t.equal(script.status, 'completed');
  for (const target of targets)
    t.match(verdicts(output).get(target.name), /^refused/, `${target.name} unreachable`);
  const interfaces = await e.run(
    'ifaces.py',
    'import socket\nprint(sorted(n for _, n in socket.if_nameindex()))\n',
  );
  t.match(interfaces.output, /^\['lo'\]$/m, 'loopback is the only interface');
});
