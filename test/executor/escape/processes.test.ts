/**
 * A run sees only its own processes (pid namespace), and leaves nothing — no
 * process, no SysV segment, no file — for the next run of the same uid.
 */
import { readFile } from 'node:fs/promises';
import t from 'tap';
import {
  assertOwnNamespaces,
  assertRefusal,
  assertRefused,
  escapeFixture,
  processesOf,
  pyNamespaceIds,
  sandboxAvailable,
  sysvOf,
  verdicts,
} from '../../helpers/escape.ts';
import { eventually, execute, executorFixture, logsOf, upload, waitFor } from '../../helpers/executor.ts';

const TOKEN = `secret-${process.pid}-${Date.now()}`;

const pythonProbe = (pid: number) => `
import os
PID = ${pid}
API = ${process.pid}
for what, path in [("cmdline", f"/proc/{PID}/cmdline"), ("environ", f"/proc/{PID}/environ"),
                   ("api-cmdline", f"/proc/{API}/cmdline"), ("api-environ", f"/proc/{API}/environ"),
                   ("api-status", f"/proc/{API}/status")]:
    try:
        print(what, "LEAK", open(path, "rb").read()[:80])
    except OSError as e:
        print(what, "refused", type(e).__name__)
seen = []
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            seen.append(open(f"/proc/{p}/cmdline", "rb").read().replace(b"\\0", b" ").decode(errors="replace"))
        except OSError:
            seen.append("?")
leak = [c for c in seen if "${TOKEN}" in c or "tsx" in c or "postgres:" in c or "tap" in c]
print("list", "LEAK" if leak else "refused", "own processes only:", len(seen), leak[:3])
try:
    os.kill(PID, 0)
    print("signal LEAK")
except OSError as e:
    print("signal refused", type(e).__name__)
`;

// Many sandboxed runs: more than tap's 120 s per file on a loaded 2-core machine.
t.setTimeout(300_000);

const jsProbe = (pid: number) => `
const fs = require('node:fs');
const PID = ${pid};
const API = ${process.pid};
for (const [what, path] of [['cmdline', '/proc/' + PID + '/cmdline'], ['environ', '/proc/' + PID + '/environ'],
    ['api-cmdline', '/proc/' + API + '/cmdline'], ['api-environ', '/proc/' + API + '/environ'],
    ['api-status', '/proc/' + API + '/status']]) {
  try { console.log(what, 'LEAK', fs.readFileSync(path).subarray(0, 80).toString()); }
  catch (e) { console.log(what, 'refused', e.code); }
}
const seen = fs.readdirSync('/proc').filter((p) => /^\\d+$/.test(p)).map((p) => {
  try { return fs.readFileSync('/proc/' + p + '/cmdline').toString().replaceAll('\\0', ' '); } catch { return '?'; }
});
const leak = seen.filter((c) => c.includes('${TOKEN}') || c.includes('tsx') || c.includes('postgres:') || c.includes('tap'));
console.log('list', leak.length ? 'LEAK' : 'refused', 'own processes only:', seen.length, leak.slice(0, 3));
try { process.kill(PID, 0); console.log('signal LEAK'); } catch (e) { console.log('signal refused', e.code); }
`;

t.test('a run cannot see another run’s processes nor the API’s (Python and JavaScript)', async (t) => {
  if (!sandboxAvailable(t)) return assertRefusal(t, await executorFixture(t));
  const e = await escapeFixture(t);
  // The victim: a run whose child carries a secret on its command line.
  const victim = await upload(
    e.f,
    e.account,
    'victim.py',
    [
      'import os, subprocess, sys, time',
      `child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "${TOKEN}"])`,
      'print("uid", os.getuid(), flush=True)',
      'time.sleep(60)',
    ].join('\n'),
  );
  await execute(e.f, e.account, victim);
  const uid = Number(
    (await eventually('the victim runs', async () => /uid (\d+)/.exec(await logsOf(e.f, victim))))[1],
  );
  // Its child's pid as the host sees it: what an attacker outside a namespace would target.
  const pid = await eventually('the victim’s child is found', async () => {
    for (const p of await processesOf(uid)) {
      const cmdline = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes(TOKEN)) return p;
    }
    return null;
  });
  const attempts = ['cmdline', 'environ', 'api-cmdline', 'api-environ', 'api-status', 'list', 'signal'];
  for (const [name, source] of [
    ['probe.py', pythonProbe(pid)],
    ['probe.js', jsProbe(pid)],
  ] as const) {
    const { script, output } = await e.run(name, source);
    t.equal(script.status, 'completed', `${name} ran`);
    assertRefused(t, output, attempts);
    const own = Number(/own processes only: (\d+)/.exec(verdicts(output).get('list') ?? '')?.[1]);
    t.ok(own >= 1 && own <= 4, `${name} sees only its own few processes (${own})`);
  }
  t.equal((await e.f.repos.scripts.getById(victim)).status, 'running', 'the victim was not disturbed');
  await e.f.app.inject({
    method: 'POST',
    url: `/api/v1/scripts/${victim}/cancel`,
    headers: e.account.headers,
  });
  await eventually('the victim’s processes are gone', async () => (await processesOf(uid)).length === 0);
});

