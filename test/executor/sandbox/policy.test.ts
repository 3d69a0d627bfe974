/**
 * The sandbox's policy and command line as data (no root needed): what is mounted,
 * what is not, which namespaces, and the allow-list's parsing.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadConfig } from '../../../src/config.ts';
import { commandLine } from '../../../src/executor/sandbox/command.ts';
import { nameServers, parseAllowList, ruleSet } from '../../../src/executor/sandbox/network.ts';
import { type PolicyInput, policyFor } from '../../../src/executor/sandbox/policy.ts';

const input: PolicyInput = {
  namespaces: true,
  network: 'internet',
  scratchDir: '/tmp/dollarclub-runs/host:1:abc/run-7-0011',
  entry: 'main.py',
  tmpBytes: 64 << 20,
  interpreters: ['/usr/bin/python3'],
  user: { uid: 61000, gid: 61000 },
  limits: {
    addressSpaceBytes: 1 << 29,
    cpuSeconds: 300,
    maxProcesses: 64,
    maxOpenFiles: 256,
    maxFileBytes: 1 << 26,
  },
  env: { PATH: '/usr/bin:/bin', HOME: '/tmp/dollarclub-runs/host:1:abc/run-7-0011' },
  command: ['/usr/bin/python3', '-I', '-u', 'main.py'],
};

t.test('a sandboxed run: namespaces, a whitelist of read-only mounts, capped tmpfs', async (t) => {
  const policy = policyFor(input);
  t.same(policy.namespaces, ['pid', 'ipc', 'uts', 'mount', 'cgroup'], 'no net namespace with internet');
  t.same(policyFor({ ...input, network: 'none' }).namespaces.includes('net'), true, 'net with none');
  const targets = policy.mounts.map((m) => m.target);
  for (const hidden of ['/', '/home', '/root', '/run', '/var/lib', '/srv', '/opt', '/tmp/dollarclub-runs'])
    t.notOk(
      policy.mounts.some((m) => m.kind === 'ro-bind' && m.target === hidden),
      `${hidden} is not bound from the host`,
    );
  t.ok(
    policy.mounts.every(
      (m) => m.kind !== 'ro-bind' || !m.source.startsWith('/tmp/') || m.source.endsWith('/main.py'),
    ),
    'of the executor’s folder, only the script file is bound',
  );
  for (const tmp of ['/tmp', '/var/tmp', '/dev/shm', input.scratchDir])
    t.match(
      policy.mounts.find((m) => m.target === tmp),
      { kind: 'tmpfs', sizeBytes: 64 << 20 },
      `${tmp} is a capped tmpfs`,
    );
  t.ok(
    targets.indexOf('/tmp') < targets.indexOf(input.scratchDir),
    'the scratch tmpfs goes on the private /tmp',
  );
  t.equal(policy.env.TMPDIR, '/tmp');

  const argv = commandLine(policy, ['/sys/fs/cgroup/memory/x/cgroup.procs']);
  t.equal(argv[0], '/bin/sh', 'the cgroup is joined first');
  const bwrap = argv.indexOf('/usr/bin/bwrap');
  const setpriv = argv.indexOf('/usr/bin/setpriv');
  t.ok(bwrap > 0 && setpriv > bwrap, 'then the namespaces, then the uid is dropped inside them');
  for (const flag of ['--unshare-pid', '--unshare-ipc', '--unshare-uts', '--die-with-parent', '--remount-ro'])
    t.ok(argv.includes(flag), flag);
  t.notOk(argv.includes('--unshare-net'), 'the host network (filtered by nftables)');
  t.ok(argv.includes('--reuid=61000') && argv.includes('--no-new-privs'));
  t.same(argv.slice(-4), input.command, 'the script last');
  // Two programs fewer than without namespaces: the shell sets the rlimits, bubblewrap the environment.
  t.notOk(argv.includes('/usr/bin/prlimit') || argv.includes('/usr/bin/env'), 'no prlimit, no env');
  const limits = argv.slice(4, argv.indexOf('--'));
  t.same(
    limits,
    ['-v', String(1 << 19), '-t', '300', '-p', '64', '-n', '256', '-f', String(1 << 17), '-c', '0'],
    'rlimits as ulimit options: address space in KiB, file size in 512-byte blocks',
  );
  const clear = argv.indexOf('--clearenv');
  t.ok(clear > bwrap && clear < setpriv, 'bubblewrap clears the environment');
  t.same(argv.slice(clear + 1, clear + 4), ['--setenv', 'PATH', '/usr/bin:/bin'], 'and sets the run’s');
});

t.test(
  'an interpreter installed under /tmp is bound after the private /tmp, so it stays visible',
  async (t) => {
    const parent = await mkdtemp(path.join(tmpdir(), 'dc-node-')); // 0700, like a CI job's folder
    t.teardown(() => rm(parent, { recursive: true, force: true }));
    const root = path.join(parent, 'node');
    await mkdir(path.join(root, 'bin'), { recursive: true });
    await writeFile(path.join(root, 'bin', 'node'), '', { mode: 0o755 });
    const policy = policyFor({ ...input, interpreters: [path.join(root, 'bin', 'node')] });
    const targets = policy.mounts.map((m) => m.target);
    const bound = policy.mounts.findIndex(
      (m) => m.kind === 'ro-bind' && m.source === root && m.target === root,
    );
    t.ok(bound >= 0, 'its installation is bound read-only');
    t.ok(bound > targets.indexOf('/tmp'), 'after the /tmp tmpfs, which would otherwise hide it');
    t.match(
      policy.mounts.find((m) => m.target === parent),
      { kind: 'dir', mode: 0o755 },
      'its private (0700) parent is made traversable inside, not copied from the host',
    );
    t.ok(targets.indexOf(parent) < bound, 'before the bind');
  },
);

t.test('unshare (no bubblewrap): the host’s root read-only, the private folders hidden first', async (t) => {
  const policy = policyFor({
    ...input,
    mechanism: 'unshare',
    hide: ['/', '/usr', '/srv/dollarclub/storage', '/srv/dollarclub', '/tmp/dollarclub-runs/host:1:abc'],
  });
  t.equal(policy.mechanism, 'unshare');
  const hidden = policy.mounts.filter((m) => m.kind === 'hide').map((m) => m.target);
  for (const dir of [
    '/home',
    '/root',
    '/run',
    '/var/lib',
    '/sys',
    '/srv/dollarclub',
    '/tmp/dollarclub-runs/host:1:abc',
  ])
    t.ok(hidden.includes(dir), `${dir} is hidden`);
  t.notOk(hidden.includes('/') || hidden.includes('/usr'), 'never the root nor a system folder');
  t.ok(hidden.indexOf('/srv') < hidden.indexOf('/srv/dollarclub/storage'), 'outer folders first');
  const firstOther = policy.mounts.findIndex((m) => m.kind !== 'hide');
  t.ok(
    policy.mounts.slice(firstOther).every((m) => m.kind !== 'hide'),
    'everything hidden before the private mounts are made',
  );
  t.notOk(
    policy.mounts.some((m) => m.kind === 'ro-bind' && m.source === '/usr'),
    'no whitelist: the host’s own /usr stays',
  );

  const argv = commandLine(policy, ['/sys/fs/cgroup/memory/x/cgroup.procs']);
  t.equal(argv[0], '/bin/sh', 'the cgroup is joined and the rlimits set first');
  const unshare = argv.indexOf('/usr/bin/unshare');
  t.same(
    argv.slice(unshare - 3, unshare),
    ['/usr/bin/setpriv', '--pdeathsig=KILL', '--'],
    'unshare dies with its parent',
  );
  for (const flag of [
    '--pid',
    '--fork',
    '--kill-child',
    '--mount-proc',
    '--ipc',
    '--uts',
    '--mount',
    '--cgroup',
  ])
    t.ok(argv.slice(unshare).includes(flag), flag);
  t.notOk(argv.includes('--net'), 'the host network (filtered by nftables) with internet');
  const sources = argv.indexOf('sh', unshare) + 1;
  t.same(
    argv.slice(sources, sources + 2),
    ['1', path.join(input.scratchDir, 'main.py')],
    'the script is opened before anything hides it',
  );
  t.notOk(argv.includes('/usr/bin/prlimit'), 'the rlimits are the outer shell’s');
  t.ok(
    argv.includes('-i') && argv.indexOf('-i') > argv.lastIndexOf('--reuid=61000'),
    'env -i after the uid is dropped',
  );
  t.same(argv.slice(-4), input.command, 'the script last');
  t.match(
    commandLine(policyFor({ ...input, mechanism: 'unshare', network: 'none' })).join(' '),
    /unshare .*--net/,
    'an empty network namespace with none',
  );
});

t.test('SCRIPT_SANDBOX=off: uid, rlimits and a clean environment only', async (t) => {
  const policy = policyFor({ ...input, namespaces: false });
  t.same(policy.namespaces, []);
  t.same(policy.mounts, []);
  const argv = commandLine(policy);
  t.equal(argv[0], '/usr/bin/setpriv');
  t.notOk(argv.includes('/usr/bin/bwrap'));
  t.ok(argv.includes('-i'), 'env -i');
});

t.test(
  'SCRIPT_NETWORK_ALLOW: CIDRs, addresses and address:port; anything else refused at boot',
  async (t) => {
    t.same(parseAllowList(''), []);
    t.same(parseAllowList('10.0.0.0/8, 127.0.0.1:4002,[::1]:4002, fd00::/8,192.168.1.5'), [
      { family: 4, address: '10.0.0.0/8', port: undefined },
      { family: 4, address: '127.0.0.1', port: 4002 },
      { family: 6, address: '::1', port: 4002 },
      { family: 6, address: 'fd00::/8', port: undefined },
      { family: 4, address: '192.168.1.5', port: undefined },
    ]);
    for (const bad of [
      '10.0.0.0/33',
      '127.0.0.1:0',
      '127.0.0.1:70000',
      'localhost:80',
      '[10.0.0.1]:80x',
      '10.0.0.0/8:80',
      '1.2.3',
    ])
      t.throws(() => parseAllowList(bad), /SCRIPT_NETWORK_ALLOW/, bad);
    t.throws(
      () => loadConfig({ SCRIPT_NETWORK_ALLOW: '10.0.0.0/40' }),
      /SCRIPT_NETWORK_ALLOW: "10\.0\.0\.0\/40"/,
    );
    t.throws(() => loadConfig({ SCRIPT_NETWORK_ALLOW: 'broker.local:4002' }), /SCRIPT_NETWORK_ALLOW/);
    t.equal(loadConfig({ SCRIPT_NETWORK_ALLOW: '127.0.0.1:4002' }).SCRIPT_NETWORK_ALLOW, '127.0.0.1:4002');
  },
);

t.test('the rule set: allow-list first, then the refusals, for the given uids only', async (t) => {
  const text = ruleSet('dollarclub_1_ab', [61000, 61001], parseAllowList('127.0.0.1:4002, [::1]:5000'));
  t.match(text, /meta skuid \{ 61000, 61001 \} jump run/);
  const allow = text.indexOf('ip daddr 127.0.0.1 meta l4proto { tcp, udp } th dport 4002 accept');
  const allow6 = text.indexOf('ip6 daddr ::1 meta l4proto { tcp, udp } th dport 5000 accept');
  const refuse = text.indexOf('fib daddr type');
  t.ok(allow > 0 && allow6 > 0 && refuse > allow6, 'allowed before refused');
  t.match(text, /reject with tcp reset/, 'TCP is refused with a reset: ECONNREFUSED at once');
  t.same(nameServers('/nonexistent/resolv.conf'), []);
});
