/**
 * A fresh database per test file, cloned from the migrated template that
 * test/run.ts built. Dropped at teardown when the file passed; kept (and its
 * name printed) when it failed, for inspection.
 */
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import postgres from 'postgres';
import type { Test } from 'tap';
import { createPool, type PoolOptions, type Sql, type TransactionSql } from '../../src/db/client.ts';
import { Database, type DatabaseOptions } from '../../src/db/database.ts';
import { freePort } from '../../src/db/embedded.ts';
import { Repositories } from '../../src/repositories/index.ts';
import { databaseUrl } from './urls.ts';

export interface TestDatabase {
  name: string;
  url: string;
  sql: Sql;
  db: Database;
  repos: Repositories;
}

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with \`npm test\`, which sets it`);
  return value;
}

export const testLogger = () => pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

/**
 * A pool of the test's own through the app's createPool (ended at teardown): one
 * connection, no idle or lifetime limit, generous connect and statement timeouts for a
 * loaded machine; `options` changes any of them.
 */
export function testPool(
  t: Test,
  options: Pick<PoolOptions, 'url' | 'applicationName'> & Partial<PoolOptions>,
): Sql {
  const sql = createPool(
    {
      max: 1,
      idleTimeoutSeconds: 0,
      maxLifetimeSeconds: 0,
      connectTimeoutSeconds: 30,
      statementTimeoutMs: 30_000,
      prepare: true,
      ...options,
    },
    testLogger(),
  );
  t.teardown(() => sql.end({ timeout: 5 }));
  return sql;
}

/** A pool to a loopback port nothing listens on: every query fails as unavailable, at once. */
export async function deadPool(t: Test, applicationName: string): Promise<Sql> {
  const port = await freePort();
  return testPool(t, {
    url: `postgres://postgres@127.0.0.1:${port}/none`,
    applicationName,
    idleTimeoutSeconds: 1,
    connectTimeoutSeconds: 1,
    statementTimeoutMs: 1000,
  });
}

export function serverUrl(): string {
  return env('DATABASE_URL');
}

/** Creates an empty database (no schema), for tests that build their own. */
export async function emptyDatabase(t: Test, label: string): Promise<{ name: string; url: string }> {
  return createDatabase(t, label, null);
}

async function createDatabase(t: Test, label: string, template: string | null) {
  const server = serverUrl();
  const slug = label
    .replace(/[^a-z0-9]+/gi, '_')
    .toLowerCase()
    .slice(0, 30);
  const name = `${env('TEST_RUN_PREFIX')}_${slug}_${randomBytes(3).toString('hex')}`;
  const admin = postgres(server, { max: 1, onnotice: () => {} });
  try {
    if (template === null) await admin`create database ${admin(name)}`;
    else await admin`create database ${admin(name)} template ${admin(template)}`;
  } finally {
    await admin.end();
  }
  t.teardown(async () => {
    if (!t.passing()) {
      t.comment(`kept database ${name} for inspection`);
      return;
    }
    const drop = postgres(server, { max: 1, onnotice: () => {} });
    try {
      await drop`drop database if exists ${drop(name)} with (force)`;
    } finally {
      await drop.end();
    }
  });
  return { name, url: databaseUrl(server, name) };
}

/** A migrated database of this test file's own, with a pool and repositories over it. */
export async function testDatabase(
  t: Test,
  options: Partial<DatabaseOptions> & { poolMax?: number } = {},
): Promise<TestDatabase> {
  const { name, url } = await createDatabase(t, t.name || 'test', env('TEST_TEMPLATE_DATABASE'));
  const log = options.log ?? testLogger();
  const sql = createPool(
    {
      url,
      max: options.poolMax ?? 10,
      idleTimeoutSeconds: 10,
      maxLifetimeSeconds: 0,
      connectTimeoutSeconds: 5,
      statementTimeoutMs: 30_000,
      prepare: true,
      applicationName: `dollarclub-test-${process.pid}`,
    },
    log,
  );
  // Registered after createDatabase's teardown, so it runs first (tap runs teardowns in reverse).
  t.teardown(() => sql.end({ timeout: 5 }));
  const db = new Database(sql, {
    log,
    slowQueryMs: options.slowQueryMs ?? 10_000,
    queryTimeoutMs: options.queryTimeoutMs ?? 30_000,
    onQuery: options.onQuery,
  });
  return { name, url, sql, db, repos: new Repositories(db) };
}

/** Runs `f` in a transaction that is rolled back afterwards; answers what `f` answered. */
export async function rolledBack<T>(db: TestDatabase, f: (tx: TransactionSql) => Promise<T>): Promise<T> {
  let out: T | undefined;
  await db.sql
    .begin(async (tx) => {
      out = await f(tx);
      throw new Error('rollback');
    })
    .catch((e: Error) => {
      if (e.message !== 'rollback') throw e;
    });
  return out as T;
}
