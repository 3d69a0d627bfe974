/**
 * GET /api/v1/scripts/:id with a Bearer token through the real app vs a bare
 * Fastify route running the same query without auth and schemas, over real HTTP
 * on 127.0.0.1. Each server runs in its own process; the load generator (wrk when
 * installed, else autocannon in this process: bench/load-generator.ts) loads one at a
 * time with fixed concurrency for a fixed time, alternating A B, B A, ... after a
 * warm-up of each. Target: ≥ 0.85x the requests/second. Each server's CPU time per
 * request is measured from /proc.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { newToken, tokenHash } from '../src/services/tokens.ts';
import type { BenchContext } from './context.ts';
import { cpuSeconds, type LoadResult, pickLoadGenerator } from './load-generator.ts';
import { type BenchResult, median, type Side, sleep } from './measure.ts';

export const HTTP_TARGET = 0.85;
const HERE = path.dirname(fileURLToPath(import.meta.url));

export interface HttpOptions {
  connections: number;
  seconds: number;
  rounds: number;
  warmupSeconds: number;
  resultsDir: string;
}

export async function httpBenchmark(ctx: BenchContext, options: HttpOptions): Promise<BenchResult> {
  // A script and its owner; the token is stored hashed, as login would store it.
  const target = ctx.samples.scripts[0];
  if (target === undefined) throw new Error('no script to fetch');
  const token = newToken();
  await ctx.repos.tokens.create(target.user_id, tokenHash(token)!, new Date(Date.now() + 86_400_000));
  const env = { BENCH_DATABASE_URL: ctx.url, BENCH_OWNER_ID: String(target.user_id) };
  const servers: ChildProcess[] = [];
  const pids: { app?: number; bare?: number } = {};
  try {
    const [app, bare] = await Promise.all(
      (['app', 'bare'] as const).map(async (mode) => {
        const { child, port } = await startServer(mode, env, options.resultsDir);
        servers.push(child);
        pids[mode] = child.pid;
        return `http://127.0.0.1:${port}/api/v1/scripts/${target.id}`;
      }),
    );
    const headers = { authorization: `Bearer ${token}` };
    await assertSameAnswer(app!, bare!, headers);
    const generator = pickLoadGenerator();
    const cpu = { app: 0, bare: 0 };
    const run = async (which: 'app' | 'bare', seconds: number, measure: boolean) => {
      const before = await cpuSeconds(pids[which]);
      const result = await generator.load(
        which === 'app' ? app! : bare!,
        headers,
        options.connections,
        seconds,
      );
      if (measure) cpu[which] += (await cpuSeconds(pids[which])) - before;
      return result;
    };
    ctx.log(`  load generator: ${generator.name}; warm-up ${options.warmupSeconds} s each`);
    await run('bare', options.warmupSeconds, false);
    await run('app', options.warmupSeconds, false);
    const runs: { bare: LoadResult[]; app: LoadResult[] } = { bare: [], app: [] };
    for (let round = 0; round < options.rounds; round++) {
      const order = round % 2 === 0 ? (['bare', 'app'] as const) : (['app', 'bare'] as const);
      for (const which of order) {
        const result = await run(which, options.seconds, true);
        runs[which].push(result);
        ctx.log(`  round ${round + 1} ${which}: ${rps(result).toFixed(0)} req/s`);
      }
    }
    const ratio = median(runs.app.map((r, i) => rps(r) / rps(runs.bare[i] as LoadResult)));
    const failures = [...runs.app, ...runs.bare].reduce((n, r) => n + r.failures, 0);
    const perRequest = (which: 'app' | 'bare') =>
      (cpu[which] * 1000) / runs[which].reduce((n, r) => n + r.ok, 0);
    const cpuNote =
      `CPU per request (server process, user + system): app ${perRequest('app').toFixed(3)} ms, ` +
      `bare ${perRequest('bare').toFixed(3)} ms (${(perRequest('app') / perRequest('bare')).toFixed(2)}x)`;
    ctx.log(`  ${cpuNote}`);
    return {
      group: 'http',
      operation: `GET /api/v1/scripts/:id, Bearer token (${generator.name}, ${options.connections} connections, ${options.rounds}×${options.seconds} s each)`,
      baseline: side('bare Fastify route, no auth, no schemas', runs.bare),
      ours: side('the app (compose + build)', runs.app),
      ratio,
      ratioMeaning: 'requests/second, ours / baseline (median of interleaved rounds)',
      target: `≥ ${HTTP_TARGET.toFixed(2)}x`,
      met: ratio >= HTTP_TARGET && failures === 0,
      notes: [
        `load generator: ${generator.name}`,
        cpuNote,
        ...(failures === 0 ? [] : [`${failures} requests failed (errors, timeouts or non-2xx)`]),
      ],
    };
  } finally {
    for (const child of servers) child.send('stop');
    await Promise.all(servers.map((child) => exited(child, 10_000)));
  }
}

const rps = (r: LoadResult) => r.ok / r.seconds;

function side(label: string, results: LoadResult[]): Side {
  const requests = results.reduce((n, r) => n + r.ok, 0);
  const seconds = results.reduce((n, r) => n + r.seconds, 0);
  return {
    label,
    opsPerSec: requests / seconds,
    // The generators report percentiles per run; the median run's is the fair summary.
    p50Ms: median(results.map((r) => r.p50Ms)),
    p99Ms: median(results.map((r) => r.p99Ms)),
    count: requests,
  };
}

export async function startServer(
  mode: 'app' | 'bare',
  env: Record<string, string>,
  resultsDir: string,
): Promise<{ child: ChildProcess; port: number }> {
  const out = openSync(path.join(resultsDir, `http-${mode}.log`), 'w');
  const child = fork(path.join(HERE, 'http-server.ts'), [mode], {
    // BENCH_CPU_PROF=1: a V8 CPU profile of each server, in bench/results/profiles/.
    execArgv: [
      '--import=tsx',
      ...(process.env.BENCH_CPU_PROF
        ? ['--cpu-prof', `--cpu-prof-dir=${path.join(resultsDir, 'profiles')}`]
        : []),
    ],
    env: { ...process.env, ...env },
    stdio: ['ignore', out, out, 'ipc'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the ${mode} server did not start within 120 s`)),
      120_000,
    );
    child.once('message', (message: { port?: number }) => {
      clearTimeout(timer);
      if (message.port) resolve(message.port);
      else reject(new Error(`the ${mode} server sent ${JSON.stringify(message)}`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the ${mode} server exited with ${code}; see bench/results/http-${mode}.log`));
    });
  });
  return { child, port };
}

/**
 * Both servers must answer 200 with the same script, or the comparison means nothing.
 * Right after start-up the app may still shed load (under-pressure measures the event
 * loop delay of module compilation on a busy machine): it gets 30 s to settle.
 */
async function assertSameAnswer(app: string, bare: string, headers: Record<string, string>): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const [a, b] = await Promise.all([fetch(app, { headers }), fetch(bare, { headers })]);
    if (a.status === 200 && b.status === 200) {
      const sorted = (value: unknown) =>
        JSON.stringify(
          Object.fromEntries(Object.entries(value as object).sort(([x], [y]) => x.localeCompare(y))),
        );
      const [ja, jb] = [sorted(await a.json()), sorted(await b.json())];
      if (ja !== jb) throw new Error(`the servers answer differently:\napp  ${ja}\nbare ${jb}`);
      return;
    }
    if (Date.now() > deadline)
      throw new Error(
        `expected 200 from both servers, got app ${a.status} and bare ${b.status}: ${await a.text()}`,
      );
    await Promise.all([a.body?.cancel(), b.body?.cancel()]);
    await sleep(500);
  }
}

export function exited(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve();
    }, ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
