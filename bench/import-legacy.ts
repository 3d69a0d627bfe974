/**
 * The import-legacy benchmark: an original (Python) DollarClub database built from its
 * own DDL (test/fixtures/legacy-schema.sql) with 100k users and 1M scripts (× scale),
 * and one small file per script, imported end to end into an empty migrated database;
 * side by side with a bare COPY of the same rows from the same database into tables
 * without any constraint, index or trigger (what moving the bytes costs).
 *
 * Standalone: `node --import=tsx bench/import-legacy.ts` (DATABASE_URL, else an embedded
 * PostgreSQL; BENCH_SCALE). Also the `import` suite of `npm run bench`. The rate is
 * reported end to end and without the file step (classifying the scripts, then reading,
 * hashing and writing one file per script), which dominated on a busy 2-core machine
 * before the import was profiled (bench/README.md, "import-legacy profiled").
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import postgres from 'postgres';
import { createPool } from '../src/db/client.ts';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { pipeCopy } from '../src/services/legacy-import/copy.ts';
import { formatReport, type ImportReport, importLegacy } from '../src/services/legacy-import/import.ts';
import { TerminalProgress } from '../src/services/legacy-import/progress.ts';
import { SecretBox } from '../src/services/secret-box.ts';
import type { BenchResult } from './measure.ts';

export const IMPORT_TARGET = 100_000;
const LEGACY_DB = 'dollarclub_bench_legacy';
const TARGET_DB = 'dollarclub_bench_import';
// One real bcrypt hash (cost 4), shared: the import keeps hashes, it never computes one.
const BCRYPT = '$2b$04$GNgwxBRC6HqkkgKhtBD2zuUVJSqKNJTaLM2poRTYiGFtSxMv7Y3cu';

export interface ImportBenchOptions {
  users: number;
  scripts: number;
  /** Write the files (true), or let every file be missing (false: rows only). */
  files: boolean;
  log: (line: string) => void;
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Seeded PRNG, so two runs import the same rows. */
function prng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const iso = (ms: number) => new Date(ms).toISOString();
const naive = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');

function* userRows(n: number): Generator<string> {
  const r = prng(1);
  const start = Date.parse('2023-01-01T00:00:00Z');
  let batch = '';
  for (let id = 1; id <= n; id++) {
    const google = r() < 0.2;
    const ibkr = r() < 0.15;
    const created = start + Math.floor(r() * 700 * 86_400_000);
    const email = id % 10 === 0 ? `Trader${id}@Example.COM` : `trader${id}@example.com`;
    const username = id % 7 === 0 ? `trader.${id}` : `trader_${id}`;
    batch += [
      id,
      email,
      username,
      google ? '\\N' : BCRYPT,
      google ? 'google' : r() < 0.5 ? 'email' : '\\N',
      google ? `g${id}` : '\\N',
      r() < 0.5 ? '\\N' : r() < 0.97 ? 't' : 'f',
      r() < 0.5 ? '\\N' : 't',
      iso(created),
      iso(created + 86_400_000),
      '\\N',
      ibkr ? `U${id}` : '\\N',
      ibkr ? `access-${id}` : '\\N',
      ibkr ? `refresh-${id}` : '\\N',
      ibkr ? naive(created + 30 * 86_400_000) : '\\N',
      ibkr ? naive(created + 86_400_000) : '\\N',
    ].join('\t');
    batch += '\n';
    if (id % 10_000 === 0) {
      yield batch;
      batch = '';
    }
  }
  if (batch !== '') yield batch;
}

const EXTS = ['.py', '.js', '.ts'];

function* scriptRows(n: number, users: number, names: string[]): Generator<string> {
  const r = prng(2);
  const start = Date.parse('2025-12-01T00:00:00Z');
  let batch = '';
  for (let id = 1; id <= n; id++) {
    const ext = EXTS[id % 3]!;
    const filename = names[id - 1]!;
    const created = start + Math.floor((id / n) * 360 * 86_400_000);
    const x = r();
    const status =
      x < 0.25
        ? 'uploaded'
        : x < 0.83
          ? 'completed'
          : x < 0.94
            ? 'failed'
            : x < 0.99
              ? 'cancelled'
              : 'running';
    const ran = status !== 'uploaded';
    const finished = ran && status !== 'running';
    const time = finished ? (r() * 30).toFixed(3) : '\\N';
    batch += [
      id,
      1 + Math.floor(r() * r() * users),
      filename,
      `strategy ${id}${ext}`,
      `/srv/dollarclub/scripts/${filename}`,
      16,
      id % 20 === 0 ? '\\N' : ext,
      status,
      status === 'completed' ? `run ${id}\\nok\\n` : '\\N',
      status === 'failed' ? 'exit 1' : '\\N',
      time,
      '\\N',
      finished ? (status === 'completed' ? 0 : 1) : '\\N',
      ran ? iso(created + 60_000) : '\\N',
      finished ? iso(created + 90_000) : '\\N',
      iso(created),
      iso(created + 90_000),
      '\\N',
    ].join('\t');
    batch += '\n';
    if (id % 10_000 === 0) {
      yield batch;
      batch = '';
    }
  }
  if (batch !== '') yield batch;
}

