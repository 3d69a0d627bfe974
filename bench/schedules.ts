/**
 * Schedules at scale (issue 9): 10,000 schedules due in the same minute, three
 * scheduler processes (bench/schedule-worker.ts, each with its own pool) started
 * at once. Target: every occurrence queued or skipped within 5 s, none twice —
 * checked from the rows (one run per schedule at most, every schedule advanced,
 * runs + skips = schedules). `node --import=tsx bench/schedules.ts`, under a minute.
 *
 * The data: 1,800 users, 10,000 scripts (5 or 6 per user), one schedule each, due
 * over the last minute (different cron rules and time zones). A tenth of the scripts
 * already have a queued run (their occurrence is skipped), and users with six
 * scripts hit MAX_CONCURRENT_SCRIPTS (5) (one more skip each, or none when a busy
 * script already took a slot — each skip is the scheduler's call, under its locks).
 *
 * DATABASE_URL: the server to use (a database `dollarclub_bench_schedules` is created
 * and dropped); unset, an embedded PostgreSQL in a temporary folder. Writes
 * bench/results/schedules.json.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DATABASE = 'dollarclub_bench_schedules';
const SCHEDULES = Number(process.env.BENCH_SCHEDULES ?? 10_000);
const USERS = Math.round(SCHEDULES * 0.18);
const PROCESSES = Number(process.env.BENCH_SCHEDULER_PROCESSES ?? 3);
const TARGET_MS = 5_000;

async function server(): Promise<{ url: string; stop: () => Promise<void> }> {
  const url = process.env.DATABASE_URL;
  if (url) return { url, stop: async () => {} };
  const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-bench-schedules-'));
  await chmod(dir, 0o755);
  const embedded = await startEmbeddedPostgres({ dir: path.join(dir, 'data'), persistent: false });
  return {
    url: embedded.url,
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

async function load(sql: postgres.Sql, now: Date): Promise<void> {
  await sql`
    insert into users (email, username, hashed_password)
    select 'bench' || n || '@example.com', 'bench_' || n,
      '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA'
    from generate_series(1, ${USERS}) as n
  `;
  await sql`
    insert into scripts (user_id, filename, original_filename, file_path, file_size, file_extension, sha256)
    select u.id, 's' || n || '.py', 'strategy.py', '/bench/s' || n || '.py', 100, '.py', repeat('a', 64)
    from generate_series(0, ${SCHEDULES - 1}) as n
    join (select id, row_number() over (order by id) - 1 as k from users) as u on u.k = n % ${USERS}
  `;
  // A tenth of the scripts are busy: a queued run, as RunRepository leaves it.
  await sql`
    with picked as (
      select id, user_id, sha256 from scripts where id % 10 = 0
    ), runs as (
      insert into script_runs (script_id, user_id, script_sha256)
      select id, user_id, sha256 from picked
      returning id, script_id
    )
    update scripts as s
    set status = 'queued', last_run_id = runs.id, run_count = 1
    from runs
    where s.id = runs.script_id
  `;
  // One schedule per script, due at some second of the last minute.
  await sql`
    insert into script_schedules (script_id, user_id, cron, timezone, next_run_at)
    select id, user_id,
      -- Rules whose next occurrence is hours away: one occurrence due per schedule.
      (array['30 9 * * 1-5', '0 16 * * 1-5', '15 3 * * *', '0 0 1 * *'])[1 + id % 4],
      (array['UTC', 'America/New_York', 'Europe/London', 'Asia/Tokyo', 'Australia/Sydney'])[1 + id % 5],
      ${now}::timestamptz - make_interval(secs => 1 + id % 59)
    from scripts
  `;
  await sql`vacuum analyze`;
}

function startWorker(url: string): {
  child: ChildProcess;
  ready: Promise<void>;
  result: Promise<WorkerResult>;
} {
  const child = spawn(process.execPath, ['--import=tsx', path.join(HERE, 'schedule-worker.ts')], {
    env: { ...process.env, BENCH_SCHEDULES_URL: url },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! });
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    onReady = resolve;
  });
  const result = new Promise<WorkerResult>((resolve, reject) => {
    lines.on('line', (line) => {
      if (line === 'ready') onReady();
      else if (line.startsWith('result ')) resolve(JSON.parse(line.slice('result '.length)));
    });
    child.on('exit', (code) => reject(new Error(`a scheduler process exited with ${code}`)));
  });
  return { child, ready, result };
}

interface WorkerResult {
  pid: number;
  fired: number;
  skipped: number;
  ms: number;
  cpu_ms: number;
}

async function main(): Promise<number> {
  const { url: serverUrl, stop } = await server();
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  const url = withDatabase(serverUrl, DATABASE);
  try {
    await admin`drop database if exists ${admin(DATABASE)} with (force)`;
    await admin`create database ${admin(DATABASE)}`;
    await migrate({ databaseUrl: url });
    const sql = postgres(url, { max: 2, onnotice: () => {} });
    try {
      const loadStart = performance.now();
      await load(sql, new Date());
      console.log(`loaded ${SCHEDULES} schedules in ${Math.round(performance.now() - loadStart)} ms`);
      const workers = Array.from({ length: PROCESSES }, () => startWorker(url));
      await Promise.all(workers.map((w) => w.ready));
      const loadBefore = loadavg();
      const start = performance.now();
      for (const w of workers) w.child.stdin!.write('go\n');
      const results = await Promise.all(workers.map((w) => w.result));
      const wallMs = performance.now() - start;

      // Checked from the rows, not from what the processes say.
      const [rows] = await sql<
        {
          schedules: number;
          still_due: number;
          runs: number;
          doubled: number;
          skipped: number;
          fired: number;
        }[]
      >`
        select
          (select count(*)::int from script_schedules) as schedules,
          (select count(*)::int from script_schedules where next_run_at <= now() - interval '1 minute') as still_due,
          (select count(*)::int from script_runs where trigger = 'schedule') as runs,
          (select count(*)::int from (
            select schedule_id from script_runs where trigger = 'schedule' group by schedule_id having count(*) > 1
          ) as d) as doubled,
          (select coalesce(sum(skipped_count), 0)::int from script_schedules) as skipped,
          (select count(*)::int from script_schedules where last_fired_at is not null) as fired
      `;
      const r = rows!;
      const handled = r.runs + r.skipped;
      const ok = r.still_due === 0 && r.doubled === 0 && handled === SCHEDULES && r.fired === r.runs;
      const report = {
        schedules: SCHEDULES,
        processes: PROCESSES,
        wall_ms: Math.round(wallMs),
        target_ms: TARGET_MS,
        per_process: results.map((x) => ({
          fired: x.fired,
          skipped: x.skipped,
          ms: Math.round(x.ms),
          cpu_ms: Math.round(x.cpu_ms),
        })),
        rows: r,
        correct: ok,
        met: ok && wallMs <= TARGET_MS,
        load_average_before: loadBefore,
        load_average_after: loadavg(),
      };
      console.log(
        `${SCHEDULES} schedules due, ${PROCESSES} scheduler processes: all handled in ${report.wall_ms} ms ` +
          `(target ${TARGET_MS} ms): ${r.runs} runs queued, ${r.skipped} skipped, ${r.doubled} fired twice, ` +
          `${r.still_due} left due`,
      );
      for (const [i, p] of report.per_process.entries())
        console.log(
          `  process ${i + 1}: ${p.fired} fired, ${p.skipped} skipped in ${p.ms} ms (${p.cpu_ms} ms of CPU)`,
        );
      console.log(report.met ? 'target met' : `TARGET MISSED${ok ? '' : ' (WRONG ROWS)'}`);
      await mkdir(path.join(HERE, 'results'), { recursive: true });
      await writeFile(path.join(HERE, 'results', 'schedules.json'), `${JSON.stringify(report, null, 2)}\n`);
      return ok ? 0 : 1;
    } finally {
      await sql.end({ timeout: 5 });
    }
  } finally {
    await admin`drop database if exists ${admin(DATABASE)} with (force)`.catch(() => {});
    await admin.end();
    await stop();
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
