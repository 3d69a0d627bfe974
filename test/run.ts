/**
 * `npm test`: runs tap against DATABASE_URL when it is set, otherwise against a
 * throw-away embedded PostgreSQL started here and stopped at the end. Either
 * way it first builds one migrated template database; each test file clones its
 * own database from it (test/helpers/db.ts). Arguments go to tap unchanged:
 * `npm test -- test/db/database.test.ts`.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import {
  EmbeddedPostgresError,
  type EmbeddedPostgresHandle,
  startEmbeddedPostgres,
} from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { databaseUrl, TEST_DATABASE_PREFIX } from './helpers/urls.ts';

const STALE_AFTER_MS = 6 * 60 * 60 * 1000;

async function main(): Promise<number> {
  let url = process.env.DATABASE_URL;
  let embedded: EmbeddedPostgresHandle | undefined;
  let tmp: string | undefined;
  const cleanup = async () => {
    await embedded?.stop().catch(() => {});
    if (tmp) await rm(tmp, { recursive: true, force: true });
  };
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    child?.kill(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let child: ReturnType<typeof spawn> | undefined;
  try {
    if (!url) {
      tmp = await mkdtemp(path.join(tmpdir(), 'dollarclub-test-'));
      embedded = await startEmbeddedPostgres({ dir: path.join(tmp, 'data'), persistent: false, fast: true });
      url = embedded.url;
      console.log(`# embedded PostgreSQL on port ${embedded.port}`);
    } else {
      console.log(`# PostgreSQL from DATABASE_URL (${new URL(url).host})`);
    }
    const run = `${TEST_DATABASE_PREFIX}${Date.now()}_${randomBytes(3).toString('hex')}`;
    const template = `${run}_template`;
    const admin = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await dropStale(admin);
      await admin`create database ${admin(template)}`;
      await migrate({ databaseUrl: databaseUrl(url, template) });
    } finally {
      await admin.end();
    }
    const code = await new Promise<number>((resolve) => {
      child = spawn(path.resolve('node_modules/.bin/tap'), process.argv.slice(2), {
        stdio: 'inherit',
        env: { ...process.env, DATABASE_URL: url, TEST_TEMPLATE_DATABASE: template, TEST_RUN_PREFIX: run },
      });
      child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0)));
    });
    const after = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await dropDatabases(after, run, template);
    } finally {
      await after.end();
    }
    return code;
  } finally {
    await cleanup();
  }
}

/** Drops this run's template and the databases of files that passed (failed ones are kept). */
async function dropDatabases(sql: postgres.Sql, run: string, template: string): Promise<void> {
  await sql`drop database if exists ${sql(template)} with (force)`;
  const kept = await sql<{ datname: string }[]>`
    select datname from pg_database where datname like ${`${run}%`} order by datname
  `;
  for (const { datname } of kept) console.log(`# kept database of a failed test file: ${datname}`);
}

/** Databases of runs that died long ago (SIGKILL, power loss) are removed. */
async function dropStale(sql: postgres.Sql): Promise<void> {
  const rows = await sql<{ datname: string }[]>`
    select datname from pg_database where datname like ${`${TEST_DATABASE_PREFIX}%`}
  `;
  for (const { datname } of rows) {
    const started = Number(datname.slice(TEST_DATABASE_PREFIX.length).split('_')[0]);
    if (Number.isFinite(started) && Date.now() - started > STALE_AFTER_MS)
      await sql`drop database if exists ${sql(datname)} with (force)`;
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error instanceof EmbeddedPostgresError ? error.message : error);
    process.exit(1);
  },
);
