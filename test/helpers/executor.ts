/**
 * An app and executors over one test database, with short leases and polls so
 * runs finish quickly, and a scratch root the unprivileged script user can enter.
 */
import { chmod, mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { loadConfig } from '../../src/config.js';
import type { Script } from '../../src/domain/script.js';
import { Executor } from '../../src/executor/executor.js';
import { type Account, multipartFile, signUp, type TestApp, testApp } from './app.js';
import { testLogger } from './db.js';

export const FAST_EXECUTOR_ENV = {
  EXECUTOR_POLL_MS: '100',
  EXECUTOR_LEASE_SECONDS: '3',
  EXECUTOR_CONCURRENCY: '4',
  EXECUTOR_SHUTDOWN_GRACE_SECONDS: '1',
  MAX_EXECUTION_SECONDS: '20',
  SCRIPT_MEMORY_MB: '256',
};

export interface ExecutorFixture extends TestApp {
  workDir: string;
  env: Record<string, string>;
  startExecutor(env?: Record<string, string>): Promise<Executor>;
}

export async function executorFixture(t: Test, env: Record<string, string> = {}): Promise<ExecutorFixture> {
  const base = await mkdtemp(path.join(tmpdir(), 'dollarclub-exec-'));
  // The script user must be able to enter the scratch root (its own folder is 0700).
  await chmod(base, 0o755);
  const workDir = path.join(base, 'runs');
  const allEnv = { ...FAST_EXECUTOR_ENV, EXECUTOR_WORK_DIR: workDir, ...env };
  const fixture = await testApp(t, allEnv);
  const executors: Executor[] = [];
  t.teardown(async () => {
    await Promise.all(executors.map((e) => e.stop(0)));
    await killProcessesIn(base);
    await rm(base, { recursive: true, force: true });
  });
  return {
    ...fixture,
    workDir,
    env: allEnv,
    async startExecutor(more = {}) {
      const config = loadConfig({
        NODE_ENV: 'test',
        STORAGE_DIR: fixture.config.STORAGE_DIR,
        ...allEnv,
        ...more,
      });
      const executor = new Executor({
        config,
        repos: fixture.ctx.repos,
        sql: fixture.database.sql,
        storage: fixture.storage,
        log: testLogger(),
        // The app's own metrics, as in `npm start`: runs show up on its /metrics.
        metrics: fixture.ctx.metrics,
      });
      executors.push(executor);
      await executor.start();
      return executor;
    },
  };
}

/** Uploads a script through the API and returns its id. */
export async function upload(f: TestApp, account: Account, name: string, source: string): Promise<number> {
  const body = multipartFile(name, source);
  const res = await f.app.inject({
    method: 'POST',
    url: '/api/v1/scripts',
    headers: { ...account.headers, ...body.headers },
    payload: body.payload,
  });
  if (res.statusCode !== 201) throw new Error(`upload failed: ${res.statusCode} ${res.body}`);
  return res.json().id;
}

export async function execute(f: TestApp, account: Account, id: number) {
  return f.app.inject({ method: 'POST', url: `/api/v1/scripts/${id}/execute`, headers: account.headers });
}

/** Polls the script until it leaves queued/running (or `until` says so); returns it. */
export async function waitFor(
  f: TestApp,
  id: number,
  until: (script: Script) => boolean = (s) => !['queued', 'running'].includes(s.status),
  timeoutMs = 30_000,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const script = await f.ctx.repos.scripts.getById(id);
    if (until(script)) return script;
    if (Date.now() > deadline) throw new Error(`script ${id} still ${script.status} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export async function signUpWithScript(f: TestApp, name: string, source: string) {
  const account = await signUp(f.app);
  const id = await upload(f, account, name, source);
  return { account, id };
}

/** Pids of live processes whose working directory is inside `dir`. */
export async function processesIn(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cwd = await readlink(`/proc/${entry}/cwd`);
      if (cwd.startsWith(dir)) pids.push(Number(entry));
    } catch {
      // gone, or not ours to look at
    }
  }
  return pids;
}

async function killProcessesIn(dir: string): Promise<void> {
  for (const pid of await processesIn(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
