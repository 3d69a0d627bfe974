/**
 * A run's file system: the system folders read-only, private size-capped tmpfs
 * for /tmp, /var/tmp, /dev/shm and the scratch folder, and the storage, data and
 * executor folders (other runs' scratch folders included) not there at all.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import {
  assertRefusal,
  assertRefused,
  escapeFixture,
  pyFillFolders,
  pyWriteAttempts,
  sandboxAvailable,
  verdicts,
  WRITE_TARGETS,
  worldWritableSystemFolder,
} from '../../helpers/escape.ts';
import { executorFixture } from '../../helpers/executor.ts';

// Many sandboxed runs: more than tap's 120 s per file on a loaded 2-core machine.
t.setTimeout(300_000);

const TMP_MB = 8;

t.test('a run cannot read the storage, data or executor folders (Python and JavaScript)', async (t) => {
  if (!sandboxAvailable(t)) return assertRefusal(t, await executorFixture(t));
  const e = await escapeFixture(t);
  const storage = path.resolve(e.f.config.STORAGE_DIR);
  // A "data" folder of the app (the embedded PostgreSQL's, by default) and the app's own source.
  const data = path.resolve(e.f.workDir, '..', 'data');
  await mkdir(data, { recursive: true });
  await writeFile(path.join(data, 'secret'), 'data');
  const targets: Record<string, string> = {
    storage,
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
    '        entries = os.listdir(p) if os.path.isdir(p) else None',
    '        if entries is None:',
    '            open(p, "rb").read(1)',
    '            print(what, "LEAK", "readable")',
    '        elif what == "executors-root":',
    '            # Only the chain of folders down to its own scratch folder, nothing beside it.',
    '            here = os.getcwd()',
    '            others = [e for e in entries if not here.startswith(os.path.join(p, e) + "/")]',
    '            print(what, "LEAK" if others else "refused", "only its own way down", others)',
    '        else:',
    '            print(what, "LEAK", entries[:5])',
    '    except OSError as e:',
    '        print(what, "refused", type(e).__name__)',
  ].join('\n');
  const js = [
    "const fs = require('node:fs');",
    "const path = require('node:path');",
    `const targets = ${JSON.stringify(targets)};`,
    'for (const [what, p] of Object.entries(targets)) {',
    '  try {',
    '    if (!fs.statSync(p).isDirectory()) { fs.readFileSync(p); console.log(what, "LEAK", "readable"); continue; }',
    '    const entries = fs.readdirSync(p);',
    '    if (what === "executors-root") {',
    '      const others = entries.filter((e) => !process.cwd().startsWith(path.join(p, e) + "/"));',
    '      console.log(what, others.length ? "LEAK" : "refused", "only its own way down", others);',
    '    } else console.log(what, "LEAK", entries.slice(0, 5));',
    '  } catch (e) { console.log(what, "refused", e.code); }',
    '}',
  ].join('\n');
  for (const [name, source] of [
    ['read.py', py],
    ['read.js', js],
  ] as const) {
    const { script, output } = await e.run(name, source);
    t.equal(script.status, 'completed', `${name}: ${script.error_message ?? ''}`);
    assertRefused(t, output, Object.keys(targets));
  }
});

t.test('a run writes only in its scratch folder and private tmpfs, each capped', async (t) => {
  if (!sandboxAvailable(t)) return assertRefusal(t, await executorFixture(t));
  const e = await escapeFixture(t, { SCRIPT_TMP_MB: String(TMP_MB), SCRIPT_MEMORY_MB: '256' });
  // The run's uid may write this folder on the host: only the read-only /usr refuses it.
  const open = await worldWritableSystemFolder(t);
  const py = [
    'import os',
    ...pyWriteAttempts([...WRITE_TARGETS, ['usr-0777', path.join(open, 'x')]]),
    ...pyFillFolders(['os.remove(os.path.join(folder, "fill"))']),
  ].join('\n');
  const { script, output } = await e.run('write.py', py);
  t.equal(script.status, 'completed', `${script.error_message ?? ''}\n${output}`);
  assertRefused(t, output, ['root', 'usr', 'etc', 'var', 'scratch-parent', 'dev', 'proc', 'usr-0777']);
  t.match(
    verdicts(output).get('usr-0777'),
    /^refused (OSError Read-only file system|FileNotFoundError)/,
    'a folder the run’s uid could write on the host: refused by the read-only mount',
  );
  t.same(await readdir(open), [], 'and nothing appeared in it on the host');
  for (const what of ['tmp', 'var-tmp', 'shm', 'scratch']) {
    const verdict = verdicts(output).get(what) ?? '';
    t.match(verdict, /^refused No space left on device after (\d+) MB/, `${what}: capped`);
    const mb = Number(/after (\d+) MB/.exec(verdict)?.[1]);
    t.ok(mb >= TMP_MB - 2 && mb <= TMP_MB, `${what}: ${mb} MB written of a ${TMP_MB} MB cap`);
  }
  // The same from JavaScript, /dev/shm past its cap.
  const js = [
    "const fs = require('node:fs');",
    'let written = 0;',
    'try { for (;;) { fs.appendFileSync("/dev/shm/fill", Buffer.alloc(1 << 20)); written++; if (written > 64) break; } console.log("shm LEAK", written); }',
    'catch (e) { console.log("shm refused", e.code, "after", written, "MB"); }',
  ].join('\n');
  const filled = await e.run('fill.js', js);
  t.match(
    verdicts(filled.output).get('shm'),
    /^refused ENOSPC after [678] MB/,
    'JavaScript: /dev/shm capped',
  );
});
