/**
 * An app and executors over one test database, with short leases and polls so
 * runs finish quickly, and a scratch root the unprivileged script user can enter.
 */
import { chmod, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { loadConfig } from '../../src/config.ts';
import type { Script } from '../../src/domain/script.ts';
import { Executor, type ExecutorOptions } from '../../src/executor/executor.ts';
import { type Account, multipartFile, signUp, type TestApp, testApp } from './app.ts';
import { testLogger } from './db.ts';

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
  /** Starts an executor on the fixture's database; `options` replace its parts (repos, log, …). */
  startExecutor(env?: Record<string, string>, options?: Partial<ExecutorOptions>): Promise<Executor>;
  /** Builds one without starting it. */
  makeExecutor(env?: Record<string, string>, options?: Partial<ExecutorOptions>): Executor;
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
    // A safety net only: tests assert that nothing is left before they end.
    await killProcessesIn(base);
    await rm(base, { recursive: true, force: true });
  });
  const makeExecutor = (more: Record<string, string> = {}, options: Partial<ExecutorOptions> = {}) => {
    const config = loadConfig({
      NODE_ENV: 'test',
      STORAGE_DIR: fixture.config.STORAGE_DIR,
      // The app's key: what the API encrypted, the executor decrypts.
      ...(fixture.config.IBKR_TOKEN_KEY === undefined
        ? {}
        : { IBKR_TOKEN_KEY: fixture.config.IBKR_TOKEN_KEY }),
      ...allEnv,
      ...more,
    });
    const executor = new Executor({
      config,
      repos: fixture.repos,
      sql: fixture.database.sql,
      storage: fixture.storage,
      log: testLogger(),
      // The app's own metrics, as in `npm start`: runs show up on its /metrics.
      metrics: fixture.ctx.metrics,
      ...options,
    });
    executors.push(executor);
    return executor;
  };
  return {
    ...fixture,
    workDir,
    env: allEnv,
    makeExecutor,
    async startExecutor(more = {}, options = {}) {
      const executor = makeExecutor(more, options);
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
    const script = await f.repos.scripts.getById(id);
    if (until(script)) return script;
    if (Date.now() > deadline) throw new Error(`script ${id} still ${script.status} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Polls `check` every 50 ms until it returns something truthy; throws after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T> | T,
  timeoutMs = 20_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The whole output of a script's latest run. */
export async function logsOf(f: TestApp, id: number): Promise<string> {
  return (await f.repos.output.readScriptLogs(id)).logs;
}

/** Whether a process exists (a zombie counts as gone). */
export async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
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

/**
 * Host pids of a script's processes (its environment names it): what a script reports
 * from inside its pid namespace (os.getpid()) is not a pid of the host.
 */
export async function pidsOfScript(id: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const environ = await readFile(`/proc/${entry}/environ`, 'utf8').catch(() => '');
    if (environ.split('\0').includes(`DOLLARCLUB_SCRIPT_ID=${id}`)) pids.push(Number(entry));
  }
  return pids.sort((a, b) => a - b);
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