t.test('a run has its own uts and ipc namespaces, not the host’s', async (t) => {
  if (!sandboxAvailable(t)) return assertRefusal(t, await executorFixture(t));
  const e = await escapeFixture(t);
  const { script, output } = await e.run(
    'ns.py',
    ['import os', ...pyNamespaceIds(['uts', 'ipc'])].join('\n'),
  );
  t.equal(script.status, 'completed', `${script.error_message ?? ''}\n${output}`);
  await assertOwnNamespaces(t, output, ['uts', 'ipc']);
  const started = e.logs.find((line) => line.msg === 'sandbox: every protection is active');
  t.ok(started, 'the start-up log says every protection is active');
  t.match(
    (started as { namespaces?: string } | undefined)?.namespaces,
    /^bubblewrap: pid, ipc, uts, mount, cgroup;/,
    'and names the namespaces of the runs’ policy',
  );
});

t.test('nothing a run leaves behind reaches the next run of the same uid', async (t) => {
  if (!sandboxAvailable(t)) return assertRefusal(t, await executorFixture(t));
  // One slot, two uids taken in turn: runs 1 and 3 get the same uid.
  const e = await escapeFixture(t, { EXECUTOR_CONCURRENCY: '1' });
  const leaver = [
    'import ctypes, os, subprocess, time',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'seg = libc.shmget(0x5eed, 4096, 0o1000 | 0o666)  # IPC_CREAT',
    'print("shm", "ok" if seg >= 0 else "refused", seg, flush=True)',
    'for path in ["/tmp/left", "/var/tmp/left", "/dev/shm/left", "left"]:',
    '    open(path, "w").write("for the next run")',
    '# A daemon: double fork, new session, no parent to take it down.',
    'subprocess.Popen(["/bin/sh", "-c", "sleep 120 &"], start_new_session=True)',
    'time.sleep(0.3)',
    'print("uid", os.getuid(), flush=True)',
  ].join('\n');
  const first = await e.run('leave.py', leaver);
  t.equal(first.script.status, 'completed', first.output);
  const uid = Number(/^uid (\d+)/m.exec(first.output)?.[1]);
  t.ok(uid > 0, 'the run reported its uid');
  await eventually('no process of the uid is left', async () => (await processesOf(uid)).length === 0);
  t.same(await sysvOf(uid), [], 'no SysV segment of the uid is left on the host');

  const other = await e.run('other.py', 'import os\nprint("uid", os.getuid())\n');
  t.not(Number(/uid (\d+)/.exec(other.output)?.[1]), uid, 'the second run has the other uid');

  const finder = [
    'import ctypes, os',
    'print("uid", os.getuid())',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'seg = libc.shmget(0x5eed, 0, 0)',
    'print("sysv", "LEAK" if seg >= 0 else "refused", seg)',
    'for name, path in [("tmp", "/tmp/left"), ("var-tmp", "/var/tmp/left"), ("shm", "/dev/shm/left"), ("scratch", "left")]:',
    '    print(name, "LEAK" if os.path.exists(path) else "refused")',
    'others = [p for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/cmdline", "rb").read().startswith(b"sleep")]',
    'print("process", "LEAK" if others else "refused", others)',
  ].join('\n');
  const third = await e.run('find.py', finder);
  t.equal(third.script.status, 'completed', third.output);
  t.equal(Number(/uid (\d+)/.exec(third.output)?.[1]), uid, 'the third run has the first one’s uid');
  assertRefused(t, third.output, ['sysv', 'tmp', 'var-tmp', 'shm', 'scratch', 'process']);
  t.same(await waitFor(e.f, first.script.id).then(() => processesOf(uid)), [], 'and nothing of it runs now');
});
