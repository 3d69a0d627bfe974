/**
 * Statistics: each StatsRepository method (one round trip, ≤ 5 ms p99 from the
 * counters) side by side with the full-scan query it replaced, the same answer
 * computed from the rows (what the numbers cost before issue 13, and what they
 * would cost at 100x the rows).
 */
import type { Sql } from '../src/db/client.ts';
import { Database } from '../src/db/database.ts';
import { StatsRepository } from '../src/repositories/stats-repository.ts';
import { type BenchContext, captureQueries } from './context.ts';
import { type BenchResult, timeCalls } from './measure.ts';

export const STATS_P99_TARGET_MS = 5;

/** The scanning queries of before, one per method (the baseline). */
const SCANS: Record<string, (sql: Sql) => Promise<unknown>> = {
  scriptStats: (sql) => sql`
    select status, count(*), sum(file_size), sum(execution_time_seconds), count(execution_time_seconds),
      count(*) filter (where created_at >= now() - interval '7 days')
    from scripts group by status`,
  scriptsByStatus: (sql) => sql`
    select status, count(*), avg(execution_time_seconds), sum(file_size) from scripts group by status`,
  performance: (sql) => sql`
    select avg(execution_time_seconds), max(execution_time_seconds), min(execution_time_seconds), count(*)
    from scripts where status = 'completed'`,
  userStats: (sql) => sql`
    select auth_provider, count(*), count(*) filter (where is_active), count(*) filter (where is_verified),
      count(*) filter (where is_ibkr_connected), count(*) filter (where created_at >= now() - interval '30 days')
    from users group by auth_provider`,
  usersByProvider: (sql) => sql`
    select auth_provider, count(*), to_timestamp(avg(extract(epoch from created_at))) from users group by 1`,
  topUsers: (sql) => sql`
    select c.user_id, u.username, c.n
    from (select user_id, count(*) as n from scripts group by user_id order by n desc, user_id limit 10) as c
    join users as u on u.id = c.user_id`,
  userScriptCounts: (sql) => sql`
    select (select count(*) from users), u.id, (select count(*) from scripts as s where s.user_id = u.id)
    from users as u order by u.id limit 20`,
};

export async function statsBenchmarks(ctx: BenchContext, calls: number): Promise<BenchResult[]> {
  let observed = 0;
  const db = new Database(ctx.sql, {
    log: ctx.repos.db.options.log,
    slowQueryMs: 60_000,
    queryTimeoutMs: 600_000,
    onQuery: () => {
      observed++;
    },
  });
  const stats = new StatsRepository(db);
  const methods: Array<[keyof typeof SCANS, string, () => Promise<unknown>]> = [
    ['scriptStats', 'stats.scriptStats()', () => stats.scriptStats()],
    ['scriptsByStatus', 'stats.scriptsByStatus()', () => stats.scriptsByStatus()],
    ['performance', 'stats.performance()', () => stats.performance()],
    ['userStats', 'stats.userStats()', () => stats.userStats()],
    ['usersByProvider', 'stats.usersByProvider()', () => stats.usersByProvider()],
    ['topUsers', 'stats.topUsers(10)', () => stats.topUsers(10)],
    [
      'userScriptCounts',
      'stats.userScriptCounts(page 1 of 20)',
      () => stats.userScriptCounts({ page: 1, per_page: 20 }),
    ],
  ];
  const results: BenchResult[] = [];
  for (const [key, name, call] of methods) {
    // Once first: a connection's first query also fetches the array types (once per connection).
    await call();
    observed = 0;
    const { queries } = await captureQueries(ctx.sql, call);
    const perCall = { observed, sent: queries.length };
    const scan = SCANS[key]!;
    const baseline = await timeCalls('full scan (the query before)', () => scan(ctx.sql), 3, 1);
    const ours = await timeCalls(name, call, calls, 5);
    ctx.log(
      `  ${name}: ${perCall.observed} query, p50 ${ours.p50Ms.toFixed(2)} / p99 ${ours.p99Ms.toFixed(2)} ms; ` +
        `full scan p50 ${baseline.p50Ms.toFixed(1)} ms`,
    );
    const oneTrip = perCall.observed === 1 && perCall.sent === 1;
    results.push({
      group: 'statistics',
      operation: name,
      baseline,
      ours,
      ratio: baseline.p50Ms / ours.p50Ms,
      ratioMeaning: 'speed-up, p50 full scan / p50 counters',
      target: `1 round trip, p99 ≤ ${STATS_P99_TARGET_MS} ms`,
      met: oneTrip && ours.p99Ms <= STATS_P99_TARGET_MS,
      notes: [
        `${perCall.observed} query per call (Database onQuery), the driver sent ${perCall.sent}`,
        ...(oneTrip ? [] : ['not one round trip']),
      ],
    });
  }
  return results;
}
