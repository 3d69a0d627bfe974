/**
 * Repository calls as production runs them — the repositories of `compose()`, over
 * `Database` with its client-side deadline, metrics observer, slow-query check and error
 * mapping — against what a developer would write without them: a separate plain
 * `postgres()` pool with the same options (createPool, same URL and settings), sending the
 * same statements as tagged templates. Both statements are captured from the driver and
 * checked equal (text up to whitespace and identifier quotes, and parameters) before
 * anything is measured.
 *
 * Each case runs in two modes: 32 calls in flight (a busy API process) and one at a time.
 * Rounds alternate which side goes first; per side and block we take wall time and the
 * process's CPU time (`process.cpuUsage`, user + system) per call. The ratios are the
 * medians of the per-round ratios. A third, informational variant of the point lookups
 * sends the captured text with `sql.unsafe` on the app's own pool (the baseline bench/
 * used before): it shows what the tagged template costs the driver (building the text
 * and the parameter list on every call) apart from the wrapper.
 *
 * Targets (issue 14): point operations ≤ 1.10x the raw time and ≤ 1.15x its CPU; list
 * pages and statistics no slower than their raw statements.
 */
import { performance } from 'node:perf_hooks';
import { createPool, type PoolOptions, type Sql } from '../src/db/client.ts';
import { SCRIPT_COLUMNS } from '../src/domain/script.ts';
import { USER_COLUMNS } from '../src/domain/user.ts';
import type { Repositories } from '../src/repositories/index.ts';
import { likeContains } from '../src/repositories/rows.ts';
import { type BenchContext, type CapturedQuery, captureQueries } from './context.ts';
import { type BenchResult, median, quantile, type Side } from './measure.ts';

export const REPOSITORY_TARGET = 1.1;
export const CPU_TARGET = 1.15;
/** "No slower", with room for the noise of a shared 2-core machine. */
export const LIST_TARGET = 1.03;

const CONCURRENCY = 32;
const PHC = '$argon2id$v=19$m=19456,t=2,p=1$YmVuY2htYXJrc2FsdA$Wq0vJ2G8ySXqH3nGSdvW1yXk9sPpMX3rZsoL3kb1xdk';
const SHA = 'ab'.repeat(32);

type Kind = 'point' | 'list';

interface Case {
  operation: string;
  kind: Kind;
  /** The production call for input `i` of side `side` (inputs of the two sides never collide). */
  repo: (repos: Repositories, i: number) => Promise<unknown>;
  /** The same statement, as a plain tagged template. */
  raw: (sql: Sql, i: number, side: string) => Promise<unknown>;
  /** Modes to run; default both. */
  modes?: Mode[];
  /** Calls per block (time-capped by blockMs). */
  calls?: number;
  /** Untimed, before each block: make `count` inputs from `first` usable (a queue to claim). */
  before?: (side: string, first: number, count: number) => Promise<void>;
  /** Inputs of the repository side are shifted by this, so writes never collide. */
  unsafe?: boolean;
}

type Mode = 'concurrent' | 'sequential';

interface Variant {
  label: string;
  side: string;
  run: (i: number) => Promise<unknown>;
}

interface Block {
  ms: number;
  cpuUs: number;
  calls: number;
}

interface Totals {
  blocks: Block[];
  latencies: number[];
}

export interface RepositoryBenchOptions {
  /** The app pool's options: the raw pool gets the same. */
  poolOptions: PoolOptions;
  searchTerm: string;
  rounds: number;
  /** Upper bound of one block's duration. */
  blockMs: number;
}

