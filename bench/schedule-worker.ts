/**
 * One scheduler process of bench/schedules.ts: its own pool, the real Scheduler.
 * Prints `ready` once connected and warmed up, waits for `go` on stdin, runs one
 * tick (every due schedule it can lock, batch after batch), and prints its result
 * as one JSON line.
 */
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { createPool } from '../src/db/client.ts';
import { Database } from '../src/db/database.ts';
import { CronRule } from '../src/domain/schedule.ts';
import { Repositories } from '../src/repositories/index.ts';
import { Scheduler } from '../src/scheduler/scheduler.ts';

const url = process.env.BENCH_SCHEDULES_URL;
if (!url) throw new Error('BENCH_SCHEDULES_URL is not set: run bench/schedules.ts');
// Logs go to standard error: standard output carries the protocol (ready, result).
const log = pino({ level: 'warn' }, pino.destination(2));
const sql = createPool(
  {
    url,
    max: Number(process.env.BENCH_SCHEDULER_POOL ?? 2),
    idleTimeoutSeconds: 0,
    maxLifetimeSeconds: 0,
    connectTimeoutSeconds: 10,
    statementTimeoutMs: 60_000,
    prepare: true,
    applicationName: `bench-scheduler-${process.pid}`,
  },
  log,
);
const repos = new Repositories(
  new Database(sql, {
    log,
    slowQueryMs: Number(process.env.BENCH_SLOW_MS ?? 60_000),
    queryTimeoutMs: 60_000,
  }),
);
const scheduler = new Scheduler({
  repos,
  log,
  catchupSeconds: 300,
  maxConcurrentScripts: 5,
  batchSize: Number(process.env.BENCH_SCHEDULER_BATCH ?? 100),
});
// Warm up: connections open, the statements' code paths loaded, croner compiled.
await Promise.all([sql`select 1`, sql`select 1`]);
CronRule.stored('30 9 * * 1-5', 'America/New_York').nextAfter(new Date());
console.log('ready');
const lines = createInterface({ input: process.stdin });
for await (const line of lines) if (line.trim() === 'go') break;
const start = performance.now();
const cpuBefore = process.cpuUsage();
const result = await scheduler.tick();
const ms = performance.now() - start;
const cpu = process.cpuUsage(cpuBefore);
console.log(
  `result ${JSON.stringify({ pid: process.pid, ...result, ms, cpu_ms: (cpu.user + cpu.system) / 1000 })}`,
);
await sql.end({ timeout: 5 });
process.exit(0);
