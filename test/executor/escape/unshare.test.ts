/**
 * The same escapes against the unshare mechanism (util-linux; what a host without
 * bubblewrap gets, forced here with SCRIPT_SANDBOX=unshare): its own processes only,
 * the app's folders hidden, nothing writable but its private capped tmpfs, and nothing
 * left for the next run. What unshare does not hide (the rest of the host's root,
 * read-only) is listed in docs/executor.md and checked here as read-only.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import {
  assertOwnNamespaces,
  assertRefusal,
  assertRefused,
  escapeFixture,
  pyFillFolders,
  pyNamespaceIds,
  pyWriteAttempts,
  sandboxAvailable,
  verdicts,
  WRITE_TARGETS,
  worldWritableSystemFolder,
} from '../../helpers/escape.ts';
import { executorFixture } from '../../helpers/executor.ts';

// Several sandboxed runs on a loaded 2-core machine.
t.setTimeout(300_000);

const TMP_MB = 8;
const UNSHARE = { SCRIPT_SANDBOX: 'unshare', SCRIPT_TMP_MB: String(TMP_MB), SCRIPT_MEMORY_MB: '256' };

t.test('unshare: the start-up log names the mechanism, and a run sees only its own processes', async (t) => {
  if (!sandboxAvailable(t, 'unshare')) return assertRefusal(t, await executorFixture(t));
  const e = await escapeFixture(t, UNSHARE);
  t.ok(
    e.logs.some((line) => JSON.stringify(line).includes('unshare (util-linux): pid, ipc, uts, mount')),
    'the log says unshare makes the namespaces',
  );
  const probe = [
    'import os',
    `API = ${process.pid}`,
    'for what, p in [("api-cmdline", f"/proc/{API}/cmdline"), ("api-environ", f"/proc/{API}/environ")]:',
    '    try:',
    '        print(what, "LEAK", open(p, "rb").read()[:60])',
    '    except OSError as e:',
    '        print(what, "refused", type(e).__name__)',
    'pids = [p for p in os.listdir("/proc") if p.isdigit()]',
    'print("list", "refused" if len(pids) <= 3 else "LEAK", "own processes only:", len(pids))',
    'print("pid", os.getpid(), "uid", os.getuid())',
    ...pyNamespaceIds(['uts', 'ipc']),
  ].join('\n');
  const { script, output } = await e.run('procs.py', probe);
  t.equal(script.status, 'completed', `${script.error_message ?? ''}\n${output}`);
  assertRefused(t, output, ['api-cmdline', 'api-environ', 'list']);
  t.match(output, /^pid 1 uid [1-9]\d* *$/m, 'the script is the init of its own pid namespace, not root');
  await assertOwnNamespaces(t, output, ['uts', 'ipc']);
});

t.test(
  'unshare: the storage, data, app and executor folders are hidden; only private capped tmpfs are writable',
  async (t) => {
    if (!sandboxAvailable(t, 'unshare')) return assertRefusal(t, await executorFixture(t));
    const e = await escapeFixture(t, UNSHARE);
    const data = path.resolve(e.f.workDir, '..', 'data');
    await mkdir(data, { recursive: true });
    await writeFile(path.join(data, 'secret'), 'data');
    // The run's uid may write this folder on the host: only the read-only remount refuses it.
    const open = await worldWritableSystemFolder(t);
    const targets: Record<string, string> = {
      storage: path.resolve(e.f.config.STORAGE_DIR),
      data,
      'executors-root': e.f.workDir,
      'pg-data': '/var/lib/postgresql',
      app: process.cwd(),
      'uid-locks': '/run/dollarclub-script-uids',
      home: '/root',
      shadow: '/etc/shadow',
    };
    const py = [
      'import os, json',
      `targets = json.loads(${JSON.stringify(JSON.stringify(targets))})`,
      'for what, p in targets.items():',
      '    try:',
      '        if not os.path.isdir(p):',
      '            open(p, "rb").read(1)',
      '            print(what, "LEAK", "readable")',
      '            continue',
      '        entries = os.listdir(p)',
      '        here = os.getcwd()',
      '        # Only the chain of folders down to its own scratch folder, nothing beside it.',
      '        others = [e for e in entries if not here.startswith(os.path.join(p, e) + "/")]',
      '        print(what, "LEAK" if others else "refused", "nothing but its own way down", others[:5])',
      '    except OSError as e:',
      '        print(what, "refused", type(e).__name__)',
      ...pyWriteAttempts([...WRITE_TARGETS, ['run-lock', '/run/lock/x'], ['usr-0777', path.join(open, 'x')]]),
      ...pyFillFolders([
        'if folder != os.getcwd():',
        '    open(os.path.join(folder, "left-by-unshare-run"), "w").write("for the next run")',
      ]),
    ].join('\n');
    const { script, output } = await e.run('fs.py', py);
    t.equal(script.status, 'completed', `${script.error_message ?? ''}\n${output}`);
    assertRefused(t, output, [
      ...Object.keys(targets),
      'root',
      'usr',
      'etc',
      'var',
      'scratch-parent',
      'dev',
      'proc',
      'run-lock',
      'usr-0777',
    ]);
    t.match(
      verdicts(output).get('usr-0777'),
      /^refused (OSError Read-only file system|FileNotFoundError)/,
      'a folder the run’s uid could write on the host: refused by the read-only mount',
    );
    t.same(await readdir(open), [], 'and nothing appeared in it on the host');
    for (const what of ['tmp', 'var-tmp', 'shm', 'scratch']) {
      const verdict = verdicts(output).get(what) ?? '';
      t.match(verdict, /^refused No space left on device after (\d+) MB/, `${what}: capped`);
    }
    for (const dir of ['/tmp', '/var/tmp', '/dev/shm'])
      t.notOk(
        (await readdir(dir)).includes('left-by-unshare-run'),
        `what the run wrote in its ${dir} is not in the host's`,
      );
  },
);
