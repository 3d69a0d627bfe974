/**
 * Real child processes through the real executor: outcomes, metrics, limits,
 * the sandbox, and the log pipeline.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { signUp } from '../helpers/app.ts';
import {
  eventually,
  execute,
  executorFixture,
  logsOf,
  processesIn,
  signUpWithScript,
  upload,
  waitFor,
} from '../helpers/executor.ts';

const isRoot = process.getuid?.() === 0;

t.test('a Python script that prints and exits 0: completed, metrics and output recorded', async (t) => {
  const f = await executorFixture(t);
  await f.startExecutor();
  const { account, id } = await signUpWithScript(
    f,
    'hello.py',
    'import sys\nprint("hello")\nprint("to stderr", file=sys.stderr)\nprint("bye")\n',
  );
  t.equal((await execute(f, account, id)).statusCode, 202);
  const script = await waitFor(f, id);
  t.match(script, { status: 'completed', exit_code: 0, error_message: null });
  t.ok(script.execution_time_seconds !== null && script.execution_time_seconds > 0, 'wall time recorded');
  t.ok(script.memory_usage_mb !== null && script.memory_usage_mb > 1, 'peak memory recorded');
  t.ok(script.started_at! <= script.completed_at!);
  const logs = await f.app.inject({ url: `/api/v1/scripts/${id}/logs`, headers: account.headers });
  t.equal(logs.statusCode, 200);
  t.match(logs.headers['content-type'], /^text\/plain/);
  t.match(logs.body, /hello\n/);
  t.match(logs.body, /to stderr\n/);
  t.match(logs.body, /bye\n/);
  // The run keeps its output, its size and its outcome.
  t.match(await f.repos.runs.getById(script.last_run_id!), {
    status: 'completed',
    exit_code: 0,
    log_bytes: Buffer.byteLength(logs.body),
    log_truncated: false,
  });
});

t.test('exit code 3: failed, with the code and the last stderr line as the reason', async (t) => {
  const f = await executorFixture(t);
  await f.startExecutor();
  const { account, id } = await signUpWithScript(
    f,
    'three.py',
    'import sys\nprint("working")\nprint("bad input file", file=sys.stderr)\nsys.exit(3)\n',
  );
  await execute(f, account, id);
  const script = await waitFor(f, id);
  t.match(script, { status: 'failed', exit_code: 3, error_message: 'exited with code 3: bad input file' });
  t.ok(script.memory_usage_mb !== null);
});

t.test('a script past MAX_EXECUTION_SECONDS is killed with its children and failed', async (t) => {
  const f = await executorFixture(t, { MAX_EXECUTION_SECONDS: '2' });
  await f.startExecutor();
  const { account, id } = await signUpWithScript(
    f,
    'sleepy.py',
    [
      'import subprocess, time',
      '# a child process that would outlive us if only we were killed',
      'subprocess.Popen(["sleep", "60"])',
      'print("started", flush=True)',
      'time.sleep(60)',
    ].join('\n'),
  );
  await execute(f, account, id);
  const script = await waitFor(f, id);
  t.match(script, { status: 'failed', exit_code: null });
  t.match(script.error_message, /^timed out after 2 s/);
  // The limit is the point: killed at 2 s, not later (generous for a loaded machine).
  t.ok(script.execution_time_seconds! >= 2 && script.execution_time_seconds! < 15);
  t.same(await processesIn(f.workDir), [], 'no process of the run is left, the sleeping child included');
  const logs = await f.app.inject({ url: `/api/v1/scripts/${id}/logs`, headers: account.headers });
  t.match(logs.body, /started/, 'output written before the kill is kept');
});

t.test('a script that allocates past the memory limit fails with a useful message', async (t) => {
  const f = await executorFixture(t, { SCRIPT_MEMORY_MB: '64' });
  await f.startExecutor();
  const { account, id } = await signUpWithScript(
    f,
    'hog.py',
    'data = bytearray(512 * 1024 * 1024)\nprint("never")\n',
  );
  await execute(f, account, id);
  const script = await waitFor(f, id);
  t.match(script, { status: 'failed', exit_code: 1 });
  t.match(script.error_message, /out of memory \(limit 64 MB\).*MemoryError/);
  t.ok(script.memory_usage_mb! < 64, 'the peak stayed under the limit');
});

t.test('a Node script past its heap limit fails', async (t) => {
  const f = await executorFixture(t, { SCRIPT_MEMORY_MB: '64' });
  await f.startExecutor();
  const { account, id } = await signUpWithScript(
    f,
    'hog.js',
    'const hoard = []; for (;;) hoard.push(new Array(1e6).fill(Math.random()));\n',
  );
  await execute(f, account, id);
  const script = await waitFor(f, id);
  t.equal(script.status, 'failed');
  t.ok(script.memory_usage_mb! > 32, 'the peak is recorded');
});

t.test('the sandbox: no database URL or secret in the environment, no reading other scripts', async (t) => {
  const f = await executorFixture(t);
  await f.startExecutor();
  const victim = await signUp(f.app);
  await upload(f, victim, 'secret.py', 'API_KEY = "victim-secret-strategy"\n');
  // Script bytes live in PostgreSQL, out of a script's reach; a file still left in STORAGE_DIR
  // from before (mode 0600 in a 0700 folder, as the file store wrote them) must be out of reach too.
  const victimPath = path.join(f.config.STORAGE_DIR, 'ab', 'ab000000-0000-4000-8000-000000000000.py');
  await mkdir(path.dirname(victimPath), { mode: 0o700 });
  await writeFile(victimPath, 'API_KEY = "victim-secret-strategy"\n', { mode: 0o600 });
  const { account, id } = await signUpWithScript(
    f,
    'snoop.py',
    [
      'import os, sys',
      'print("env:", sorted(os.environ.keys()))',
      'print("DATABASE_URL" in os.environ, "IBKR_TOKEN_KEY" in os.environ)',
      'print("uid", os.getuid())',
      'try:',
      `    print("read:", open(${JSON.stringify(victimPath)}).read())`,
      'except Exception as e:',
      '    print("refused:", type(e).__name__)',
    ].join('\n'),
  );
  await execute(f, account, id);
  await waitFor(f, id);
  const { logs } = await f.repos.output.readScriptLogs(id);
  t.match(logs, /False False/, 'neither DATABASE_URL nor IBKR_TOKEN_KEY');
  t.notMatch(logs, /postgres:\/\//);
  t.notMatch(logs, /victim-secret-strategy/, "another user's script cannot be read");
  t.match(logs, /refused: (PermissionError|FileNotFoundError)/);
  if (isRoot) {
    const uid = Number(/uid (\d+)/.exec(logs)?.[1]);
    t.ok(uid >= 61000 && uid < 61000 + 1024, `runs as a uid of its own (${uid}) when the executor is root`);
  }
});

t.test('JavaScript and TypeScript scripts run; TypeScript that does not compile fails clearly', async (t) => {
  const f = await executorFixture(t);
  await f.startExecutor();
  const account = await signUp(f.app);
  const js = await upload(f, account, 'a.js', 'console.log("js", 6 * 7);\n');
  const ts = await upload(
    f,
    account,
    'b.ts',
    'interface Order { qty: number }\nconst o: Order = { qty: 2 };\nconsole.log("ts", o.qty * 21);\n',
  );
  const esm = await upload(
    f,
    account,
    'c.js',
    'import { createHash } from "node:crypto";\nconsole.log(typeof createHash);\n',
  );
  const broken = await upload(f, account, 'd.ts', 'const x: = 1;\n');
  for (const id of [js, ts, esm, broken]) t.equal((await execute(f, account, id)).statusCode, 202);
  for (const id of [js, ts, esm]) t.match(await waitFor(f, id), { status: 'completed', exit_code: 0 });
  t.match((await f.repos.output.readScriptLogs(js)).logs, 'js 42\n');
  t.match((await f.repos.output.readScriptLogs(ts)).logs, 'ts 42\n');
  t.match((await f.repos.output.readScriptLogs(esm)).logs, 'function\n');
  const failed = await waitFor(f, broken);
  t.match(failed, { status: 'failed' });
  t.match(failed.error_message, /^the TypeScript does not compile: line 1/);
});

t.test('output is stored in batches, not a write per line', async (t) => {
  const f = await executorFixture(t);
  const appends: string[] = [];
  const observe = f.ctx.metrics.observeQuery;
  // Count the executor's append statements through the database's query observer.
  f.db.options.onQuery = (name, seconds, ok) => {
    if (name === 'output.appendLog') appends.push(name);
    observe(name, seconds, ok);
  };
  await f.startExecutor();
  const { account, id } = await signUpWithScript(
    f,
    'chatty.py',
    'for i in range(20000):\n    print("line", i)\n',
  );
  await execute(f, account, id);
  t.equal((await waitFor(f, id)).status, 'completed');
  const { logs } = await f.repos.output.readScriptLogs(id);
  t.equal(logs.split('\n').length - 1, 20000, 'every line is there, in order');
  t.match(logs, /^line 0\nline 1\n/);
  t.ok(logs.endsWith('line 19999\n'));
  // Batches every 0.5 s or 64 KiB: a few writes, however slowly the machine prints.
  t.ok(appends.length > 0 && appends.length < 500, `${appends.length} appends for 20000 lines`);
});

t.test('output past MAX_LOG_BYTES is cut with a marker', async (t) => {
  const f = await executorFixture(t, { MAX_LOG_BYTES: '4096' });
  await f.startExecutor();
  const { account, id } = await signUpWithScript(
    f,
    'flood.py',
    'for i in range(10000):\n    print("x" * 50)\n',
  );
  await execute(f, account, id);
  t.equal((await waitFor(f, id)).status, 'completed');
  const { logs } = await f.repos.output.readScriptLogs(id);
  t.ok(Buffer.byteLength(logs) < 4096 + 200, `${Buffer.byteLength(logs)} bytes kept`);
  t.match(logs, /\[output truncated: the log is limited to 4096 bytes\]\n$/);
  const script = await f.repos.scripts.getById(id);
  t.match(await f.repos.runs.getById(script.last_run_id!), {
    log_truncated: true,
    log_bytes: Buffer.byteLength(logs),
  });
});

t.test('cancel of a running script kills its process group within a second', async (t) => {
  const f = await executorFixture(t);
  await f.startExecutor();
  const { account, id } = await signUpWithScript(
    f,
    'long.py',
    'import subprocess, time\nsubprocess.Popen(["sleep", "60"])\nprint("running", flush=True)\ntime.sleep(60)\n',
  );
  await execute(f, account, id);
  await waitFor(f, id, (s) => s.status === 'running');
  // Wait until the script (and its child) are really there, and it has printed.
  await eventually('the script prints', async () => (await logsOf(f, id)).includes('running'));
  t.ok((await processesIn(f.workDir)).length >= 2, 'the script and its child run');
  const cancel = await f.app.inject({
    method: 'POST',
    url: `/api/v1/scripts/${id}/cancel`,
    headers: account.headers,
  });
  t.equal(cancel.statusCode, 200);
  t.equal(cancel.json().status, 'cancelled');
  const cancelledAt = Date.now();
  while ((await processesIn(f.workDir)).length > 0 && Date.now() - cancelledAt < 10_000)
    await new Promise((r) => setTimeout(r, 20));
  const gone = Date.now() - cancelledAt;
  t.same(await processesIn(f.workDir), [], 'every process of the run is gone');
  // The contract is about a second; the bound allows for a loaded machine (and for
  // scanning /proc between looks), not for waiting on a lease renewal.
  t.ok(gone < 3000, `gone ${gone} ms after the cancel answered`);
  // The executor still records what the killed run measured, and its output.
  const script = await waitFor(f, id, (s) => s.memory_usage_mb !== null);
  t.match(script, { status: 'cancelled', error_message: 'cancelled' });
  t.ok(script.execution_time_seconds !== null);
  t.match((await f.repos.output.readScriptLogs(id)).logs, /running/);
});

t.test('a script deleted with its user while running is killed (its lease is refused)', async (t) => {
  const f = await executorFixture(t);
  await f.startExecutor();
  const { account, id } = await signUpWithScript(
    f,
    'orphan.py',
    'import time\nprint("up", flush=True)\ntime.sleep(60)\n',
  );
  await execute(f, account, id);
  await waitFor(f, id, (s) => s.status === 'running');
  for (let i = 0; i < 100 && (await processesIn(f.workDir)).length < 1; i++)
    await new Promise((r) => setTimeout(r, 50));
  const res = await f.app.inject({
    method: 'DELETE',
    url: `/api/v1/users/${account.user.id}`,
    headers: account.headers,
  });
  t.equal(res.statusCode, 204);
  const deadline = Date.now() + 10_000;
  while ((await processesIn(f.workDir)).length > 0 && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
  t.same(await processesIn(f.workDir), [], 'the process is gone');
});