export async function repositoryBenchmarks(
  ctx: BenchContext,
  options: RepositoryBenchOptions,
): Promise<BenchResult[]> {
  const { repos, samples } = ctx;
  const raw = createPool({ ...options.poolOptions, applicationName: 'dollarclub-bench-raw' }, silentLog);
  const run = `${process.pid.toString(36)}${Date.now().toString(36)}`;
  try {
    await raw`select 1`; // connects, and fetches the array types once
    const userId = (i: number) => samples.userIds[i % samples.userIds.length] as number;
    const script = (i: number) =>
      samples.scripts[i % samples.scripts.length] as { id: number; user_id: number };
    const emails = await ctx.sql<{ email: string }[]>`
      select email from users where id = any(${samples.userIds.slice(0, 500)}::bigint[])`;
    const email = (i: number) => (emails[i % emails.length] as { email: string }).email;
    const pattern = likeContains(options.searchTerm);
    const cases: Case[] = [
      {
        operation: 'users.findById',
        kind: 'point',
        unsafe: true,
        repo: (r, i) => r.users.findById(userId(i)),
        raw: (sql, i) => sql`
          select id, email, username, auth_provider, role, is_active, is_verified, is_ibkr_connected,
            ibkr_user_id, ibkr_connected_at, created_at, updated_at, last_login_at
          from users
          where id = ${userId(i)}
        `,
      },
      {
        operation: 'users.findByEmail',
        kind: 'point',
        unsafe: true,
        repo: (r, i) => r.users.findByEmail(email(i)),
        raw: (sql, i) => sql`
          select id, email, username, auth_provider, role, is_active, is_verified, is_ibkr_connected,
            ibkr_user_id, ibkr_connected_at, created_at, updated_at, last_login_at
          from users
          where email = ${email(i)}
        `,
      },
      {
        operation: 'scripts.getById (with owner)',
        kind: 'point',
        repo: (r, i) => r.scripts.getById(script(i).id, script(i).user_id),
        raw: (sql, i) => sql`
          select id, user_id, filename, original_filename, file_extension, file_size, sha256, status,
            exit_code, execution_time_seconds, memory_usage_mb, error_message, started_at, completed_at,
            created_at, updated_at, ibkr_access, last_run_id, run_count
          from scripts
          where id = ${script(i).id} and user_id = ${script(i).user_id}
        `,
      },
      {
        operation: 'users.create',
        kind: 'point',
        repo: (r, i) =>
          r.users.create({
            email: `b${run}p${i}@example.com`,
            username: `b${run}p${i}`,
            hashed_password: PHC,
          }),
        raw: (sql, i, side) => sql`
          insert into users (email, username, hashed_password, auth_provider, google_id, role, is_verified)
          values (
            ${`b${run}${tag(side)}${i}@example.com`}, ${`b${run}${tag(side)}${i}`}, ${PHC},
            ${'email'}, ${null}, ${'user'}, ${false}
          )
          returning ${sql(USER_COLUMNS)}
        `,
      },
      {
        operation: 'scripts.create',
        kind: 'point',
        repo: (r, i) =>
          r.scripts.create({
            user_id: userId(i),
            filename: `b${run}p${i}.py`,
            original_filename: 'bench.py',
            file_path: `bench/b${run}p${i}.py`,
            file_size: 100,
            file_extension: '.py',
            sha256: SHA,
          }),
        raw: (sql, i, side) => sql`
          insert into scripts (user_id, filename, original_filename, file_path, file_size, file_extension, sha256)
          values (
            ${userId(i)}, ${`b${run}${tag(side)}${i}.py`}, ${'bench.py'}, ${`bench/b${run}${tag(side)}${i}.py`},
            ${100}, ${'.py'}, ${SHA}
          )
          returning ${sql(SCRIPT_COLUMNS)}
        `,
      },
      {
        operation: "scripts.listPage (a user's, page 1 of 20)",
        kind: 'list',
        repo: (r, i) =>
          r.scriptListings.listPage({ user_id: script(i).user_id }, '-created_at', { page: 1, per_page: 20 }),
        raw: (sql, i) => sql`
          select c.total, s.*
          from (select count(*) as total from scripts where true and user_id = ${script(i).user_id}) as c
          left join lateral (
            select ${sql(SCRIPT_COLUMNS)}
            from scripts
            where true and user_id = ${script(i).user_id}
            order by created_at desc, id desc
            limit ${20}
            offset ${0}
          ) as s on true
        `,
      },
      {
        operation: `users.search('${options.searchTerm}', 20)`,
        kind: 'list',
        calls: 400,
        repo: (r) => r.userListings.search(options.searchTerm, 20),
        raw: (sql) => sql`
          with matches as materialized (
            select ${sql(USER_COLUMNS)} from users where email ilike ${pattern} or username ilike ${pattern}
          )
          select * from matches order by id limit ${20}
        `,
      },
      {
        operation: 'stats.scriptsByStatus()',
        kind: 'list',
        modes: ['sequential'],
        calls: 40,
        repo: (r) => r.stats.scriptsByStatus(),
        raw: (sql) => sql`
          select e.status,
            coalesce(sum(c.scripts), 0)::int8 as count,
            round(sum(c.time_sum) / nullif(sum(c.timed), 0), 3) as avg_time,
            coalesce(sum(c.size_bytes), 0)::int8 as total_size
          from unnest(enum_range(null::script_status)) with ordinality as e(status, n)
          left join script_counters as c on c.status = e.status
          group by e.status, e.n
          order by e.n
        `,
      },
    ];
    const results: BenchResult[] = [];
    for (const c of cases) {
      try {
        await assertSameStatement(ctx, raw, c);
      } catch (error) {
        const message = (error as Error).message;
        ctx.log(`  !!! ${c.operation}: not measured: ${message}`);
        results.push({
          group: 'repository vs raw postgres',
          operation: `${c.operation}: not measured`,
          baseline: null,
          ours: {
            label: 'not measured',
            opsPerSec: Number.NaN,
            p50Ms: Number.NaN,
            p99Ms: Number.NaN,
            count: 0,
          },
          ratio: null,
          ratioMeaning: '',
          target: 'the same statement on both sides',
          met: false,
          notes: [message],
        });
        continue;
      }
      for (const mode of c.modes ?? (['concurrent', 'sequential'] as const)) {
        const variants: Variant[] = [
          { label: 'raw postgres', side: 'raw', run: (i) => c.raw(raw, i, 'raw') },
          { label: 'repository', side: 'repository', run: (i) => c.repo(repos, i) },
        ];
        if (c.unsafe) {
          const text = (await captureQueries(ctx.sql, () => c.repo(repos, 0))).queries[0] as CapturedQuery;
          const paramsOf = async (i: number) =>
            ((await captureQueries(raw, () => c.raw(raw, i, 'raw'))).queries[0] as CapturedQuery).parameters;
          // Parameters per input, captured once (the driver's serialisation, as the old baseline did).
          const inputs: unknown[][] = [];
          for (let i = 0; i < 500; i++) inputs.push(await paramsOf(i));
          variants.push({
            label: 'sql.unsafe, app pool',
            side: 'unsafe',
            run: (i) => ctx.sql.unsafe(text.text, inputs[i % inputs.length] as never[], { prepare: true }),
          });
        }
        ctx.log(`  ${c.operation}, ${mode}`);
        const measured = await compare(variants, c, mode, options);
        results.push(...rowsOf(c, mode, measured));
      }
    }
    return results;
  } finally {
    await raw.end({ timeout: 5 });
  }
}

