/**
 * The private-range and metadata rules against real hosts that this test makes:
 * two network namespaces joined by a veth pair, the far one carrying 10.200.0.2,
 * 169.254.169.254, fd00:200::2 and (as the "public" control) 203.0.113.5, each
 * with a listener. The executor's own rule set (network.ts) is installed in the
 * near namespace, and a sandboxed run (the executor's command line, policy.ts +
 * command.ts) connects from there. No packet leaves the two namespaces, which are
 * deleted at the end (with their interfaces and rules).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { commandLine } from '../../../src/executor/sandbox/command.ts';
import { NFT_BIN } from '../../../src/executor/sandbox/host.ts';
import { ruleSet } from '../../../src/executor/sandbox/network.ts';
import { policyFor } from '../../../src/executor/sandbox/policy.ts';
import { isRoot, sandboxAvailable, verdicts } from '../../helpers/escape.ts';

const tag = `${process.pid % 100000}`;
const NEAR = `dcsbx-near-${tag}`;
const FAR = `dcsbx-far-${tag}`;
// Far from the executor's range and from any user of this host.
const RUN_UID = 3_000_100_000 + (process.pid % 1000);
const PORT = 8080;

// Carried by the far end of a veth pair in a network namespace this test makes (and
// removes): traffic to them never leaves this machine.
const FAR_ADDRESSES = {
  private: '10.200.0.2',
  metadata: '169.254.169.254',
  ula: 'fd00:200::2',
  public: '203.0.113.5', // TEST-NET-3: "public" to the rules, and here only inside the far namespace
};

function run(command: string[], allowFail = false): string {
  const result = spawnSync(command[0] as string, command.slice(1), { encoding: 'utf8', timeout: 20_000 });
  if (result.status !== 0 && !allowFail)
    throw new Error(`${command.join(' ')}: ${result.stderr || result.error?.message}`);
  return result.stdout;
}

const inNear = (...command: string[]) => ['/usr/sbin/ip', 'netns', 'exec', NEAR, ...command];

const probe = `
import socket
targets = ${JSON.stringify(Object.entries(FAR_ADDRESSES))}
for name, host in targets:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(5)
    try:
        s.connect((host, ${PORT}))
        print(name, "ok", s.recv(16))
    except ConnectionRefusedError:
        print(name, "refused", "ECONNREFUSED")
    except OSError as e:
        print(name, "refused", type(e).__name__)
    finally:
        s.close()
`;

// Many sandboxed runs: more than tap's 120 s per file on a loaded 2-core machine.
t.setTimeout(300_000);

t.test('private ranges, link-local metadata and ULA are refused; a public address is not', async (t) => {
  if (!isRoot || !sandboxAvailable(t)) {
    t.comment('network namespaces need root: the rule set is checked as text instead');
    t.match(ruleSet('x', [1], []), /10\.0\.0\.0\/8.*169\.254\.0\.0\/16/s);
    return;
  }
  if (spawnSync(NFT_BIN, ['--version']).status !== 0 || spawnSync('/usr/sbin/ip', ['-V']).status !== 0) {
    t.comment('nft or ip (iproute2) is missing: the rule set is checked as text instead');
    t.match(ruleSet('x', [RUN_UID], []), /meta skuid \{ \d+ \} jump run/);
    return;
  }
  t.teardown(() => {
    run(['/usr/sbin/ip', 'netns', 'del', NEAR], true);
    run(['/usr/sbin/ip', 'netns', 'del', FAR], true);
  });
  // Two namespaces, a veth pair between them; everything below happens only inside them.
  for (const ns of [NEAR, FAR]) run(['/usr/sbin/ip', 'netns', 'add', ns]);
  run([
    '/usr/sbin/ip',
    '-n',
    NEAR,
    'link',
    'add',
    'dcn0',
    'type',
    'veth',
    'peer',
    'name',
    'dcf0',
    'netns',
    FAR,
  ]);
  const near = (...a: string[]) => run(['/usr/sbin/ip', '-n', NEAR, ...a]);
  const far = (...a: string[]) => run(['/usr/sbin/ip', '-n', FAR, ...a]);
  // Both ends live in namespaces made above (NEAR, FAR) and removed in teardown: these
  // addresses exist only there, so no packet to them leaves this machine.
  near('addr', 'add', '10.200.0.1/24', 'dev', 'dcn0');
  near('-6', 'addr', 'add', 'fd00:200::1/64', 'dev', 'dcn0', 'nodad');
  far('addr', 'add', '10.200.0.2/24', 'dev', 'dcf0');
  far('addr', 'add', '169.254.169.254/32', 'dev', 'dcf0');
  far('addr', 'add', '203.0.113.5/32', 'dev', 'dcf0');
  far('-6', 'addr', 'add', 'fd00:200::2/64', 'dev', 'dcf0', 'nodad');
  for (const [f, dev] of [
    [near, 'dcn0'],
    [far, 'dcf0'],
  ] as const) {
    f('link', 'set', 'lo', 'up');
    f('link', 'set', dev, 'up');
  }
  near('route', 'add', '169.254.169.254/32', 'via', '10.200.0.2');
  near('route', 'add', '203.0.113.5/32', 'via', '10.200.0.2');

  // One listener on every far address.
  const listener: ChildProcess = spawn(
    '/usr/sbin/ip',
    [
      'netns',
      'exec',
      FAR,
      '/usr/bin/python3',
      '-c',
      [
        'import socket, threading',
        `for fam, host in [(socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")]:`,
        '    s = socket.socket(fam)',
        '    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
        '    if fam == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)',
        `    s.bind((host, ${PORT})); s.listen()`,
        '    def serve(s=s):',
        '        while True:',
        '            c, _ = s.accept(); c.sendall(b"hi"); c.close()',
        '    threading.Thread(target=serve).start()',
        'print("listening", flush=True)',
      ].join('\n'),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.teardown(() => {
    listener.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    listener.stdout?.once('data', () => resolve());
    listener.once('exit', (code) => reject(new Error(`the listener exited with ${code}`)));
  });

  // Without rules, every far address answers: the refusals below are the rules' doing.
  const open = verdicts(run(inNear('/usr/bin/python3', '-c', probe)));
  for (const name of Object.keys(FAR_ADDRESSES))
    t.match(open.get(name), /^ok/, `${name} answers without rules`);

  // The executor's rule set, for the run's uid, in the near namespace.
  const table = `dollarclub_${process.pid}_test`;
  const install = spawnSync('/usr/sbin/ip', ['netns', 'exec', NEAR, NFT_BIN, '-f', '-'], {
    input: ruleSet(table, [RUN_UID], []),
    encoding: 'utf8',
  });
  t.equal(install.status, 0, `rules installed ${install.stderr}`);

  // A sandboxed run, built exactly as the executor builds it.
  const base = await mkdtemp(path.join(tmpdir(), 'dcsbx-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  await chmod(base, 0o755);
  const scratch = path.join(base, 'run');
  await mkdir(scratch, { mode: 0o755 });
  await writeFile(path.join(scratch, 'main.py'), probe);
  await chown(path.join(scratch, 'main.py'), RUN_UID, RUN_UID);
  const policy = policyFor({
    namespaces: true,
    network: 'internet',
    scratchDir: scratch,
    entry: 'main.py',
    tmpBytes: 8 << 20,
    interpreters: ['/usr/bin/python3'],
    user: { uid: RUN_UID, gid: RUN_UID },
    limits: {
      addressSpaceBytes: 512 << 20,
      cpuSeconds: 20,
      maxProcesses: 16,
      maxOpenFiles: 64,
      maxFileBytes: 1 << 20,
    },
    env: { PATH: '/usr/bin:/bin' },
    command: ['/usr/bin/python3', '-I', '-u', 'main.py'],
  });
  const sandboxed = spawnSync('/usr/sbin/ip', ['netns', 'exec', NEAR, ...commandLine(policy)], {
    cwd: scratch,
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.equal(sandboxed.status, 0, `the run ended well ${sandboxed.stderr}`);
  const seen = verdicts(sandboxed.stdout);
  for (const name of ['private', 'metadata', 'ula'])
    t.match(
      seen.get(name),
      /^refused ECONNREFUSED/,
      `${name} (${FAR_ADDRESSES[name as 'private']}) refused at once`,
    );
  t.match(seen.get('public'), /^ok/, 'a public address is reached');
});
