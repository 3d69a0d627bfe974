/**
 * Runs apart from each other and from the executor: a uid of its own per run
 * (allocated safely among the executors of a host), and no silent sharing of the
 * executor's own user when it is not root.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { loadConfig } from '../../src/config.ts';
import { identify } from '../../src/executor/host-processes.ts';
import { SCRIPT_ID_RANGE, UidPool } from '../../src/executor/uid-pool.ts';
import { signUp } from '../helpers/app.ts';
import {
  eventually,
  execute,
  executorFixture,
  logsOf,
  pidsOfScript,
  processesIn,
  upload,
  waitFor,
} from '../helpers/executor.ts';
import { captureLogger } from '../helpers/log-capture.ts';

const isRoot = process.getuid?.() === 0;
// Far from the executor's default range, and from any user of this host.
const BASE = 3_000_000_000;

async function lockDir(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-uid-locks-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test(
  'two concurrent runs of different users: neither can read the other’s script, output or environment',
  async (t) => {
    const f = await executorFixture(t);
    if (!isRoot) {
      // Without root there are no uids of their own to keep runs apart: what holds the
      // guarantee then is that a production executor does not run scripts at all.
      const production = f.makeExecutor({
        NODE_ENV: 'production',
        IBKR_TOKEN_KEY: Buffer.alloc(32, 7).toString('base64'),
      });
      await t.rejects(production.start(), /not root/, 'a non-root production executor refuses to start');
      return;
    }
    await f.startExecutor();
    const alice = await signUp(f.app);
    const first = await upload(
      f,
      alice,
      'secret.py',
      'import os, time\nprint("pid", os.getpid(), "uid", os.getuid(), flush=True)\ntime.sleep(30)\n',
    );
    await execute(f, alice, first);
    const seen = await eventually('the first run reports its pid', async () =>
      /pid (\d+) uid (\d+)/.exec(await logsOf(f, first)),
    );
    // The pid the host knows it by (the script sees its own pid namespace's).
    const pid = await eventually('its process is found', async () => (await pidsOfScript(first))[0]);
    const uid = Number(seen[2]);
    const mallory = await signUp(f.app);
    const probe = await upload(
      f,
      mallory,
      'probe.py',
      [
        'import os',
        `pid = ${pid}`,
        'attempts = [',
        '    ("script", lambda: open(f"/proc/{pid}/cwd/main.py").read()),',
        '    ("folder", lambda: os.listdir(f"/proc/{pid}/cwd")),',
        '    ("stdout", lambda: open(f"/proc/{pid}/fd/1", "rb").close()),',
        '    ("environ", lambda: open(f"/proc/{pid}/environ").read()),',
        '    ("signal", lambda: os.kill(pid, 0)),',
        ']',
        'for what, attempt in attempts:',
        '    try:',
        '        attempt()',
        '        print(what, "READ")',
        '    except Exception as e:',
        '        print(what, "refused", type(e).__name__)',
        'print("uid", os.getuid())',
      ].join('\n'),
    );
    await execute(f, mallory, probe);
    t.match(await waitFor(f, probe), { status: 'completed' });
    const logs = await logsOf(f, probe);
    for (const what of ['script', 'folder', 'stdout', 'environ', 'signal'])
      t.match(
        logs,
        new RegExp(`^${what} refused (PermissionError|FileNotFoundError|ProcessLookupError)$`, 'm'),
        what,
      );
    t.notMatch(logs, /READ/);
    const probeUid = Number(/^uid (\d+)$/m.exec(logs)?.[1]);
    t.not(probeUid, uid, 'the two runs have different uids');
    t.equal((await f.repos.scripts.getById(first)).status, 'running', 'the first run was not disturbed');
    await f.app.inject({ method: 'POST', url: `/api/v1/scripts/${first}/cancel`, headers: alice.headers });
    await eventually('the first run ends', async () => (await processesIn(f.workDir)).length === 0);
  },
);

t.test('uid locks: concurrent executors get disjoint uids; release lets others take them', async (t) => {
  const dir = await lockDir(t);
  const pools = await Promise.all(
    Array.from({ length: 8 }, (_, n) =>
      UidPool.acquire({ baseUid: BASE, baseGid: BASE, count: 4, executorId: `e${n}`, lockDir: dir }),
    ),
  );
  const uids = pools.flatMap((p) => p.users.map((u) => u.uid));
  t.equal(uids.length, 32);
  t.equal(new Set(uids).size, 32, 'no uid held twice');
  t.ok(
    uids.every((uid) => uid >= BASE && uid < BASE + 32),
    'the lowest free ones',
  );
  t.ok(
    pools.every((p) => p.users.every((u) => u.gid - BASE === u.uid - BASE)),
    'the gid goes with the uid',
  );
  const first = pools[0]!;
  const taken = first.take();
  t.equal(first.available, 3);
  first.give(taken);
  t.equal(first.available, 4);
  const released = first.users.map((u) => u.uid).sort((a, b) => a - b);
  await first.release();
  const next = await UidPool.acquire({
    baseUid: BASE,
    baseGid: BASE,
    count: 4,
    executorId: 'next',
    lockDir: dir,
  });
  t.same(
    next.users.map((u) => u.uid),
    released,
    'the released uids go to the next executor',
  );
  for (const pool of [...pools, next]) await pool.release();
});

t.test('uid locks: a dead owner’s uid is taken over once, a live owner’s never', async (t) => {
  const dir = await lockDir(t);
  const gone = spawn('/bin/true');
  await new Promise((resolve) => gone.once('exit', resolve));
  const me = await identify();
  // BASE: held by a process that died; BASE + 1: held by a live one (this process).
  await writeFile(path.join(dir, `${BASE}.4`), JSON.stringify({ ...me, pid: gone.pid, executor: 'dead' }));
  await writeFile(path.join(dir, `${BASE + 1}.0`), JSON.stringify({ ...me, executor: 'alive' }));
  const racers = await Promise.allSettled(
    Array.from({ length: 6 }, (_, n) =>
      UidPool.acquire({ baseUid: BASE, baseGid: BASE, count: 1, executorId: `r${n}`, lockDir: dir }),
    ),
  );
  const pools = racers.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const uids = pools.map((p) => p.users[0]!.uid);
  t.equal(new Set(uids).size, uids.length, 'no uid went to two executors');
  t.ok(uids.includes(BASE), 'the dead owner’s uid was taken over');
  t.notOk(uids.includes(BASE + 1), 'the live owner’s was not');
  const files = await readdir(dir);
  t.ok(
    files.includes(`${BASE}.5`) && !files.includes(`${BASE}.4`),
    'by a new generation, the old one removed',
  );
  for (const pool of pools) await pool.release();
});

t.test('uid locks: a range that holds a user of this host is refused, naming it', async (t) => {
  const dir = await lockDir(t);
  // nobody (65534) is in /etc/passwd on Debian; the range 65000…66023 holds it.
  await t.rejects(
    UidPool.acquire({ baseUid: 65000, baseGid: BASE, count: 1, executorId: 'x', lockDir: dir }),
    /SCRIPT_UID=65000: .*65534 is user "nobody"/,
  );
  await t.rejects(
    UidPool.acquire({
      baseUid: BASE,
      baseGid: BASE,
      count: SCRIPT_ID_RANGE + 1,
      executorId: 'x',
      lockDir: dir,
    }),
    /only 1024 of the 1025 script uids/,
  );
});

t.test('EXECUTOR_ALLOW_SAME_USER defaults to true except in production', async (t) => {
  const key = Buffer.alloc(32, 7).toString('base64');
  t.equal(loadConfig({}).EXECUTOR_ALLOW_SAME_USER, true);
  t.equal(loadConfig({ NODE_ENV: 'test' }).EXECUTOR_ALLOW_SAME_USER, true);
  t.equal(loadConfig({ NODE_ENV: 'production', IBKR_TOKEN_KEY: key }).EXECUTOR_ALLOW_SAME_USER, false);
  t.equal(
    loadConfig({ NODE_ENV: 'production', IBKR_TOKEN_KEY: key, EXECUTOR_ALLOW_SAME_USER: 'true' })
      .EXECUTOR_ALLOW_SAME_USER,
    true,
  );
  t.throws(() => loadConfig({ EXECUTOR_ALLOW_SAME_USER: 'maybe' }), { message: /EXECUTOR_ALLOW_SAME_USER/ });
});

t.test('a production executor refuses SCRIPT_NETWORK=none when runs get no network namespace', async (t) => {
  const f = await executorFixture(t);
  // SCRIPT_SANDBOX=off gives no namespaces whatever the host offers; the uid check is
  // passed on purpose (EXECUTOR_ALLOW_SAME_USER), so the network is what is refused.
  const key = Buffer.alloc(32, 7).toString('base64');
  const { log, lines } = captureLogger('info');
  const refused = f.makeExecutor(
    {
      NODE_ENV: 'production',
      IBKR_TOKEN_KEY: key,
      EXECUTOR_ALLOW_SAME_USER: 'true',
      SCRIPT_SANDBOX: 'off',
      SCRIPT_NETWORK: 'none',
    },
    { processUid: 1000, log },
  );
  await t.rejects(refused.start(), /SCRIPT_NETWORK=none needs a network namespace.*host network unfiltered/s);
  t.notOk(
    lines.some((l) => /^executor started$/.test(l.msg ?? '')),
    'no executor start is logged',
  );
  // Outside production the same settings start, with the gap named in the warning.
  const { log: devLog, lines: devLines } = captureLogger('info');
  const dev = await f.startExecutor(
    { EXECUTOR_ALLOW_SAME_USER: 'true', SCRIPT_SANDBOX: 'off', SCRIPT_NETWORK: 'none' },
    { processUid: 1000, log: devLog },
  );
  t.ok(
    devLines.some((l) => l.level === 40 && /SCRIPT_NETWORK=none needs a network namespace/.test(l.msg ?? '')),
    'development warns that runs use the host network',
  );
  await dev.stop(0);
});

t.test('a non-root executor refuses to start unless allowed, and warns when allowed', async (t) => {
  const f = await executorFixture(t);
  // processUid pretends: the process is not root. No script is run here.
  const refused = f.makeExecutor({ EXECUTOR_ALLOW_SAME_USER: 'false' }, { processUid: 1000 });
  await t.rejects(
    refused.start(),
    /runs as uid 1000, not root.*IBKR_TOKEN_KEY.*EXECUTOR_ALLOW_SAME_USER=true/s,
  );
  const { log, lines } = captureLogger('info');
  const allowed = await f.startExecutor({ EXECUTOR_ALLOW_SAME_USER: 'true' }, { processUid: 1000, log });
  const warning = lines.find((l) => l.level === 40 && /not root/.test(l.msg ?? ''));
  t.match(warning?.msg, /scripts run as that same user and can read .*DATABASE_URL and IBKR_TOKEN_KEY/);
  await allowed.stop(0);
});
