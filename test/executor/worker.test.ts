/**
 * `npm run worker` as a process of its own: it runs scripts, serves its metrics
 * and health on METRICS_PORT, and shuts down cleanly on SIGTERM.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import t from 'tap';
import { childEnv, entryArgs } from '../helpers/entry.ts';
import { eventually, execute, executorFixture, signUpWithScript, waitFor } from '../helpers/executor.ts';

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

t.test('the worker serves /metrics and /health on METRICS_PORT, and closes them on SIGTERM', async (t) => {
  const f = await executorFixture(t);
  const port = await freePort();
  const worker = spawn(process.execPath, entryArgs('src/worker.ts'), {
    env: childEnv({
      ...process.env,
      ...f.env,
      NODE_ENV: 'test',
      NODE_OPTIONS: '',
      DATABASE_URL: f.database.url,
      STORAGE_DIR: f.config.STORAGE_DIR,
      HOST: '127.0.0.1',
      METRICS_PORT: String(port),
      LOG_LEVEL: 'warn',
    }),
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => worker.once('exit', resolve));
  t.teardown(() => {
    worker.kill('SIGKILL');
  });
  const base = `http://127.0.0.1:${port}`;
  const health = await eventually(
    'the worker answers',
    () => fetch(`${base}/health`).catch(() => null),
    60_000,
  );
  t.equal(health.status, 200);
  t.same(await health.json(), { status: 'ok' });

  const { account, id } = await signUpWithScript(f, 'hello.py', 'print("hello from the worker")\n');
  await execute(f, account, id);
  t.match(await waitFor(f, id), { status: 'completed' }, 'the worker ran it');
  const metrics = await fetch(`${base}/metrics`);
  t.equal(metrics.status, 200);
  t.match(metrics.headers.get('content-type'), /^text\/plain/);
  const text = await metrics.text();
  t.match(text, /^script_runs_total\{outcome="completed"\} 1$/m);
  t.match(text, /^script_run_duration_seconds_count\{outcome="completed"\} 1$/m);
  t.match(text, /^script_queue_depth\{status="queued"\} 0$/m);
  t.match(text, /^db_query_duration_seconds_count\{query="executions.claim",outcome="ok"\} \d+$/m);

  worker.kill('SIGTERM');
  t.equal(await exited, 0, 'exits 0 on SIGTERM');
  await t.rejects(fetch(`${base}/health`), 'the metrics server is closed');
});
