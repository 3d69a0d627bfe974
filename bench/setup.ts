/**
 * Where the benchmark runs: the server of DATABASE_URL, or a throw-away embedded
 * PostgreSQL in a temporary folder. Either way a fresh, migrated database
 * `dollarclub_bench` (dropped first if it exists).
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';

/** BENCH_DATABASE picks another name, so that two runs on one server do not drop each other's. */
export const BENCH_DATABASE = process.env.BENCH_DATABASE || 'dollarclub_bench';

export interface BenchDatabase {
  /** URL of dollarclub_bench. */
  url: string;
  /** "DATABASE_URL" or "embedded PostgreSQL". */
  where: string;
  serverVersion: string;
  /** Drops the database (unless kept) and stops the embedded server. */
  close(options: { keep: boolean }): Promise<void>;
}

export async function prepareDatabase(log: (line: string) => void): Promise<BenchDatabase> {
  let serverUrl = process.env.DATABASE_URL;
  let stopEmbedded = async () => {};
  let where = 'DATABASE_URL';
  if (serverUrl === undefined || serverUrl === '') {
    const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-bench-'));
    // The server runs as the `postgres` OS user when we are root: it must reach its folder.
    await chmod(dir, 0o755);
    log(`no DATABASE_URL: starting an embedded PostgreSQL in ${dir}`);
    const embedded = await startEmbeddedPostgres({ dir: path.join(dir, 'data'), persistent: false });
    serverUrl = embedded.url;
    where = 'embedded PostgreSQL';
    stopEmbedded = async () => {
      await embedded.stop();
      await rm(dir, { recursive: true, force: true });
    };
  }
  const url = withDatabase(serverUrl, BENCH_DATABASE);
  let serverVersion = '';
  try {
    const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
    try {
      await admin`drop database if exists ${admin(BENCH_DATABASE)} with (force)`;
      await admin`create database ${admin(BENCH_DATABASE)}`;
      const [row] = await admin<{ v: string }[]>`select current_setting('server_version') as v`;
      serverVersion = row?.v ?? '';
    } finally {
      await admin.end();
    }
    const ran = await migrate({ databaseUrl: url });
    log(
      `database ${BENCH_DATABASE} created on ${where} (PostgreSQL ${serverVersion}), ${ran.length} migrations`,
    );
  } catch (error) {
    await stopEmbedded();
    throw error;
  }
  return {
    url,
    where,
    serverVersion,
    async close({ keep }) {
      try {
        if (!keep) {
          const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
          try {
            await admin`drop database if exists ${admin(BENCH_DATABASE)} with (force)`;
          } finally {
            await admin.end();
          }
        }
      } finally {
        await stopEmbedded();
      }
    },
  };
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}
