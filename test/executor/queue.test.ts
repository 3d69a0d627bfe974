/**
 * The queue under concurrency: many executors, many requests, a dead executor.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { loadConfig } from '../../src/config.ts';
import { InvalidStateError } from '../../src/domain/errors.ts';
import { Executor } from '../../src/executor/executor.ts';
import { hostLabel } from '../../src/executor/executor-dir.ts';
import { Metrics } from '../../src/metrics.ts';
import { Repositories } from '../../src/repositories/index.ts';
import { signUp } from '../helpers/app.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testLogger } from '../helpers/db.ts';
import { childEnv, entryArgs } from '../helpers/entry.ts';
import {
  alive,
  eventually,
  execute,
  executorFixture,
  logsOf,
  pidsOfScript,
  processesIn,
  upload,
  waitFor,
} from '../helpers/executor.ts';
import { makeScript, makeUser } from '../helpers/fixtures.ts';

// 500 real runs take more than tap's default 120 s per file on a loaded 2-core machine.
t.setTimeout(300_000);

t.test('four claimers against 500 queued runs: each claimed exactly once', async (t) => {
  const f = await executorFixture(t);
  const repos = f.repos;
  const user = await makeUser(repos);
  const sql = f.database.sql;
  const ids: number[] = [];
  for (let i = 0; i < 500; i++) await makeScript(repos, user.id);
  const runs = await sql<{ id: number }[]>`
    insert into script_runs (script_id, user_id, script_sha256)
    select id, user_id, sha256 from scripts
    returning id
  `;
  ids.push(...runs.map((r) => r.id).sort((a, b) => a - b));
  const claimed: number[][] = [[], [], [], []];
  await Promise.all(
    claimed.map(async (mine, n) => {
      for (;;) {
        const batch = await repos.leases.claim({ executorId: `claimer-${n}`, seconds: 60 }, 7);
        if (batch.length === 0) return;
        mine.push(...batch.map((c) => c.id));
      }
    }),
  );
  const all = claimed.flat();
  t.equal(all.length, 500, 'no run claimed twice');
  t.same(
    [...new Set(all)].sort((a, b) => a - b),
    ids,
    'every run claimed',
  );
  const [row] =
    await sql`select count(*) as n from script_runs where status = 'running' and executor_id like 'claimer-%'`;
  t.equal(row?.n, 500);
});

t.test('several executors run 500 queued runs, each exactly once', async (t) => {
  const f = await executorFixture(t, { EXECUTOR_CONCURRENCY: '4', EXECUTOR_POLL_MS: '200' });
  const account = await signUp(f.app);
  const source = 'import os\nprint("ran", os.environ["DOLLARCLUB_SCRIPT_ID"])\n';
  // One upload, then 499 more rows of the same file (uploading 500 times is not what is tested).
  await upload(f, account, 's.py', source);
  const sql = f.database.sql;
  await sql`
    insert into scripts (user_id, filename, original_filename, file_path, file_size, file_extension, sha256)
    select user_id, gen_random_uuid() || '.py', original_filename, file_path, file_size, file_extension, sha256
    from scripts, generate_series(1, 499)
  `;
  await sql`
    insert into script_contents (script_id, user_id, content)
    select s.id, s.user_id, c.content
    from scripts s, script_contents c
    where s.id <> c.script_id
  `;
  await sql`
    with runs as (
      insert into script_runs (script_id, user_id, script_sha256)
      select id, user_id, sha256 from scripts
      returning id, script_id
    )
    update scripts set status = 'queued', last_run_id = runs.id, run_count = 1 from runs where scripts.id = runs.script_id
  `;
  // Each executor gets its own repositories, whose claims we record on the way out.
  const claims = new Map<number, string[]>();
  const config = loadConfig({ NODE_ENV: 'test', STORAGE_DIR: f.config.STORAGE_DIR, ...f.env });
  const executors = Array.from({ length: 3 }, () => {
    const repos = new Repositories(f.db);
    const executor: Executor = new Executor({
      config,
      repos,
      sql,
      storage: f.storage,
      log: testLogger(),
      metrics: new Metrics({ defaultMetrics: false }),
    });
    const claim = repos.leases.claim.bind(repos.leases);
    repos.leases.claim = async (lease, limit) => {
      const got = await claim(lease, limit);
      for (const c of got) claims.set(c.id, [...(claims.get(c.id) ?? []), executor.id]);
      return got;
    };
    return executor;
  });
  t.teardown(() => Promise.all(executors.map((e) => e.stop(0))));
  await Promise.all(executors.map((e) => e.start()));
  const deadline = Date.now() + 240_000;
  for (;;) {
    const [row] =
      await sql`select count(*) filter (where status in ('queued', 'running')) as left from script_runs`;
    if (row?.left === 0 || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const rows = await sql<{ script_id: number; status: string; output: string; summary: string }[]>`
    select r.script_id, r.status, s.status as summary,
      (select string_agg(data, '' order by seq) from run_log_chunks where run_id = r.id) as output
    from script_runs as r
    join scripts as s on s.id = r.script_id
    order by r.id
  `;
  t.equal(rows.filter((r) => r.status === 'completed').length, 500, 'all completed');
  t.equal(rows.filter((r) => r.summary === 'completed').length, 500, 'and so are their scripts');
  t.ok(
    rows.every((r) => r.output === `ran ${r.script_id}\n`),
    'each ran once, with its own output',
  );
  t.equal(claims.size, 500);
  t.ok(
    [...claims.values()].every((by) => by.length === 1),
    'no script was claimed twice',
  );
  t.equal(new Set([...claims.values()].flat()).size, 3, 'all three executors took part');
});

t.test(
  'an executor killed mid-run: its script dies with it, leftovers are reaped, the run is failed after the lease',
  async (t) => {
    const f = await executorFixture(t, { EXECUTOR_LEASE_SECONDS: '2' });
    const account = await signUp(f.app);
    const id = await upload(
      f,
      account,
      'long.py',
      [
        'import os, subprocess, time',
        '# a child of its own: the parent-death signal does not reach it, reaping does',
        'child = subprocess.Popen(["sleep", "60"])',
        'print("started", os.getpid(), child.pid, flush=True)',
        'time.sleep(60)',
      ].join('\n'),
    );
    const child = spawn(process.execPath, entryArgs('test/fixtures/executor-process.ts'), {
      env: childEnv({
        ...process.env,
        ...f.env,
        NODE_OPTIONS: '',
        DATABASE_URL: f.database.url,
        STORAGE_DIR: f.config.STORAGE_DIR,
        LOG_LEVEL: 'warn',
      }),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    t.teardown(() => {
      child.kill('SIGKILL');
    });
    const ready = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        const m = /ready (\S+)/.exec(d.toString());
        if (m) resolve(m[1]!);
      });
      child.on('exit', (code) => reject(new Error(`executor process exited with ${code}`)));
    });
    await execute(f, account, id);
    const running = await waitFor(f, id, (s) => s.status === 'running');
    t.equal(running.status, 'running');
    const sql = f.database.sql;
    const runId = running.last_run_id!;
    const [held] = await sql`select executor_id from script_runs where id = ${runId}`;
    t.equal(held?.executor_id, ready, 'the other process holds it');
    // Wait until its first output is stored, then kill the executor (not the script).
    const started = await eventually('the script reports its pids', async () =>
      /started (\d+) (\d+)/.exec(await logsOf(f, id)),
    );
    // Their pids on the host (inside, the script sees those of its own pid namespace).
    t.ok(started, 'the script reports');
    const [scriptPid, childPid] = (await pidsOfScript(id)) as [number, number];
    t.ok(childPid, 'the script and its child are found');
    t.ok(await alive(scriptPid), 'the script runs');
    const executorDir = path.join(f.workDir, ready);
    t.ok(existsSync(executorDir), 'in the executor’s own folder');
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));

    // time dies with the executor (its parent-death signal), the script with time.
    await eventually('the script dies with its executor', async () => !(await alive(scriptPid)), 10_000);
    t.notOk(await alive(scriptPid), 'the script is gone without anybody else killing it');

    // The next executor to start reaps what is left, then notices the lapsed lease.
    await f.startExecutor();
    t.notOk(await alive(childPid), 'the script’s own child is reaped at the next start');
    t.same(await processesIn(f.workDir), [], 'no process of the dead executor is left');
    t.notOk(existsSync(executorDir), 'the dead executor’s folder is removed');
    const failed = await waitFor(f, id, (s) => s.status !== 'running', 20_000);
    t.match(failed, {
      status: 'failed',
      error_message: /stopped renewing its lease/,
      exit_code: null,
      execution_time_seconds: null,
      memory_usage_mb: null,
    });
    t.match(await logsOf(f, id), /started/, 'output stored before the death is kept');
    const leaseLost = (await f.ctx.metrics.scriptRuns.get()).values.find(
      (v) => v.labels.outcome === 'lease_lost',
    );
    t.equal(leaseLost?.value, 1, 'counted as script_runs_total{outcome="lease_lost"}');

    // The dead executor's late writes, had it woken up, would change nothing.
    const before = await f.repos.scripts.getById(id);
    const result = { exit_code: 0, execution_time_seconds: 1, memory_usage_mb: 1 };
    const runBefore = await f.repos.runs.getById(runId);
    await rejectsWith(t, f.repos.outcomes.complete(runId, result, ready), InvalidStateError);
    await rejectsWith(t, f.repos.outcomes.fail(runId, 'late', result, ready), InvalidStateError);
    t.equal(await f.repos.output.appendLog(runId, ready, 99, 'late output'), false);
    t.equal(await f.repos.outcomes.recordCancelledRun(runId, ready, result), false);
    t.same(await f.repos.scripts.getById(id), before, 'the script is unchanged');
    t.same(await f.repos.runs.getById(runId), runBefore, 'and so is the run');
    t.same(await f.repos.leases.renewLeases([runId], { executorId: ready, seconds: 30 }), []);
  },
);

t.test(
  'an executor reaps the processes and folder of a dead executor of this host, not of a live one',
  async (t) => {
    const f = await executorFixture(t);
    const host = hostLabel();
    // A pid that no longer exists: a process that has exited.
    const gone = spawn('/bin/true');
    await new Promise((resolve) => gone.once('exit', resolve));
    const deadDir = path.join(f.workDir, `${host}:${gone.pid}:abcdef`);
    const liveDir = path.join(f.workDir, `${host}:${process.pid}:fedcba`);
    const otherHostDir = path.join(f.workDir, `elsewhere:${gone.pid}:abcdef`);
    for (const dir of [deadDir, liveDir, otherHostDir])
      await mkdir(path.join(dir, 'run-1'), { recursive: true });
    const leftover = spawn('/bin/sleep', ['60'], { cwd: path.join(deadDir, 'run-1'), stdio: 'ignore' });
    const bystander = spawn('/bin/sleep', ['60'], { cwd: path.join(liveDir, 'run-1'), stdio: 'ignore' });
    t.teardown(() => {
      bystander.kill('SIGKILL');
      leftover.kill('SIGKILL');
    });
    await eventually('the sleepers run', async () => (await processesIn(f.workDir)).length === 2);
    await f.startExecutor();
    await eventually('the leftover is killed', async () => !(await alive(leftover.pid!)), 5000);
    t.notOk(existsSync(deadDir), 'the dead executor’s folder is removed');
    t.ok(await alive(bystander.pid!), 'a live executor’s process is left alone');
    t.ok(existsSync(liveDir) && existsSync(otherHostDir), 'so are its folder and another host’s');
  },
);

t.test('50 concurrent execute requests on one script: exactly one 202, the rest 409', async (t) => {
  const f = await executorFixture(t);
  const account = await signUp(f.app);
  const id = await upload(f, account, 'once.py', 'print(1)\n');
  const answers = await Promise.all(Array.from({ length: 50 }, () => execute(f, account, id)));
  const codes = answers.map((a) => a.statusCode).sort();
  t.equal(codes.filter((c) => c === 202).length, 1);
  t.equal(codes.filter((c) => c === 409).length, 49);
  t.ok(
    answers.filter((a) => a.statusCode === 409).every((a) => a.json().code === 'INVALID_STATE'),
    'the losers get INVALID_STATE',
  );
  const winner = answers.find((a) => a.statusCode === 202)!;
  t.match(winner.json(), { script_id: id, status: 'queued', trigger: 'manual' });
  t.equal(winner.headers.location, `/api/v1/runs/${winner.json().id}`);
  const [row] = await f.database.sql`select count(*) as n from script_runs where script_id = ${id}`;
  t.equal(row?.n, 1, 'one run row');
});

t.test('the per-user cap holds under concurrent execute requests', async (t) => {
  const f = await executorFixture(t, { MAX_CONCURRENT_SCRIPTS: '5' });
  const account = await signUp(f.app);
  const other = await signUp(f.app);
  const ids: number[] = [];
  for (let i = 0; i < 12; i++) ids.push(await upload(f, account, `s${i}.py`, 'print(1)\n'));
  const otherId = await upload(f, other, 'o.py', 'print(1)\n');
  const answers = await Promise.all(ids.map((id) => execute(f, account, id)));
  const codes = answers.map((a) => a.statusCode);
  t.equal(codes.filter((c) => c === 202).length, 5, 'five queued');
  t.equal(codes.filter((c) => c === 429).length, 7, 'seven refused');
  const refused = answers.find((a) => a.statusCode === 429);
  t.match(refused?.json(), { code: 'TOO_MANY_RUNNING', status: 429 });
  t.match(refused?.headers['content-type'], /application\/problem\+json/);
  t.equal((await execute(f, other, otherId)).statusCode, 202, "another user's cap is their own");
});
