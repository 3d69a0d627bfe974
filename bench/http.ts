/**
 * GET /api/v1/scripts/:id with a Bearer token through the real app vs a bare
 * Fastify route running the same query without auth and schemas, over real HTTP
 * on 127.0.0.1. Each server runs in its own process; autocannon (in this process)
 * loads one at a time with fixed concurrency for a fixed time, alternating
 * A B, B A, ... after a warm-up of each. Target: ≥ 0.85x the requests/second.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon, { type Result } from 'autocannon';
import { newToken, tokenHash } from '../src/services/tokens.js';
import type { BenchContext } from './context.js';
import { type BenchResult, median, type Side, sleep } from './measure.js';

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
  try {
    const [app, bare] = await Promise.all(
      (['app', 'bare'] as const).map(async (mode) => {
        const { child, port } = await startServer(mode, env, options.resultsDir);
        servers.push(child);
        return `http://127.0.0.1:${port}/api/v1/scripts/${target.id}`;
      }),
    );
    const headers = { authorization: `Bearer ${token}` };
    await assertSameAnswer(app!, bare!, headers);
    const run = (url: string, seconds: number) =>
      autocannon({ url, headers, connections: options.connections, duration: seconds, timeout: 10 });
    ctx.log(`  warm-up ${options.warmupSeconds} s each`);
    await run(bare!, options.warmupSeconds);
    await run(app!, options.warmupSeconds);
    const runs: { bare: Result[]; app: Result[] } = { bare: [], app: [] };
    for (let round = 0; round < options.rounds; round++) {
      const order = round % 2 === 0 ? (['bare', 'app'] as const) : (['app', 'bare'] as const);
      for (const which of order) {
        const result = await run(which === 'app' ? app! : bare!, options.seconds);
        runs[which].push(result);
        ctx.log(`  round ${round + 1} ${which}: ${rps(result).toFixed(0)} req/s`);
      }
    }
    const ratio = median(runs.app.map((r, i) => rps(r) / rps(runs.bare[i] as Result)));
    const failures = [...runs.app, ...runs.bare].reduce((n, r) => n + r.errors + r.non2xx + r.timeouts, 0);
    return {
      group: 'http',
      operation: `GET /api/v1/scripts/:id, Bearer token (${options.connections} connections, ${options.rounds}×${options.seconds} s each)`,
      baseline: side('bare Fastify route, no auth, no schemas', runs.bare),
      ours: side('the app (compose + build)', runs.app),
      ratio,
      ratioMeaning: 'requests/second, ours / baseline (median of interleaved rounds)',
      target: `≥ ${HTTP_TARGET.toFixed(2)}x`,
      met: ratio >= HTTP_TARGET && failures === 0,
      notes: failures === 0 ? [] : [`${failures} requests failed (errors, timeouts or non-2xx)`],
    };
  } finally {
    for (const child of servers) child.send('stop');
    await Promise.all(servers.map((child) => exited(child, 10_000)));
  }
}

const rps = (r: Result) => r['2xx'] / r.duration;

function side(label: string, results: Result[]): Side {
  const requests = results.reduce((n, r) => n + r['2xx'], 0);
  const seconds = results.reduce((n, r) => n + r.duration, 0);
  return {
    label,
    opsPerSec: requests / seconds,
    // autocannon reports percentiles per run; the median run's is the fair summary.
    p50Ms: median(results.map((r) => r.latency.p50)),
    p99Ms: median(results.map((r) => r.latency.p99)),
    count: requests,
  };
}

async function startServer(
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

function exited(child: ChildProcess, ms: number): Promise<void> {
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
