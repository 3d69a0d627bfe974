/**
 * Hostile scripts run through the real executor (as root: the sandbox needs it),
 * reporting line by line what they tried: `<what> refused <why>` or `<what> LEAK <what they got>`.
 */
import { chmod, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import type { Test } from 'tap';
import type { Script } from '../../src/domain/script.ts';
import type { Executor } from '../../src/executor/executor.ts';
import { detectHost } from '../../src/executor/sandbox/host.ts';
import type { Account } from './app.ts';
import { signUp } from './app.ts';
import { type ExecutorFixture, execute, executorFixture, logsOf, upload, waitFor } from './executor.ts';
import { captureLogger } from './log-capture.ts';

export const isRoot = process.getuid?.() === 0;

/**
 * Whether this host can sandbox at all; when not, prints why and returns false, and the
 * calling test asserts the fallback instead (a production executor refuses to start).
 */
export function sandboxAvailable(t: Test, mechanism: 'bwrap' | 'unshare' = 'bwrap'): boolean {
  if (!isRoot) {
    t.comment(
      'not root: runs get no uid, namespaces or cgroup of their own here; checking the refusal instead',
    );
    return false;
  }
  const host = detectHost(0);
  if (host[mechanism] !== true) {
    t.comment(
      `no namespaces from ${mechanism} on this host (${host[mechanism]}); checking the refusal instead`,
    );
    return false;
  }
  return true;
}

/** Without a sandbox, the only safe answer is a production executor that refuses to start. */
export async function assertRefusal(t: Test, f: ExecutorFixture): Promise<void> {
  const production = f.makeExecutor({
    NODE_ENV: 'production',
    IBKR_TOKEN_KEY: Buffer.alloc(32, 7).toString('base64'),
  });
  await t.rejects(production.start(), /not root|cannot sandbox/, 'a production executor refuses to start');
}

export interface Escape {
  f: ExecutorFixture;
  executor: Executor;
  account: Account;
  /** The executor's log lines (its start-up summary of protections among them). */
  logs: ReturnType<typeof captureLogger>['lines'];
  /** Uploads and runs a script, waits for its end; the row and its output. */
  run(name: string, source: string, timeoutMs?: number): Promise<{ script: Script; output: string }>;
}

export async function escapeFixture(t: Test, env: Record<string, string> = {}): Promise<Escape> {
  const f = await executorFixture(t, env);
  const { log, lines } = captureLogger('info');
  const executor = await f.startExecutor({}, { log });
  const account = await signUp(f.app);
  return {
    f,
    executor,
    account,
    logs: lines,
    async run(name, source, timeoutMs = 30_000) {
      const id = await upload(f, account, name, source);
      await execute(f, account, id);
      const script = await waitFor(f, id, undefined, timeoutMs);
      return { script, output: await logsOf(f, id) };
    },
  };
}

/** Every `<what> <verdict>` line of a probe's output. */
export function verdicts(output: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of output.split('\n')) {
    const m = /^(\S+) (refused|LEAK|ok)\b(.*)$/.exec(line);
    if (m) map.set(m[1] as string, `${m[2]}${m[3]}`);
  }
  return map;
}

/** Asserts that each named attempt was refused (and that the probe reported it at all). */
export function assertRefused(t: Test, output: string, names: string[]): void {
  const seen = verdicts(output);
  for (const name of names) t.match(seen.get(name), /^refused/, `${name}: refused`);
  t.notMatch(output, /LEAK/, 'nothing leaked');
}

/** Processes of a uid on the host. */
export async function processesOf(uid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const owner = await stat(`/proc/${entry}`).catch(() => null);
    if (owner?.uid === uid) pids.push(Number(entry));
  }
  return pids;
}

