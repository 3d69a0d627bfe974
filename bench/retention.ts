/**
 * Retention under load (issue 9): the run purge (src/maintenance.ts: runs.purgeExpired,
 * RUN_PURGE_BATCH runs per statement, RUN_PURGE_PAUSE_MS between statements) deletes
 * the expired runs and their output chunks while the real API (bench/http-server.ts
 * `app`, its own process, over HTTP on 127.0.0.1) serves reads of the same tables.
 * Target: no statement of the API waits on the purge longer than 100 ms, read as: the
 * API's read p99 during the purge at most 100 ms above its p99 without the purge (the
 * same reads, same run), and no API statement seen waiting on a lock for 100 ms or more.
 * The absolute p99 is reported too; on a shared 2-core machine it moves with whatever
 * else runs, the difference and the ratio much less.
 *
 * Side by side in one run: the reads run all along, and the purge runs in alternate
 * blocks (quiet, purge, quiet, purge, …, quiet; the purge resumes where it stopped,
 * as one pass), so each request is counted as "during the purge" or "without it" and
 * whatever else the machine does hits both alike. Reported: p50/p99/max of each,
 * and the ratios. A sampler reads pg_stat_activity every 20 ms for API connections
 * waiting on a lock (wait_event_type 'Lock') and keeps the longest wait seen.
 *
 * The reads, in turn, by BENCH_RETENTION_CONNECTIONS concurrent clients (default 4),
 * one user's data: GET /runs/{id}, GET /runs/{id}/logs, GET /scripts/{id}/runs (page
 * 1), GET /runs (page 1), GET /scripts/{id}.
 *
 * The data: BENCH_RETENTION_RUNS expired runs (default 100,000; the full size
 * is 1,000,000), each with BENCH_RETENTION_CHUNKS (10) output chunks of ~100 bytes, over
 * runs/100 scripts of 10 per user, finished 91 days to ~2 years ago in interleaved
 * order; plus 5 recent runs per script (with chunks), the newest its latest run:
 * what the purge must keep. Loaded by INSERT … SELECT on the server, with
 * session_replication_role = replica for the two big tables (their foreign-key
 * checks off: the rows are consistent by construction), then VACUUM ANALYZE.
 * Checked after: no expired run left but latest ones, every kept run and its
 * output still there.
 *
 * `node --import=tsx bench/retention.ts`. DATABASE_URL: the server to use (a database
 * `dollarclub_bench_retention` is created and dropped); unset, an embedded PostgreSQL.
 * BENCH_RETENTION_BLOCK_SECONDS (5): the length of a block. Writes bench/results/retention.json.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';
import postgres from 'postgres';
import { createPool } from '../src/db/client.ts';
import { Database } from '../src/db/database.ts';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { RUN_PURGE_BATCH, RUN_PURGE_PAUSE_MS } from '../src/maintenance.ts';
import { Repositories } from '../src/repositories/index.ts';
import type { PurgePosition } from '../src/repositories/run-history.ts';
import { newToken, tokenHash } from '../src/services/tokens.ts';
import { exited, startServer } from './http.ts';
import { type BenchResult, quantile, type Side, sleep } from './measure.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const RESULTS = path.join(HERE, 'results');
const DATABASE = 'dollarclub_bench_retention';
const RETENTION_DAYS = 90;
const TARGET_MS = 100;
const KEPT_PER_SCRIPT = 5;
const SCRIPTS_PER_USER = 10;

function intEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new Error(`${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(raw)}`);
  return value;
}

const RUNS = intEnv('BENCH_RETENTION_RUNS', 100_000, 1_000, 10_000_000);
const CHUNKS = intEnv('BENCH_RETENTION_CHUNKS', 10, 1, 100);
const CONNECTIONS = intEnv('BENCH_RETENTION_CONNECTIONS', 4, 1, 64);
const BLOCK_MS = intEnv('BENCH_RETENTION_BLOCK_SECONDS', 5, 1, 600) * 1000;
const SCRIPTS = Math.max(200, Math.round(RUNS / 100));
const USERS = Math.ceil(SCRIPTS / SCRIPTS_PER_USER);
const EXPIRED_PER_SCRIPT = Math.ceil(RUNS / SCRIPTS);

async function server(): Promise<{ url: string; where: string; stop: () => Promise<void> }> {
  const url = process.env.DATABASE_URL;
  if (url) return { url, where: 'DATABASE_URL', stop: async () => {} };
  const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-bench-retention-'));
  await chmod(dir, 0o755);
  const embedded = await startEmbeddedPostgres({ dir: path.join(dir, 'data'), persistent: false });
  return {
    url: embedded.url,
    where: 'embedded PostgreSQL',
    stop: async () => {
      await embedded.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

const seconds = (from: number) => ((performance.now() - from) / 1000).toFixed(1);

async function load(sql: postgres.Sql, log: (line: string) => void): Promise<void> {
  let t = performance.now();
  await sql`
    insert into users (email, username, hashed_password)
    select 'retention' || n || '@example.com', 'retention_' || n,
      '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA'
    from generate_series(1, ${USERS}) as n
  `;
  await sql`
    insert into scripts (user_id, filename, original_filename, file_path, file_size, file_extension, sha256,
      status, exit_code, execution_time_seconds, started_at, completed_at)
    select u.id, 'r' || n || '.py', 'strategy.py', '/bench/r' || n || '.py', 100, '.py', repeat('b', 64),
      -- Created completed (the status machine refuses uploaded -> completed); the times and
      -- last_run_id are set to the latest run's once the runs exist.
      'completed', 0, 2, now() - interval '2 seconds', now()
    from generate_series(0, ${SCRIPTS - 1}) as n
    join (select id, row_number() over (order by id) - 1 as k from users) as u
      on u.k = n / ${SCRIPTS_PER_USER}
  `;
  log(`  ${USERS} users, ${SCRIPTS} scripts in ${seconds(t)} s`);
  // The two big tables: foreign-key checks (triggers) off for the load only.
  await sql.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    t = performance.now();
    // Expired: finished 91 days ago and earlier, scripts interleaved (as many owners' runs
    // age together); then the recent ones, each script's newest last.
    await tx`
      insert into script_runs (script_id, user_id, status, script_sha256, exit_code, execution_time_seconds,
        queued_at, started_at, completed_at, log_bytes)
      select s.id, s.user_id, 'completed', s.sha256, 0, 2,
        at - interval '2 seconds', at - interval '2 seconds', at, ${CHUNKS * 100}
      from generate_series(1, ${EXPIRED_PER_SCRIPT}) as g
      cross join scripts as s
      cross join lateral (
        select now() - interval '91 days' - make_interval(secs => (g * ${SCRIPTS} + s.id) * 30) as at
      ) as t
      order by at
    `;
    await tx`
      insert into script_runs (script_id, user_id, status, script_sha256, exit_code, execution_time_seconds,
        queued_at, started_at, completed_at, log_bytes)
      select s.id, s.user_id, 'completed', s.sha256, 0, 2,
        at - interval '2 seconds', at - interval '2 seconds', at, ${CHUNKS * 100}
      from generate_series(1, ${KEPT_PER_SCRIPT}) as g
      cross join scripts as s
      cross join lateral (select now() - make_interval(hours => ${KEPT_PER_SCRIPT} - g) as at) as t
      order by at
    `;
    log(`  ${RUNS} expired + ${SCRIPTS * KEPT_PER_SCRIPT} recent runs in ${seconds(t)} s`);
    t = performance.now();
    await tx`
      insert into run_log_chunks (run_id, user_id, seq, data, created_at)
      select r.id, r.user_id, c.seq,
        'bar ' || c.seq || ': open 101.25 high 102.50 low 100.75 close 101.90 volume 12345 signal hold',
        r.completed_at
      from script_runs as r
      cross join generate_series(0, ${CHUNKS - 1}) as c(seq)
    `;
    log(
      `  ${((RUNS + SCRIPTS * KEPT_PER_SCRIPT) * CHUNKS).toLocaleString('en-US')} chunks in ${seconds(t)} s`,
    );
  });
  t = performance.now();
  await sql`
    update scripts as s
    set started_at = r.started_at, completed_at = r.completed_at, last_run_id = r.id,
      run_count = ${EXPIRED_PER_SCRIPT + KEPT_PER_SCRIPT}
    from (
      select distinct on (script_id) id, script_id, started_at, completed_at
      from script_runs
      order by script_id, id desc
    ) as r
    where r.script_id = s.id
  `;
  await sql`vacuum analyze`;
  log(`  latest runs named, VACUUM ANALYZE in ${seconds(t)} s`);
}

type Phase = 'warmup' | 'quiet' | 'purge' | 'done';

interface Sample {
  phase: Phase;
  ms: number;
}

function summary(values: number[]) {
  const sorted = Float64Array.from(values).sort();
  return {
    count: values.length,
    p50_ms: quantile(sorted, 0.5),
    p99_ms: quantile(sorted, 0.99),
    max_ms: sorted.length > 0 ? (sorted[sorted.length - 1] as number) : Number.NaN,
  };
}

const fmt = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2));

/**
 * Runs the benchmark in a database of its own on the server of `serverUrl` (created,
 * dropped at the end); writes bench/results/retention.json and answers the table row.
 */
