/**
 * Executor claims: queue N scripts, then 4 claimers, each with its own pool of one
 * connection (as 4 executor processes would have), call
 * `leases.claim({executorId, seconds}, batch)` in a loop for a fixed time or
 * until the queue is empty. Reports claims/second and checks that no script was
 * claimed twice, both from the ids the claimers got and from the rows.
 * Target: ≥ 2,000 claims/s, and no double claim.
 */
import { performance } from 'node:perf_hooks';
import { createPool } from '../src/db/client.ts';
import { Database } from '../src/db/database.ts';
import { RunLeaseRepository } from '../src/repositories/run-leases.ts';
import type { BenchContext } from './context.ts';
import { type BenchResult, quantile } from './measure.ts';

export const CLAIMS_TARGET = 2_000;
const CLAIMERS = 4;

export interface ClaimOptions {
  queued: number;
  seconds: number;
}

export async function claimBenchmarks(ctx: BenchContext, options: ClaimOptions): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  for (const batch of [1, 10]) results.push(await claimRun(ctx, options, batch));
  return results;
}

async function claimRun(ctx: BenchContext, options: ClaimOptions, batch: number): Promise<BenchResult> {
  const queued = await queueScripts(ctx, options.queued);
  const prefix = `bench-claimer-b${batch}-`;
  const claimers = Array.from({ length: CLAIMERS }, (_, n) => {
    const sql = createPool(
      {
        url: ctx.url,
        max: 1,
        idleTimeoutSeconds: 0,
        maxLifetimeSeconds: 0,
        connectTimeoutSeconds: 10,
        statementTimeoutMs: 30_000,
        prepare: true,
        applicationName: `${prefix}${n}`,
      },
      ctx.repos.db.options.log,
    );
    const db = new Database(sql, { ...ctx.repos.db.options, activity: undefined });
    return { sql, executions: new RunLeaseRepository(db), executorId: `${prefix}${n}` };
  });
  try {
    // Connect (and prepare the statement) before the clock starts.
    await Promise.all(claimers.map((c) => c.sql`select 1`));
    const ids: number[] = [];
    const latencies: number[] = [];
    const deadline = performance.now() + options.seconds * 1000;
    const start = performance.now();
    let emptied = 0;
    await Promise.all(
      claimers.map(async (claimer) => {
        while (performance.now() < deadline) {
          const t = performance.now();
          const runs = await claimer.executions.claim(
            { executorId: claimer.executorId, seconds: 300 },
            batch,
          );
          latencies.push(performance.now() - t);
          if (runs.length === 0) break;
          for (const run of runs) ids.push(run.id);
        }
        emptied = performance.now();
      }),
    );
    const elapsed = (Math.min(emptied, deadline) - start) / 1000;
    const unique = new Set(ids).size;
    const [rows = { claimed: 0, distinct_ids: 0 }] = await ctx.sql<
      { claimed: number; distinct_ids: number }[]
    >`
      select count(*) as claimed, count(distinct id) as distinct_ids
      from script_runs
      where status = 'running' and executor_id like ${`${prefix}%`}`;
    const doubles = ids.length - unique;
    const rate = ids.length / elapsed;
    const sorted = Float64Array.from(latencies).sort();
    const notes = [
      `${queued} scripts in the queue; ${ids.length} claimed by ${CLAIMERS} claimers in ${elapsed.toFixed(1)} s` +
        (ids.length >= queued ? ' (the queue ran dry)' : ''),
      `${doubles} claimed twice by the claimers' count; ${rows.claimed} rows running under these executors`,
    ];
    ctx.log(`  batch ${batch}: ${rate.toFixed(0)} claims/s, ${doubles} double claims`);
    return {
      group: 'executor',
      operation: `claims, ${CLAIMERS} concurrent claimers, batch ${batch}`,
      baseline: null,
      ours: {
        label: 'executions.claim',
        opsPerSec: rate,
        p50Ms: quantile(sorted, 0.5),
        p99Ms: quantile(sorted, 0.99),
        count: ids.length,
      },
      ratio: null,
      ratioMeaning: 'claims per second (ops/s column); latency is per claim call',
      target: `≥ ${CLAIMS_TARGET} claims/s, none twice`,
      met: rate >= CLAIMS_TARGET && doubles === 0 && rows.claimed === ids.length,
      notes,
    };
  } finally {
    await Promise.all(claimers.map((c) => c.sql.end({ timeout: 5 })));
  }
}

/**
 * Puts `n` idle scripts (uploaded or finished, spread over the table) in the queue,
 * with random queue times, in one statement, then ANALYZE. Returns the queue's length.
 */
async function queueScripts(ctx: BenchContext, n: number): Promise<number> {
  const queued = await ctx.sql`
    with picked as (
      select id, user_id, sha256 from scripts
      where status in ('uploaded', 'completed', 'failed', 'cancelled')
      order by md5(id::text)
      limit ${n}
    ), runs as (
      insert into script_runs (script_id, user_id, script_sha256, queued_at)
      select id, user_id, sha256, now() - random() * interval '1 hour' from picked
      returning id, script_id
    )
    update scripts as s
    set status = 'queued', last_run_id = runs.id, run_count = s.run_count + 1
    from runs
    where s.id = runs.script_id`;
  await ctx.sql`analyze scripts`;
  await ctx.sql`analyze script_runs`;
  const [{ total } = { total: 0 }] = await ctx.sql<{ total: number }[]>`
    select count(*) as total from script_runs where status = 'queued'`;
  ctx.log(`  queued ${queued.count} scripts (${total} in the queue)`);
  return total;
}
