/**
 * Migrations: node-pg-migrate over the SQL files in migrations/. The runner takes
 * an advisory lock, so several processes starting at once apply each migration
 * exactly once; `checkOrder` refuses a history that does not match the files.
 */
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import type { Sql, TransactionSql } from './client.ts';

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations', import.meta.url));
export const MIGRATIONS_TABLE = 'pgmigrations';

export interface MigrateOptions {
  databaseUrl: string;
  direction?: 'up' | 'down';
  /** How many to apply (up) or revert (down); all pending for up, one for down by default. */
  count?: number;
  log?: (message: string) => void;
}

/** Applies (or reverts) migrations; returns the names it ran. */
export async function migrate(options: MigrateOptions): Promise<string[]> {
  const direction = options.direction ?? 'up';
  const ran = await runner({
    databaseUrl: options.databaseUrl,
    dir: MIGRATIONS_DIR,
    migrationsTable: MIGRATIONS_TABLE,
    direction,
    count: options.count ?? (direction === 'up' ? Number.POSITIVE_INFINITY : 1),
    checkOrder: true,
    // Several processes starting at once (API processes, workers) wait for the one that
    // migrates, then find nothing to do; the default ('fail') stops all but one at boot.
    advisoryLockMode: 'wait',
    // Each migration in its own transaction; a migration that cannot run in one
    // (CREATE INDEX CONCURRENTLY) says so with `-- Up Migration` + a `notransaction` hint.
    singleTransaction: false,
    log: options.log ?? (() => {}),
    verbose: false,
  });
  return ran.map((m) => m.name);
}

/**
 * The migration names on disk, in order (file names without extension). Migrations are
 * SQL, except the few that must commit in steps (batched data moves), which are
 * TypeScript with `noTransaction()`.
 */
export async function migrationNames(): Promise<string[]> {
  const files = await readdir(MIGRATIONS_DIR);
  return files
    .filter((f) => /\.(sql|ts)$/.test(f) && !f.endsWith('.d.ts'))
    .map((f) => f.replace(/\.(sql|ts)$/, ''))
    .sort();
}

/** The names of the migrations applied on this database, in order (none before the first). */
export async function appliedMigrations(sql: Sql | TransactionSql): Promise<string[]> {
  const [table] = await sql<{ t: string | null }[]>`select to_regclass(${MIGRATIONS_TABLE})::text as t`;
  if (!table?.t) return [];
  const rows = await sql<{ name: string }[]>`select name from ${sql(MIGRATIONS_TABLE)} order by id`;
  return rows.map((r) => r.name);
}