export async function retentionBenchmark(
  serverUrl: string,
  where: string,
  log: (line: string) => void,
): Promise<{ result: BenchResult; correct: boolean }> {
  const started = new Date();
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  const url = withDatabase(serverUrl, DATABASE);
  log(
    `retention bench: ${RUNS.toLocaleString('en-US')} expired runs × ${CHUNKS} chunks, ${SCRIPTS} scripts, ` +
      `${CONNECTIONS} API clients, blocks of ${BLOCK_MS / 1000} s (${where})`,
  );
  const children: Array<Parameters<typeof exited>[0]> = [];
  try {
    await admin`drop database if exists ${admin(DATABASE)} with (force)`;
    await admin`create database ${admin(DATABASE)}`;
    await migrate({ databaseUrl: url });
    const sql = postgres(url, { max: 2, onnotice: () => {} });
    const quietLog = pino({ level: 'warn' }, pino.destination(2));
    const purgePool = createPool(
      {
        url,
        max: 1,
        idleTimeoutSeconds: 0,
        maxLifetimeSeconds: 0,
        connectTimeoutSeconds: 10,
        statementTimeoutMs: 600_000,
        prepare: true,
        applicationName: 'dollarclub-bench-purge',
      },
      quietLog,
    );
    try {
      const loadStart = performance.now();
      await load(sql, log);
      const loadSeconds = (performance.now() - loadStart) / 1000;
      const [sizes] = await sql<{ runs: string; chunks: string }[]>`
        select pg_size_pretty(pg_total_relation_size('script_runs')) as runs,
          pg_size_pretty(pg_total_relation_size('run_log_chunks')) as chunks
      `;
      log(
        `  loaded in ${loadSeconds.toFixed(0)} s: script_runs ${sizes?.runs}, run_log_chunks ${sizes?.chunks}`,
      );

      // The reader: the first user, its scripts and their kept runs.
      const [owner] = await sql<{ id: number }[]>`select min(id)::int as id from users`;
      const ownerId = owner!.id;
      const scripts = (await sql<{ id: number }[]>`select id from scripts where user_id = ${ownerId}`).map(
        (r) => r.id,
      );
      const kept = (
        await sql<{ id: number }[]>`
          select id from script_runs
          where user_id = ${ownerId} and completed_at > now() - interval '1 day'
        `
      ).map((r) => r.id);
      const token = newToken();
      await sql`
        insert into api_tokens (user_id, token_hash, expires_at)
        values (${ownerId}, ${tokenHash(token)!}, now() + interval '1 day')
      `;
      await mkdir(RESULTS, { recursive: true });
      const { child, port } = await startServer(
        'app',
        { BENCH_DATABASE_URL: url, BENCH_OWNER_ID: String(ownerId) },
        RESULTS,
      );
      children.push(child);
      const base = `http://127.0.0.1:${port}/api/v1`;
      const headers = { authorization: `Bearer ${token}` };
      const pick = <T>(xs: T[]) => xs[Math.floor(Math.random() * xs.length)] as T;
      const reads = [
        () => `${base}/runs/${pick(kept)}`,
        () => `${base}/runs/${pick(kept)}/logs`,
        () => `${base}/scripts/${pick(scripts)}/runs?per_page=20`,
        () => `${base}/runs?per_page=20`,
        () => `${base}/scripts/${pick(scripts)}`,
      ];
      // Every read answers 200 before the measure (right after start-up the app may still
      // shed load while it compiles: it gets 30 s to settle).
      const settled = Date.now() + 30_000;
      for (const read of reads) {
        for (;;) {
          const res = await fetch(read(), { headers });
          const body = await res.text();
          if (res.status === 200) break;
          if (Date.now() > settled) throw new Error(`${read()} answered ${res.status}: ${body}`);
          await sleep(500);
        }
      }

      const state: { phase: Phase } = { phase: 'warmup' };
      const samples: Sample[] = [];
      let failures = 0;
      const clients = Array.from({ length: CONNECTIONS }, async (_, c) => {
        for (let i = c; state.phase !== 'done'; i++) {
          const read = reads[i % reads.length]!;
          const at = state.phase;
          const start = performance.now();
          const res = await fetch(read(), { headers });
          await res.arrayBuffer();
          const ms = performance.now() - start;
          if (res.status !== 200) failures++;
          // A request that crossed a block boundary counts for the purge side (the stricter).
          samples.push({ phase: at === 'purge' || state.phase === 'purge' ? 'purge' : at, ms });
        }
      });

      // Lock waits of API statements, seen from the server.
      const sampler = postgres(url, { max: 1, onnotice: () => {} });
      let lockSamples = 0;
      let lockWaitMaxMs = 0;
      const sampling = (async () => {
        while (state.phase !== 'done') {
          const rows = await sampler<{ ms: number }[]>`
            select extract(epoch from clock_timestamp() - query_start) * 1000 as ms
            from pg_stat_activity
            where application_name = 'dollarclub-bench-app' and wait_event_type = 'Lock'
          `;
          lockSamples += rows.length;
          for (const r of rows) lockWaitMaxMs = Math.max(lockWaitMaxMs, Number(r.ms));
          await sleep(20);
        }
      })();

      const repos = new Repositories(
        new Database(purgePool, { log: quietLog, slowQueryMs: 60_000, queryTimeoutMs: 600_000 }),
      );
      const before = new Date(Date.now() - RETENTION_DAYS * 86_400_000);
      let position: PurgePosition = null;
      let deleted = 0;
      let purgeDone = false;
      const statementMs: number[] = [];
      let purgeMs = 0;
      let blocks = 0;
      let quietMs = 0;
      const quietBlock = async () => {
        state.phase = 'quiet';
        const t = performance.now();
        await sleep(BLOCK_MS);
        quietMs += performance.now() - t;
      };
      await sleep(3_000); // warm-up
      const loadBefore = loadavg();
      await quietBlock();
      while (!purgeDone) {
        state.phase = 'purge';
        blocks++;
        const blockStart = performance.now();
        while (performance.now() - blockStart < BLOCK_MS) {
          const t = performance.now();
          const result = await repos.runs.purgeExpired(before, RUN_PURGE_BATCH, position);
          statementMs.push(performance.now() - t);
          deleted += result.deleted;
          position = result.position;
          if (result.deleted < RUN_PURGE_BATCH) {
            purgeDone = true;
            break;
          }
          await sleep(RUN_PURGE_PAUSE_MS);
        }
        purgeMs += performance.now() - blockStart;
        state.phase = 'quiet';
        log(
          `  purge block ${blocks}: ${deleted.toLocaleString('en-US')} runs deleted so far; ` +
            `${samples.length} reads measured`,
        );
        await quietBlock();
      }
      state.phase = 'done';
      await Promise.all([...clients, sampling]);
      await sampler.end({ timeout: 5 });
      const loadAfter = loadavg();

      // Checked from the rows.
      const [rows] = await sql<{ expired_left: number; runs: number; chunks: number; latest: number }[]>`
        select
          (select count(*)::int from script_runs as r
            where r.completed_at < ${before}
              and not exists (select 1 from scripts as s where s.last_run_id = r.id)) as expired_left,
          (select count(*)::int from script_runs) as runs,
          (select count(*)::int from run_log_chunks) as chunks,
          (select count(*)::int from scripts as s join script_runs as r on r.id = s.last_run_id) as latest
      `;
      const r = rows!;
      const keptRuns = SCRIPTS * KEPT_PER_SCRIPT;
      const correct =
        r.expired_left === 0 &&
        r.runs === keptRuns &&
        r.chunks === keptRuns * CHUNKS &&
        r.latest === SCRIPTS &&
        deleted === EXPIRED_PER_SCRIPT * SCRIPTS;
      const quiet = summary(samples.filter((s) => s.phase === 'quiet').map((s) => s.ms));
      const purge = summary(samples.filter((s) => s.phase === 'purge').map((s) => s.ms));
      const statements = summary(statementMs);
      const addedP99 = purge.p99_ms - quiet.p99_ms;
      const met = correct && failures === 0 && addedP99 <= TARGET_MS && lockWaitMaxMs < TARGET_MS;
      const report = {
        started_at: started.toISOString(),
        database: where,
        size: {
          expired_runs: EXPIRED_PER_SCRIPT * SCRIPTS,
          chunks_per_run: CHUNKS,
          expired_chunks: EXPIRED_PER_SCRIPT * SCRIPTS * CHUNKS,
          scripts: SCRIPTS,
          kept_runs: keptRuns,
          script_runs_size: sizes?.runs,
          run_log_chunks_size: sizes?.chunks,
        },
        load_seconds: Math.round(loadSeconds),
        api_clients: CONNECTIONS,
        block_seconds: BLOCK_MS / 1000,
        purge_blocks: blocks,
        reads_without_purge: quiet,
        reads_during_purge: purge,
        ratio_p99: purge.p99_ms / quiet.p99_ms,
        added_p99_ms: addedP99,
        ratio_max: purge.max_ms / quiet.max_ms,
        failures,
        api_lock_wait_samples: lockSamples,
        api_lock_wait_max_ms: lockWaitMaxMs,
        purge: {
          runs_deleted: deleted,
          batch: RUN_PURGE_BATCH,
          pause_ms: RUN_PURGE_PAUSE_MS,
          seconds: purgeMs / 1000,
          runs_per_second: deleted / (purgeMs / 1000),
          statement: statements,
        },
        rows: r,
        correct,
        target_ms: TARGET_MS,
        met,
        load_average_before: loadBefore,
        load_average_after: loadAfter,
      };
      log('');
      log(`API reads (${CONNECTIONS} clients)   count   p50 ms   p99 ms   max ms`);
      for (const [label, s] of [
        ['without the purge', quiet],
        ['during the purge ', purge],
      ] as const)
        log(
          `  ${label}          ${String(s.count).padStart(7)} ${fmt(s.p50_ms).padStart(8)} ${fmt(s.p99_ms).padStart(8)} ${fmt(s.max_ms).padStart(8)}`,
        );
      log(
        `  during / without: p99 ${report.ratio_p99.toFixed(2)}x (${addedP99 >= 0 ? '+' : ''}${fmt(addedP99)} ms), max ${report.ratio_max.toFixed(2)}x; ` +
          `${failures} failed; API statements seen waiting on a lock: ${lockSamples} (longest ${fmt(lockWaitMaxMs)} ms)`,
      );
      log(
        `purge: ${deleted.toLocaleString('en-US')} runs and ${(deleted * CHUNKS).toLocaleString('en-US')} chunks in ` +
          `${(purgeMs / 1000).toFixed(1)} s of purge blocks (${report.purge.runs_per_second.toFixed(0)} runs/s), ` +
          `${statementMs.length} statements of ${RUN_PURGE_BATCH}: p50 ${fmt(statements.p50_ms)} / p99 ` +
          `${fmt(statements.p99_ms)} / max ${fmt(statements.max_ms)} ms`,
      );
      log(
        `rows after: ${r.expired_left} expired left, ${r.runs} runs (${keptRuns} kept expected), ${r.chunks} chunks, ` +
          `${r.latest}/${SCRIPTS} latest runs`,
      );
      log(
        met
          ? `target met (p99 during the purge ${fmt(addedP99)} ms above without it, ≤ ${TARGET_MS}; no lock wait ≥ ${TARGET_MS} ms)`
          : `TARGET MISSED${correct ? '' : ' (WRONG ROWS)'}`,
      );
      await writeFile(path.join(RESULTS, 'retention.json'), `${JSON.stringify(report, null, 2)}\n`);
      const side = (label: string, x: ReturnType<typeof summary>, ms: number): Side => ({
        label,
        opsPerSec: x.count / (ms / 1000),
        p50Ms: x.p50_ms,
        p99Ms: x.p99_ms,
        count: x.count,
      });
      const result: BenchResult = {
        group: 'retention',
        operation:
          `API reads during the purge of ${deleted.toLocaleString('en-US')} expired runs ` +
          `(${(deleted * CHUNKS).toLocaleString('en-US')} chunks) vs without (${CONNECTIONS} clients, real HTTP)`,
        baseline: side('without the purge', quiet, quietMs),
        ours: side('during the purge', purge, purgeMs),
        ratio: report.ratio_p99,
        ratioMeaning: 'p99 latency, during / without',
        target: `p99 ≤ +${TARGET_MS} ms, no lock wait ≥ ${TARGET_MS} ms`,
        met,
        notes: [
          `max ${fmt(quiet.max_ms)} → ${fmt(purge.max_ms)} ms; p99 ${addedP99 >= 0 ? '+' : ''}${fmt(addedP99)} ms; ` +
            `API statements seen waiting on a lock: ${lockSamples} (longest ${fmt(lockWaitMaxMs)} ms)`,
          `purge ${report.purge.runs_per_second.toFixed(0)} runs/s; statements p50 ${fmt(statements.p50_ms)} / ` +
            `p99 ${fmt(statements.p99_ms)} / max ${fmt(statements.max_ms)} ms`,
          ...(correct ? [] : ['WRONG ROWS after the purge']),
          ...(failures === 0 ? [] : [`${failures} reads failed`]),
        ],
      };
      return { result, correct };
    } finally {
      for (const child of children) child.send('stop');
      await Promise.all(children.map((child) => exited(child, 10_000)));
      await Promise.allSettled([sql.end({ timeout: 5 }), purgePool.end({ timeout: 5 })]);
    }
  } finally {
    await admin`drop database if exists ${admin(DATABASE)} with (force)`.catch(() => {});
    await admin.end();
  }
}

async function main(): Promise<number> {
  const db = await server();
  try {
    const { correct } = await retentionBenchmark(db.url, db.where, (line) => console.log(line));
    return correct ? 0 : 1;
  } finally {
    await db.stop();
  }
}

// Run directly (`node --import=tsx bench/retention.ts`), not when bench/run.ts imports it.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href)
  main().then(
    (code) => process.exit(code),
    (error) => {
      console.error(error);
      process.exit(1);
    },
  );
