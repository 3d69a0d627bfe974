/**
 * The edges of a run's life: output the database cannot take as it is, writes that
 * fail or are refused, cancels at awkward moments, leases that cannot be renewed,
 * and shutdown with claims and runs in flight.
 */
import t from 'tap';
import { DatabaseUnavailableError } from '../../src/domain/errors.ts';
import type { Sandbox } from '../../src/executor/sandbox/index.ts';
import { Repositories } from '../../src/repositories/index.ts';
import { type Account, signUp } from '../helpers/app.ts';
import {
  alive,
  type ExecutorFixture,
  eventually,
  execute,
  executorFixture,
  logsOf,
  pidsOfScript,
  processesIn,
  signUpWithScript,
  upload,
  waitFor,
} from '../helpers/executor.ts';
import { captureLogger } from '../helpers/log-capture.ts';

function cancel(f: ExecutorFixture, account: Account, id: number) {
  return f.app.inject({ method: 'POST', url: `/api/v1/scripts/${id}/cancel`, headers: account.headers });
}

/** A promise with its resolve function, to hold a step until the test lets it go. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

const runningScript = 'import time\nprint("ran", flush=True)\ntime.sleep(60)\n';

t.test('NUL bytes in the output: stored (as U+FFFD), in the logs and in the error message', async (t) => {
  const f = await executorFixture(t);
  await f.startExecutor();
  const account = await signUp(f.app);
  const fine = await upload(f, account, 'nul.py', 'import sys\nsys.stdout.write("a\\0b\\n")\nprint("end")\n');
  const bad = await upload(
    f,
    account,
    'nul-fail.py',
    'import sys\nprint("before")\nsys.stderr.write("bad\\0byte\\n")\nsys.exit(4)\n',
  );
  for (const id of [fine, bad]) await execute(f, account, id);
  t.match(await waitFor(f, fine), { status: 'completed', exit_code: 0 });
  t.equal(await logsOf(f, fine), 'a\uFFFDb\nend\n');
  t.match(await waitFor(f, bad), {
    status: 'failed',
    exit_code: 4,
    error_message: 'exited with code 4: bad\uFFFDbyte',
  });
  t.match(await logsOf(f, bad), /before\n/);
});

t.test('output that could not be written while the run went is kept with its outcome', async (t) => {
  const f = await executorFixture(t);
  // Every append fails as if the database were down; the outcome statements work.
  const repos = new Repositories(f.db);
  repos.output.appendLog = async () => {
    throw new DatabaseUnavailableError('the database is not answering');
  };
  await f.startExecutor({}, { repos });
  const account = await signUp(f.app);
  const ok = await upload(f, account, 'ok.py', 'print("kept on success")\n');
  const failing = await upload(f, account, 'ko.py', 'print("kept on failure")\nraise SystemExit(2)\n');
  for (const id of [ok, failing]) await execute(f, account, id);
  t.match(await waitFor(f, ok), { status: 'completed' });
  t.equal(await logsOf(f, ok), 'kept on success\n');
  t.match(await waitFor(f, failing), { status: 'failed', exit_code: 2 });
  t.equal(await logsOf(f, failing), 'kept on failure\n');
});

t.test('a cancel heard while the run is being claimed: the script never starts', async (t) => {
  const f = await executorFixture(t);
  const { account, id } = await signUpWithScript(f, 'long.py', runningScript);
  const repos = new Repositories(f.db);
  const claimed = gate();
  const release = gate();
  const claim = repos.leases.claim.bind(repos.leases);
  repos.leases.claim = async (lease, limit) => {
    const got = await claim(lease, limit);
    if (got.some((c) => c.script_id === id)) {
      claimed.open();
      await release.opened; // the claim's answer is late: the cancel is heard first
    }
    return got;
  };
  await f.startExecutor({}, { repos });
  await execute(f, account, id);
  await claimed.opened;
  t.equal((await cancel(f, account, id)).statusCode, 200);
  await new Promise((resolve) => setTimeout(resolve, 500)); // time for the NOTIFY to arrive
  release.open();
  const script = await waitFor(f, id, (s) => s.execution_time_seconds !== null, 10_000);
  t.match(script, { status: 'cancelled', execution_time_seconds: 0, exit_code: null, memory_usage_mb: null });
  t.notMatch(await logsOf(f, id), /ran/, 'the script did not run');
  t.same(await processesIn(f.workDir), []);
});

t.test(
  'a cancel heard while the sandbox is set up: the process is stopped as soon as it exists',
  async (t) => {
    const f = await executorFixture(t);
    const { account, id } = await signUpWithScript(f, 'long.py', runningScript);
    const { log, lines } = captureLogger('info');
    const executor = await f.startExecutor({}, { log });
    // The executor's sandbox (private): its set-up of the next run is held until the test lets it go.
    const sandbox = (executor as unknown as { host: { sandbox: Sandbox } }).host.sandbox;
    const confining = gate();
    const release = gate();
    const confine = sandbox.confine.bind(sandbox);
    sandbox.confine = async (run) => {
      confining.open();
      await release.opened;
      return confine(run);
    };
    await execute(f, account, id);
    await confining.opened;
    t.equal((await cancel(f, account, id)).statusCode, 200);
    await eventually('the executor hearing the cancel', () =>
      lines.some((l) => l.msg === 'killing a run' && l.reason === 'cancelled'),
    );
    release.open();
    // Its 60 s sleep (or the 20 s time limit) would be long after this.
    const script = await waitFor(f, id, (s) => s.execution_time_seconds !== null, 10_000);
    t.match(script, { status: 'cancelled', exit_code: null });
    t.ok(
      lines.some((l) => l.msg === 'run starting'),
      'the cancel came after the run had got as far as its set-up',
    );
    await eventually('no process is left', async () => (await processesIn(f.workDir)).length === 0);
  },
);

t.test(
  'a script cancelled and queued again at once: the new run runs while the earlier one is recorded, each gets its own record',
  async (t) => {
    const f = await executorFixture(t);
    const { account, id } = await signUpWithScript(f, 'long.py', runningScript);
    const repos = new Repositories(f.db);
    const recording = gate();
    const release = gate();
    const record = repos.outcomes.recordCancelledRun.bind(repos.outcomes);
    let held = false;
    repos.outcomes.recordCancelledRun = async (...args) => {
      if (!held) {
        held = true; // the first run's last write is slow: its executor is still finishing it
        recording.open();
        await release.opened;
      }
      return record(...args);
    };
    await f.startExecutor({}, { repos });
    await execute(f, account, id);
    const first = (await f.repos.scripts.getById(id)).last_run_id!;
    await eventually('the first run runs', async () => (await logsOf(f, id)).includes('ran'));
    t.equal((await cancel(f, account, id)).statusCode, 200);
    await recording.opened;
    const again = await execute(f, account, id);
    t.equal(again.statusCode, 202, 'queued again while the first run is finishing');
    const second = again.json().id as number;
    t.not(second, first, 'a run of its own');
    await eventually('the second run runs', async () => (await logsOf(f, id)).includes('ran'));
    t.equal((await f.repos.runs.getById(second)).status, 'running', 'claimed without waiting');
    release.open();
    await eventually(
      'the first run is recorded',
      async () => (await f.repos.runs.getById(first)).execution_time_seconds !== null,
    );
    t.match(await f.repos.runs.getById(second), { status: 'running', execution_time_seconds: null });
    t.match(
      await f.repos.scripts.getById(id),
      { status: 'running', last_run_id: second, execution_time_seconds: null },
      'the first run’s record did not land on the script',
    );
    t.equal((await cancel(f, account, id)).statusCode, 200);
    const cancelled = await waitFor(f, id, (s) => s.execution_time_seconds !== null);
    t.match(
      cancelled,
      { status: 'cancelled' },
      'the second run is watched: its cancel is heard and recorded',
    );
    await eventually('no process is left', async () => (await processesIn(f.workDir)).length === 0);
  },
);

t.test(
  'a claim whose answer is lost: the scripts it took are failed as never started, and claiming goes on',
  async (t) => {
    const f = await executorFixture(t, { EXECUTOR_LEASE_SECONDS: '60' });
    const repos = new Repositories(f.db);
    const claim = repos.leases.claim.bind(repos.leases);
    let lost = false;
    repos.leases.claim = async (...args) => {
      const got = await claim(...args);
      if (got.length > 0 && !lost) {
        lost = true; // committed, but the answer never arrives
        throw new DatabaseUnavailableError('the connection was lost');
      }
      return got;
    };
    await f.startExecutor({}, { repos });
    const { account, id } = await signUpWithScript(f, 'hello.py', 'print("ran")\n');
    await execute(f, account, id);
    // Long before the 60 s lease could lapse.
    const failed = await waitFor(f, id, undefined, 10_000);
    t.match(failed, {
      status: 'failed',
      error_message: /the script did not run/,
      exit_code: null,
      execution_time_seconds: null,
    });
    t.equal(await logsOf(f, id), '', 'it did not run');
    t.equal((await execute(f, account, id)).statusCode, 202, 'executed again');
    t.match(await waitFor(f, id), { status: 'completed', exit_code: 0 }, 'and this time it runs');
    t.equal(await logsOf(f, id), 'ran\n');
  },
);

t.test('a refused output write kills the run at once, not at the next lease renewal', async (t) => {
  // Renewals every 20 s: only the refused write can explain a quick kill.
  const f = await executorFixture(t, { EXECUTOR_LEASE_SECONDS: '60' });
  await f.startExecutor();
  const { account, id } = await signUpWithScript(
    f,
    'chatty.py',
    'import time\nwhile True:\n    print("tick", flush=True)\n    time.sleep(0.1)\n',
  );
  await execute(f, account, id);
  await eventually('output is stored', async () => (await logsOf(f, id)).includes('tick'));
  // Another executor took the run over (as after a lapsed lease and a recovery).
  await f.database.sql`update script_runs set executor_id = 'someone-else' where script_id = ${id}`;
  const since = Date.now();
  await eventually('the process is gone', async () => (await processesIn(f.workDir)).length === 0, 10_000);
  t.ok(Date.now() - since < 10_000, `killed ${Date.now() - since} ms after its output was refused`);
  const [row] = await f.database.sql`select status, executor_id from script_runs where script_id = ${id}`;
  t.same(row, { status: 'running', executor_id: 'someone-else' }, 'not ours to record: left to its holder');
});

t.test('self-fencing: runs whose lease cannot be renewed are killed before the lease lapses', async (t) => {
  // Lease 10 s: the executor kills at 8 s, 2 s before anybody may fail the run for its lease.
  const f = await executorFixture(t, { EXECUTOR_LEASE_SECONDS: '10' });
  const repos = new Repositories(f.db);
  repos.leases.renewLeases = async () => {
    throw new DatabaseUnavailableError('the database is not answering');
  };
  await f.startExecutor({}, { repos });
  const { account, id } = await signUpWithScript(f, 'long.py', runningScript);
  await execute(f, account, id);
  await eventually('the script runs', async () => (await logsOf(f, id)).includes('ran'));
  await eventually('the run is killed', async () => (await processesIn(f.workDir)).length === 0, 20_000);
  const script = await waitFor(f, id, (s) => s.status !== 'running', 20_000);
  t.match(script, { status: 'failed', error_message: /could not renew its lease/ });
  t.ok(script.memory_usage_mb !== null, 'what the killed process measured is recorded');
  const lost = (await f.ctx.metrics.scriptRuns.get()).values.find((v) => v.labels.outcome === 'lost');
  t.equal(lost?.value, 1);
});

t.test('stop() with a claim in flight: the claimed run is waited for, not left behind', async (t) => {
  const f = await executorFixture(t);
  const { account, id } = await signUpWithScript(f, 'quick.py', 'print("done")\n');
  const repos = new Repositories(f.db);
  const claimed = gate();
  const release = gate();
  const claim = repos.leases.claim.bind(repos.leases);
  repos.leases.claim = async (lease, limit) => {
    const got = await claim(lease, limit);
    if (got.length > 0) {
      claimed.open();
      await release.opened;
    }
    return got;
  };
  const executor = await f.startExecutor({}, { repos });
  await execute(f, account, id);
  await claimed.opened;
  const stopped = executor.stop(30_000);
  // stop() must wait for the claim, however long its answer takes.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  release.open();
  await stopped;
  t.match(await f.repos.scripts.getById(id), { status: 'completed' }, 'it ran within the grace period');
  t.equal(await logsOf(f, id), 'done\n');
  t.same(await f.repos.scriptListings.listRunning(), []);
});

t.test('during the grace period of stop(), leases are renewed and cancels heard', async (t) => {
  // Lease 2 s: without renewals, the other executor would fail the run long before it ends.
  const f = await executorFixture(t, { EXECUTOR_LEASE_SECONDS: '2' });
  const stopping = await f.startExecutor();
  const account = await signUp(f.app);
  const finishing = await upload(f, account, 'five.py', 'import time\ntime.sleep(5)\nprint("finished")\n');
  const cancelled = await upload(
    f,
    account,
    'long.py',
    'import os, time\nprint("pid", os.getpid(), flush=True)\ntime.sleep(60)\n',
  );
  for (const id of [finishing, cancelled]) await execute(f, account, id);
  await eventually('the long one runs', async () => /pid/.test(await logsOf(f, cancelled)));
  // Its pid on the host (the script sees another one, in its own pid namespace).
  const pid = await eventually('its process is found', async () => (await pidsOfScript(cancelled))[0]);
  await f.startExecutor(); // a bystander that fails lapsed leases
  const stopped = stopping.stop(60_000);
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.equal((await cancel(f, account, cancelled)).statusCode, 200);
  const cancelledAt = Date.now();
  await eventually('the cancelled run is killed', async () => !(await alive(pid)), 10_000);
  t.ok(Date.now() - cancelledAt < 10_000, 'the cancel was heard during the grace period');
  await stopped;
  t.match(await f.repos.scripts.getById(finishing), { status: 'completed' }, 'its lease held to the end');
  t.equal(await logsOf(f, finishing), 'finished\n');
  const killed = await waitFor(f, cancelled, (s) => s.memory_usage_mb !== null, 10_000);
  t.match(killed, { status: 'cancelled' }, 'and recorded as cancelled, with its measurements');
});

t.test(
  'stop() lets a short run finish, kills a long one after the grace period and records it',
  async (t) => {
    // The quick script needs 0.3 s of an 8 s grace: a wide margin for a loaded machine.
    const f = await executorFixture(t, { EXECUTOR_SHUTDOWN_GRACE_SECONDS: '8' });
    const executor = await f.startExecutor();
    const account = await signUp(f.app);
    const quick = await upload(f, account, 'quick.py', 'import time\ntime.sleep(0.3)\nprint("done")\n');
    const slow = await upload(
      f,
      account,
      'slow.py',
      'import time\nprint("started", flush=True)\ntime.sleep(60)\n',
    );
    await execute(f, account, quick);
    await execute(f, account, slow);
    await waitFor(f, slow, (s) => s.status === 'running');
    await waitFor(f, quick, (s) => s.status !== 'queued');
    for (let i = 0; i < 100 && (await processesIn(f.workDir)).length < 1; i++)
      await new Promise((r) => setTimeout(r, 50));
    await executor.stop();
    t.equal((await f.repos.scripts.getById(quick)).status, 'completed', 'finished within the grace period');
    const killed = await f.repos.scripts.getById(slow);
    t.match(killed, { status: 'failed', error_message: /the executor shut down before the script finished/ });
    t.ok(killed.memory_usage_mb !== null, 'measured even when killed');
    t.same(await f.repos.scriptListings.listRunning(), [], 'nothing is left running');
    t.same(await processesIn(f.workDir), []);
    // A stopped executor claims nothing.
    const later = await upload(f, account, 'later.py', 'print(1)\n');
    await execute(f, account, later);
    await new Promise((r) => setTimeout(r, 500));
    t.equal((await f.repos.scripts.getById(later)).status, 'queued');
  },
);