/** Name prefixes of written rows: the two sides never collide. */
const tag = (side: string) => (side === 'raw' ? 'w' : 'p');

const silentLog = {
  info: () => {},
} as unknown as Parameters<typeof createPool>[1];

/**
 * Same text (up to whitespace and identifier quotes) and same parameters on both sides, for
 * input 0 (the raw side with the repository's names). Each side runs in a transaction that
 * is rolled back, so writes leave nothing behind.
 */
async function assertSameStatement(ctx: BenchContext, raw: Sql, c: Case): Promise<void> {
  await c.before?.('repository', 0, 1);
  await c.before?.('raw', 0, 1);
  const rollback = new Error('rollback');
  const ours = await captureQueries(ctx.sql, () =>
    ctx.repos
      .transaction(async (tx) => {
        await c.repo(tx, 0);
        throw rollback;
      })
      .catch((e: unknown) => {
        if (e !== rollback) throw e;
      }),
  );
  const theirs = await captureQueries(raw, () =>
    raw
      .begin(async (tx) => {
        await c.raw(tx as unknown as Sql, 0, 'repository');
        throw rollback;
      })
      .catch((e: unknown) => {
        if (e !== rollback) throw e;
      }),
  );
  const statements = (queries: CapturedQuery[]) =>
    queries.filter((q) => !/^\s*(begin|rollback|commit)\b|pg_catalog\./i.test(q.text));
  const [a, b] = [statements(ours.queries), statements(theirs.queries)];
  const [ta, tb] = [a.map((q) => normalize(q.text)), b.map((q) => normalize(q.text))];
  if (ta.length !== 1 || tb.length !== 1 || ta[0] !== tb[0]) {
    throw new Error(
      `${c.operation}: the statements differ:\n  repository: ${ta.join(' | ')}\n  raw:        ${tb.join(' | ')}`,
    );
  }
  const pa = JSON.stringify(a[0]?.parameters.map(String));
  const pb = JSON.stringify(b[0]?.parameters.map(String));
  if (pa !== pb) throw new Error(`${c.operation}: parameters differ: repository ${pa}, raw ${pb}`);
}

const normalize = (text: string) =>
  text
    .replaceAll('"', '')
    .replace(/\s+/g, ' ')
    .replace(/\s*([,()])\s*/g, '$1')
    .trim();

let inputBase = 0;

interface Measured {
  variants: Variant[];
  totals: Totals[];
  /** Per round, per variant (index 1.. vs 0): time and CPU ratios. */
  timeRatio: number[];
  cpuRatio: number[];
}