async function copyText(sql: postgres.Sql, statement: string, chunks: Iterable<string>) {
  const into = await sql.unsafe(statement).writable();
  await pipeline(
    (function* () {
      for (const c of chunks) yield Buffer.from(c);
    })(),
    into,
  );
}

async function writeFiles(dir: string, names: string[], log: (line: string) => void): Promise<number> {
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < names.length) {
      const i = next++;
      await writeFile(path.join(dir, names[i]!), `print(${i + 1})\n`);
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  const seconds = (performance.now() - started) / 1000;
  log(`  wrote ${names.length} files in ${seconds.toFixed(1)} s`);
  return seconds;
}

/** Builds the old database, runs the bare COPY and the import into an empty database, and reports. */
export async function importBenchmark(
  serverUrl: string,
  options: ImportBenchOptions,
): Promise<BenchResult[]> {
  const { log } = options;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  const work = await mkdtemp(path.join(tmpdir(), 'dollarclub-bench-import-'));
  const filesDir = path.join(work, 'files');
  await mkdir(filesDir);
  const legacyUrl = withDatabase(serverUrl, LEGACY_DB);
  const targetUrl = withDatabase(serverUrl, TARGET_DB);
  try {
    for (const db of [LEGACY_DB, TARGET_DB]) {
      await admin`drop database if exists ${admin(db)} with (force)`;
      await admin`create database ${admin(db)}`;
    }
    log(`import-legacy: building the old database (${options.users} users, ${options.scripts} scripts)`);
    const legacy = postgres(legacyUrl, { max: 1, onnotice: () => {} });
    const names = Array.from({ length: options.scripts }, (_, i) => `${randomUUID()}${EXTS[(i + 1) % 3]}`);
    try {
      const ddl = await readFile(new URL('../test/fixtures/legacy-schema.sql', import.meta.url), 'utf8');
      await legacy.unsafe(
        ddl
          .replace(':provider_labels', `'email', 'google'`)
          .replace(':status_labels', `'uploaded', 'running', 'completed', 'failed', 'cancelled'`),
      );
      await copyText(
        legacy,
        `copy users (id, email, username, hashed_password, auth_provider, google_id, is_active, is_verified,
          created_at, updated_at, last_login_at, ibkr_user_id, ibkr_access_token, ibkr_refresh_token,
          ibkr_token_expires_at, ibkr_connected_at) from stdin`,
        userRows(options.users),
      );
      await copyText(
        legacy,
        `copy scripts (id, user_id, filename, original_filename, file_path, file_size, file_extension, status,
          execution_logs, error_message, execution_time_seconds, memory_usage_mb, exit_code, started_at,
          completed_at, created_at, updated_at, celery_task_id) from stdin`,
        scriptRows(options.scripts, options.users, names),
      );
      await legacy`vacuum analyze`;
    } finally {
      await legacy.end();
    }
    const filesSeconds = options.files ? await writeFiles(filesDir, names, log) : 0;
    await migrate({ databaseUrl: targetUrl });

    // Baseline: the same rows, COPY out of the old database into tables with nothing on them.
    const target = postgres(targetUrl, { max: 2, onnotice: () => {} });
    const source = postgres(legacyUrl, { max: 1, onnotice: () => {} });
    let bareSeconds: number;
    try {
      await target.unsafe(`
        create table bare_users (id integer, email text, username text, hashed_password text, auth_provider text,
          google_id text, is_active boolean, is_verified boolean, created_at timestamptz, updated_at timestamptz,
          last_login_at timestamptz, ibkr_user_id text, ibkr_access_token text, ibkr_refresh_token text,
          ibkr_token_expires_at timestamp, ibkr_connected_at timestamp);
        create table bare_scripts (id integer, user_id integer, filename text, original_filename text,
          file_path text, file_size integer, file_extension text, status text, execution_logs text,
          error_message text, execution_time_seconds numeric, memory_usage_mb numeric, exit_code integer,
          started_at timestamptz, completed_at timestamptz, created_at timestamptz, updated_at timestamptz,
          celery_task_id text)
      `);
      const started = performance.now();
      // As the import does it: one transaction on each side, COPY out piped into COPY in.
      await target.begin(async (tx) => {
        await source.begin('isolation level repeatable read read only', async (l) => {
          for (const table of ['users', 'scripts']) {
            await pipeCopy(
              await l.unsafe(`copy (select * from ${table}) to stdout`).readable(),
              await tx.unsafe(`copy bare_${table} from stdin`).writable(),
            );
          }
        });
      });
      bareSeconds = (performance.now() - started) / 1000;
      await target.unsafe('drop table bare_users; drop table bare_scripts');
    } finally {
      await Promise.all([target.end(), source.end()]);
    }
    const rows = options.users + options.scripts;
    log(`  bare COPY of ${rows} rows into tables without constraints: ${bareSeconds.toFixed(1)} s`);

    // Ours: the import, end to end (files included), as the CLI runs it.
    const sql = createPool(
      {
        url: targetUrl,
        max: 2,
        idleTimeoutSeconds: 0,
        maxLifetimeSeconds: 0,
        connectTimeoutSeconds: 10,
        statementTimeoutMs: 0,
        prepare: true,
        applicationName: 'dollarclub-bench-import',
      },
      pino({ level: 'warn' }),
    );
    let report: ImportReport;
    try {
      report = await importLegacy({
        legacyUrl,
        filesDir,
        sql,
        secrets: new SecretBox(randomBytes(32).toString('base64')),
        detailsFile: path.join(work, 'refused.csv'),
        progress: new TerminalProgress(process.stderr),
      });
    } finally {
      await sql.end({ timeout: 5 });
    }
    log(formatReport(report));
    log(`  phases (s): ${JSON.stringify(report.phases)}`);
    const importSeconds = report.seconds;
    const side = (label: string, seconds: number) => ({
      label,
      opsPerSec: rows / seconds,
      p50Ms: Number.NaN,
      p99Ms: Number.NaN,
      count: rows,
    });
    return [
      {
        group: 'import',
        operation:
          `import-legacy into an empty database (${options.users} users + ${options.scripts} scripts` +
          `${options.files ? ', one file each' : ', files left out'})`,
        baseline: side('bare COPY, no constraints', bareSeconds),
        ours: side('import-legacy', importSeconds),
        ratio: importSeconds / bareSeconds,
        ratioMeaning: 'time, import / bare COPY',
        target: `≥ ${IMPORT_TARGET.toLocaleString('en-US')} rows/s`,
        met: rows / importSeconds >= IMPORT_TARGET,
        notes: [
          `without the file step (${report.phases.files} s): ${Math.round(
            rows / (importSeconds - (report.phases.files ?? 0)),
          ).toLocaleString(
            'en-US',
          )} rows/s, ${((importSeconds - (report.phases.files ?? 0)) / bareSeconds).toFixed(2)}x the bare COPY`,
          `phases (s): ${Object.entries(report.phases)
            .map(([k, v]) => `${k} ${v}`)
            .join(
              ', ',
            )}; ${report.runs} runs made; ${report.users.refused + report.scripts.refused} rows refused`,
          ...(options.files
            ? [`writing the ${options.scripts} source files took ${filesSeconds.toFixed(1)} s (not counted)`]
            : []),
        ],
      },
    ];
  } finally {
    for (const db of [LEGACY_DB, TARGET_DB])
      await admin`drop database if exists ${admin(db)} with (force)`.catch(() => {});
    await admin.end();
    await rm(work, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const scale = Number(process.env.BENCH_SCALE ?? 1);
  let serverUrl = process.env.DATABASE_URL;
  let stop = async () => {};
  if (!serverUrl) {
    const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-bench-'));
    const { chmod } = await import('node:fs/promises');
    await chmod(dir, 0o755);
    const embedded = await startEmbeddedPostgres({ dir: path.join(dir, 'data'), persistent: false });
    serverUrl = embedded.url;
    stop = async () => {
      await embedded.stop();
      await rm(dir, { recursive: true, force: true });
    };
  }
  try {
    const results = await importBenchmark(serverUrl, {
      users: Math.round(100_000 * scale),
      scripts: Math.round(1_000_000 * scale),
      files: true,
      log: (line) => console.log(line),
    });
    for (const r of results) {
      console.log(
        `${r.operation}: ${Math.round(r.ours.opsPerSec).toLocaleString('en-US')} rows/s; ` +
          `bare COPY ${Math.round(r.baseline!.opsPerSec).toLocaleString('en-US')} rows/s; ` +
          `ratio ${r.ratio!.toFixed(2)}x; target ${r.target}: ${r.met ? 'MET' : 'MISSED'}`,
      );
      for (const n of r.notes ?? []) console.log(`  ${n}`);
    }
  } finally {
    await stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