/** SysV shared memory segments, message queues and semaphore sets owned by a uid, host-wide. */
export async function sysvOf(uid: number): Promise<string[]> {
  const found: string[] = [];
  for (const kind of ['shm', 'msg', 'sem']) {
    const text = await readFile(`/proc/sysvipc/${kind}`, 'utf8').catch(() => '');
    const [header, ...rows] = text.trim().split('\n');
    const columns = (header ?? '').trim().split(/\s+/);
    const uidColumn = columns.indexOf('uid');
    for (const row of rows) {
      const cells = row.trim().split(/\s+/);
      if (Number(cells[uidColumn]) === uid) found.push(`${kind}: ${row.trim()}`);
    }
  }
  return found;
}

/** Where every run's write must be refused, as (name, path) pairs of the Python probes below. */
export const WRITE_TARGETS: Array<[string, string]> = [
  ['root', '/x'],
  ['usr', '/usr/x'],
  ['etc', '/etc/x'],
  ['var', '/var/x'],
  ['dev', '/dev/x'],
  ['proc', '/proc/sys/kernel/hostname'],
];

/**
 * A folder the run's uid could write on the host (0777), inside a system tree a run sees
 * read-only (/usr): only the read-only mount refuses a write there, not the folder's owner
 * or mode as with WRITE_TARGETS. Removed at the test's end.
 */
export async function worldWritableSystemFolder(t: Test): Promise<string> {
  const dir = await mkdtemp('/usr/local/share/dollarclub-escape-');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await chmod(dir, 0o777);
  return dir;
}

/**
 * Python lines (after `import os`): a write to each target and to the scratch folder's
 * parent, printed `<name> refused <error> <strerror>` or `<name> LEAK written`.
 */
export function pyWriteAttempts(targets: Array<[string, string]>): string[] {
  const pairs = targets.map(([what, p]) => `(${JSON.stringify(what)}, ${JSON.stringify(p)})`).join(', ');
  return [
    `for what, p in [${pairs}, ("scratch-parent", os.path.join(os.path.dirname(os.getcwd()), "x"))]:`,
    '    try:',
    '        open(p, "w").write("x")',
    '        print(what, "LEAK", "written")',
    '    except OSError as e:',
    '        print(what, "refused", type(e).__name__, e.strerror)',
  ];
}

/**
 * Python lines (after `import os`): fills /tmp, /var/tmp, /dev/shm and the scratch folder
 * in 1 MB writes up to 64 MB, printed `<name> refused <error> after N MB` at the cap or
 * `<name> LEAK wrote 64 MB`; then `after` (lines indented into the loop, with `folder`).
 */
export function pyFillFolders(after: string[]): string[] {
  return [
    'for what, folder in [("tmp", "/tmp"), ("var-tmp", "/var/tmp"), ("shm", "/dev/shm"), ("scratch", os.getcwd())]:',
    '    written = 0',
    '    chunk = b"x" * (1 << 20)',
    '    try:',
    '        with open(os.path.join(folder, "fill"), "wb") as f:',
    '            for _ in range(64):',
    '                f.write(chunk); f.flush(); written += 1',
    '        print(what, "LEAK", "wrote", written, "MB")',
    '    except OSError as e:',
    '        print(what, "refused", e.strerror, "after", written, "MB")',
    ...after.map((line) => `    ${line}`),
  ];
}

/** Python lines (after `import os`): `ns <name> <id>` for each of the run's namespaces named. */
export function pyNamespaceIds(names: string[]): string[] {
  return [`for ns in ${JSON.stringify(names)}:`, '    print("ns", ns, os.readlink(f"/proc/self/ns/{ns}"))'];
}

/** Asserts that the run's namespaces of these names (pyNamespaceIds) are not the test process's own. */
export async function assertOwnNamespaces(t: Test, output: string, names: string[]): Promise<void> {
  for (const ns of names) {
    const host = await readlink(`/proc/self/ns/${ns}`);
    const run = new RegExp(`^ns ${ns} (\\S+)$`, 'm').exec(output)?.[1];
    t.match(run, new RegExp(`^${ns}:\\[\\d+\\]$`), `${ns}: the run reported its namespace`);
    t.not(run, host, `${ns}: the run's namespace (${run}) is not the host's (${host})`);
  }
}