async function compare(
  variants: Variant[],
  c: Case,
  mode: Mode,
  options: RepositoryBenchOptions,
): Promise<Measured> {
  const concurrency = mode === 'concurrent' ? CONCURRENCY : 1;
  const calls = c.calls ?? (mode === 'concurrent' ? 2_000 : 500);
  // Inputs never repeat across modes either (written rows have unique names).
  inputBase += 10_000_000;
  const base = inputBase;
  const counters = variants.map(() => base);
  const totals: Totals[] = variants.map(() => ({ blocks: [], latencies: [] }));
  const runBlock = async (v: number, into: Totals | null, n: number) => {
    const variant = variants[v] as Variant;
    await c.before?.(variant.side, counters[v] as number, n);
    const block = await measureBlock(variant, counters, v, n, concurrency, options.blockMs, into);
    if (into) into.blocks.push(block);
  };
  // Warm-up: statements prepared, connections open, code optimised.
  for (let v = 0; v < variants.length; v++) await runBlock(v, null, Math.min(calls, 300));
  for (let round = 0; round < options.rounds; round++) {
    const order = variants.map((_, v) => (v + round) % variants.length);
    for (const v of order) await runBlock(v, totals[v] as Totals, calls);
  }
  const per = (v: number, f: (b: Block) => number) => (totals[v] as Totals).blocks.map(f);
  const ratios = (f: (b: Block) => number) =>
    variants.slice(1).map((_, k) => {
      const base = per(0, f);
      return median(per(k + 1, f).map((x, r) => x / (base[r] as number)));
    });
  return {
    variants,
    totals,
    timeRatio: ratios((b) => b.ms / b.calls),
    cpuRatio: ratios((b) => b.cpuUs / b.calls),
  };
}

async function measureBlock(
  variant: Variant,
  counters: number[],
  v: number,
  calls: number,
  concurrency: number,
  maxMs: number,
  into: Totals | null,
): Promise<Block> {
  let done = 0;
  const start = performance.now();
  const cpu = process.cpuUsage();
  const deadline = start + maxMs;
  const worker = async () => {
    while (done < calls && (done < concurrency || performance.now() < deadline)) {
      done++;
      const i = counters[v]!++;
      const t0 = performance.now();
      await variant.run(i);
      into?.latencies.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const ms = performance.now() - start;
  const used = process.cpuUsage(cpu);
  return { ms, cpuUs: used.user + used.system, calls: done };
}

function sideOf(label: string, t: Totals): Side & { cpuUsPerOp: number } {
  const sorted = Float64Array.from(t.latencies).sort();
  const ms = t.blocks.reduce((s, b) => s + b.ms, 0);
  const calls = t.blocks.reduce((s, b) => s + b.calls, 0);
  const cpu = t.blocks.reduce((s, b) => s + b.cpuUs, 0);
  return {
    label,
    opsPerSec: (calls * 1000) / ms,
    p50Ms: quantile(sorted, 0.5),
    p99Ms: quantile(sorted, 0.99),
    count: calls,
    cpuUsPerOp: cpu / calls,
  };
}

function rowsOf(c: Case, mode: Mode, m: Measured): BenchResult[] {
  const base = sideOf(m.variants[0]?.label as string, m.totals[0] as Totals);
  const modeLabel = mode === 'concurrent' ? `${CONCURRENCY} in flight` : 'sequential';
  return m.variants.slice(1).map((variant, k) => {
    const ours = sideOf(variant.label, m.totals[k + 1] as Totals);
    const time = m.timeRatio[k] as number;
    const cpu = m.cpuRatio[k] as number;
    const informational = variant.side !== 'repository';
    const timeTarget = c.kind === 'point' ? REPOSITORY_TARGET : LIST_TARGET;
    return {
      group: 'repository vs raw postgres',
      operation: informational
        ? `${c.operation}, ${modeLabel}: ${variant.label} vs raw`
        : `${c.operation}, ${modeLabel}`,
      baseline: base,
      ours,
      ratio: time,
      cpuRatio: cpu,
      ratioMeaning:
        'time per call, ours / raw (median of per-round ratios); cpuRatio: client CPU per call, likewise',
      target: informational
        ? ''
        : c.kind === 'point'
          ? `≤ ${REPOSITORY_TARGET.toFixed(2)}x time, ≤ ${CPU_TARGET.toFixed(2)}x CPU`
          : `≤ ${LIST_TARGET.toFixed(2)}x time (no slower)`,
      met: informational ? null : time <= timeTarget && (c.kind === 'list' || cpu <= CPU_TARGET),
    };
  });
}
