/**
 * `npm run bench`: loads generated data (100k users, 1M scripts, by COPY) into a
 * fresh migrated database and measures each operation side by side with a raw
 * baseline in the same run, interleaved. Prints a table, writes
 * bench/results/latest.json, and exits 0 whether targets are met or missed
 * (benchmarks report; they do not gate). Exits 1 only when a benchmark failed to run.
 *
 * Environment: DATABASE_URL (else an embedded PostgreSQL), BENCH_SCALE (data size,
 * default 1), BENCH_ONLY (comma list of: repos,http,pagination,search,stats,claims,import,sandbox,runs,
 * retention), BENCH_RETENTION_* (bench/retention.ts),
 * BENCH_KEEP_DB=1 (keep dollarclub_bench on a DATABASE_URL server),
 * BENCH_HTTP_SECONDS / BENCH_HTTP_ROUNDS / BENCH_HTTP_CONNECTIONS, BENCH_ROUNDS,
 * BENCH_SEARCH_TERM, BENCH_HTTP_LOG_LEVEL (the HTTP servers' log level, default warn).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { compose } from '../src/compose.ts';
import { loadConfig } from '../src/config.ts';
import { createPool, poolOptionsFrom } from '../src/db/client.ts';
import { migrationNames } from '../src/db/migrate.ts';
import { Metrics } from '../src/metrics.ts';
import { claimBenchmarks } from './claims.ts';
import { type BenchContext, sampleInputs } from './context.ts';
import { httpBenchmark } from './http.ts';
import { importBenchmark } from './import-legacy.ts';
import { loadData } from './load.ts';
import type { BenchResult } from './measure.ts';
import { paginationBenchmarks, searchBenchmark } from './queries.ts';
import { misses, table, writeJson } from './report.ts';
import { repositoryBenchmarks } from './repos.ts';
import { retentionBenchmark } from './retention.ts';
import { runBenchmarks } from './runs.ts';
import { sandboxBenchmarks } from './sandbox.ts';
import { prepareDatabase } from './setup.ts';
import { statsBenchmarks } from './stats.ts';

const RESULTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');
const SUITES = [
  'repos',
  'http',
  'pagination',
  'search',
  'stats',
  'claims',
  'import',
  'sandbox',
  'runs',
  'retention',
] as const;
const LOAD_TARGET = 100_000;

function numberEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max)
    throw new Error(`${name} must be a number from ${min} to ${max}, not ${JSON.stringify(raw)}`);
  return value;
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const scale = numberEnv('BENCH_SCALE', 1, 0.001, 10);
  const only = (process.env.BENCH_ONLY ?? SUITES.join(',')).split(',').map((s) => s.trim());
  const unknown = only.filter((s) => !(SUITES as readonly string[]).includes(s));
  if (unknown.length > 0) throw new Error(`BENCH_ONLY: unknown suite(s) ${unknown.join(', ')}`);
  const rounds = numberEnv('BENCH_ROUNDS', 10, 2, 1000);
  const color = process.stdout.isTTY === true;
  const log = (line: string) => console.log(line);
  const loadBefore = loadavg();
  log(
    `dollarclub benchmarks: scale ${scale}, ${cpus().length} CPUs, load average ${loadBefore.map((n) => n.toFixed(1)).join(' ')}`,
  );

  const database = await prepareDatabase(log);
  const storageDir = await mkdtemp(path.join(tmpdir(), 'dollarclub-bench-storage-'));
  // The app's own logs (slow-query warnings) go to a file, not the table.
  const appLog = pino(
    { level: 'warn' },
    pino.destination({ dest: path.join(RESULTS, 'app.log'), mkdir: true }),
  );
  const config = loadConfig({
    DATABASE_URL: database.url,
    STORAGE_DIR: storageDir,
    EXECUTOR_ENABLED: 'false',
    IBKR_TOKEN_KEY: randomBytes(32).toString('base64'),
    // Deep offset pages and statistics over 1M rows on a busy machine: no spurious timeouts.
    DB_STATEMENT_TIMEOUT_MS: '300000',
    DB_QUERY_TIMEOUT_MS: '600000',
  });
  const loader = createPool(
    { ...poolOptionsFrom(config, database.url, 'dollarclub-bench-load'), max: 1, statementTimeoutMs: 0 },
    appLog,
  );
  const poolOptions = poolOptionsFrom(config, database.url, 'dollarclub-bench');
  const sql = createPool(poolOptions, appLog);
  const results: BenchResult[] = [];
  const errors: Array<{ suite: string; error: string }> = [];
  let plans: { custom: string[]; prepared: string[]; sequential: string[] } | undefined;
  let load: Awaited<ReturnType<typeof loadData>> | undefined;
  try {
    const users = Math.max(100, Math.round(100_000 * scale));
    const scripts = Math.max(1_000, Math.round(1_000_000 * scale));
    log(`loading ${users} users and ${scripts} scripts with COPY`);
    load = await loadData(loader, users, scripts, log);
    results.push(
      {
        group: 'load',
        operation: `bulk load, COPY into the migrated schema (${users} users + ${scripts} scripts)`,
        baseline: null,
        ours: {
          label: 'COPY',
          opsPerSec: load.rowsPerSecond,
          p50Ms: Number.NaN,
          p99Ms: Number.NaN,
          count: users + scripts,
        },
        ratio: null,
        ratioMeaning: 'rows per second (ops/s column)',
        target: `≥ ${LOAD_TARGET.toLocaleString('en-US')} rows/s`,
        met: load.rowsPerSecond >= LOAD_TARGET,
        notes: [
          `users ${(users / load.usersSeconds).toFixed(0)} rows/s, scripts ${(scripts / load.scriptsSeconds).toFixed(0)} rows/s; ` +
            `generating the rows took ${load.generateSeconds.toFixed(1)} s (not counted), VACUUM ANALYZE ${load.analyzeSeconds.toFixed(1)} s`,
        ],
      },
      {
        group: 'load',
        operation: `COPY ${scripts} scripts: migrated schema vs a bare table (no checks, FK, indexes)`,
        baseline: rateSide('bare table', scripts, load.bareScriptsSeconds),
        ours: rateSide('scripts', scripts, load.scriptsSeconds),
        ratio: load.scriptsSeconds / load.bareScriptsSeconds,
        ratioMeaning: 'load time, ours / bare table',
        target: '',
        met: null,
        notes: ['what the schema (checks, foreign key, 8 indexes) costs a bulk load'],
      },
    );

    const composition = compose({
      config,
      sql,
      log: appLog,
      metrics: new Metrics({ defaultMetrics: false }),
      migrations: await migrationNames(),
    });
    const ctx: BenchContext = {
      url: database.url,
      sql,
      repos: composition.repos,
      samples: await sampleInputs(sql, 2_000),
      fast: { rounds, blockMs: 400, warmupMs: 500, minCalls: 20 },
      slow: { rounds: Math.max(4, Math.round(rounds / 2)), blockMs: 800, warmupMs: 500, minCalls: 2 },
      scale,
      log,
    };
    const searchTerm = process.env.BENCH_SEARCH_TERM ?? 'kowalski';
    const suites: Record<(typeof SUITES)[number], () => Promise<void>> = {
      repos: async () => {
        results.push(
          ...(await repositoryBenchmarks(ctx, { poolOptions, searchTerm, rounds, blockMs: 2_000 })),
        );
      },
      http: async () => {
        results.push(
          await httpBenchmark(ctx, {
            connections: numberEnv('BENCH_HTTP_CONNECTIONS', 16, 1, 1000),
            seconds: numberEnv('BENCH_HTTP_SECONDS', 5, 1, 600),
            rounds: numberEnv('BENCH_HTTP_ROUNDS', 4, 1, 100),
            warmupSeconds: 3,
            resultsDir: RESULTS,
          }),
        );
      },
      pagination: async () => {
        results.push(...(await paginationBenchmarks(ctx)));
      },
      search: async () => {
        const report = await searchBenchmark(ctx, searchTerm);
        results.push(report.result);
        plans = report.plans;
        const show = (title: string, plan: string[]) =>
          log(`\n  EXPLAIN (ANALYZE, BUFFERS) ${title}:\n${plan.map((l) => `    ${l}`).join('\n')}`);
        show('users.search, custom plan (the first executions of the statement)', report.plans.custom);
        show(
          'users.search, prepared statement after 5 executions (what the app runs)',
          report.plans.prepared,
        );
        show('users.search, index and bitmap scans off', report.plans.sequential);
      },
      stats: async () => {
        results.push(...(await statsBenchmarks(ctx, 200)));
      },
      import: async () => {
        results.push(
          ...(await importBenchmark(database.url, {
            users: Math.round(100_000 * scale),
            scripts: Math.round(1_000_000 * scale),
            files: true,
            log,
          })),
        );
      },
      claims: async () => {
        const queued = Math.max(2_000, Math.round(20_000 * scale));
        results.push(...(await claimBenchmarks(ctx, { queued, seconds: 10 })));
      },
      sandbox: async () => {
        results.push(...(await sandboxBenchmarks(log, Math.max(4, Math.round(rounds / 2)))));
      },
      runs: async () => {
        results.push(...(await runBenchmarks(ctx)));
      },
      // A database of its own on the same server (BENCH_RETENTION_RUNS sets its size).
      retention: async () => {
        const { result, correct } = await retentionBenchmark(database.url, database.where, log);
        results.push(result);
        if (!correct) throw new Error('the purge left the wrong rows (see bench/results/retention.json)');
      },
    };
    for (const suite of SUITES) {
      if (!only.includes(suite)) continue;
      log(`\n== ${suite}`);
      try {
        await suites[suite]();
      } catch (error) {
        const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
        errors.push({ suite, error: message });
        log(
          `${color ? '\u001b[31;1m' : ''}!!! the ${suite} benchmark failed: ${message}${color ? '\u001b[0m' : ''}`,
        );
      }
    }
  } finally {
    await Promise.allSettled([sql.end({ timeout: 5 }), loader.end({ timeout: 5 })]);
    await database.close({ keep: process.env.BENCH_KEEP_DB === '1' });
    await rm(storageDir, { recursive: true, force: true });
  }

  log(`\n${table(results, color)}\n`);
  log(misses(results, color));
  const file = path.join(RESULTS, 'latest.json');
  await writeJson(file, {
    started_at: startedAt.toISOString(),
    finished_at: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      cpu_model: cpus()[0]?.model,
      node: process.version,
      load_average_before: loadBefore,
      load_average_after: loadavg(),
    },
    database: { where: database.where, server_version: database.serverVersion },
    scale,
    load,
    results,
    search_plans: plans,
    errors,
  });
  log(`results written to ${path.relative(process.cwd(), file)}`);
  if (errors.length > 0)
    log(`${errors.length} benchmark(s) failed to run: ${errors.map((e) => e.suite).join(', ')}`);
  return errors.length > 0 ? 1 : 0;
}

function rateSide(label: string, rows: number, seconds: number) {
  return { label, opsPerSec: rows / seconds, p50Ms: Number.NaN, p99Ms: Number.NaN, count: rows };
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
