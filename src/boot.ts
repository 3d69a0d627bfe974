/**
 * How every process starts — `npm start` (role `api`), `npm run worker`, `npm run cli`
 * and `npm run migrate` — in one place: the configuration (a bad one is one sentence
 * and exit 1), where the database is (DATABASE_URL, or the embedded PostgreSQL), its
 * migrations, one pool named after the process, and the object graph (compose.ts).
 * Each entry point then adds only what it alone does (listen, execute, a command).
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { type Composition, compose } from './compose.ts';
import { type Config, ConfigError, loadConfig } from './config.ts';
import { createPool, poolOptionsFrom, type Sql } from './db/client.ts';
import { type DatabaseLocation, locateDatabase } from './db/connect.ts';
import { EmbeddedPostgresError } from './db/embedded.ts';
import { migrate, migrationNames } from './db/migrate.ts';
import { Metrics } from './metrics.ts';
import type { SecretBox } from './services/secret-box.ts';
import { loadSecretBox } from './services/secret-keys.ts';

export type Role = 'api' | 'worker' | 'cli' | 'migrate';

/** The configuration from the environment; a bad one is printed as its one-sentence reason, and the process exits 1. */
export function loadConfigOrExit(env: NodeJS.ProcessEnv = process.env): Config {
  try {
    return loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      process.exit(1);
    }
    throw error;
  }
}

/**
 * Where the database is. The API starts (or reuses its own) embedded PostgreSQL; the
 * other roles attach to the one `npm start` runs when there is one.
 */
export function locate(config: Config, log: Logger, role: Role): Promise<DatabaseLocation> {
  return locateDatabase(config, log, { reuseRunning: role !== 'api' });
}

/** A pool on `url` named `dollarclub-<role>:<host>:<pid>` (`suffix` for a second one), as pg_stat_activity shows it. */
export function openPool(config: Config, log: Logger, url: string, role: Role, suffix = ''): Sql {
  return createPool(
    poolOptionsFrom(config, url, `dollarclub-${role}:${hostname()}:${process.pid}${suffix}`),
    log,
  );
}

export interface Opened extends Composition {
  location: DatabaseLocation;
  sql: Sql;
  /** The read replica's pool (DATABASE_READ_URL), for the API only. */
  readSql?: Sql;
  metrics: Metrics;
  secrets: SecretBox;
  /** Closes the pools and stops the embedded PostgreSQL this process started. */
  close(): Promise<void>;
}

/** Database, migrations, pool(s) and the object graph, for the API, a worker or a CLI command. */
export async function openDatabase(
  config: Config,
  log: Logger,
  role: Exclude<Role, 'migrate'>,
): Promise<Opened> {
  const location = await locate(config, log, role);
  const applied = await migrate({
    databaseUrl: location.url,
    log: (message) => log.debug({ migrate: message }),
  });
  log.info({ applied }, applied.length > 0 ? 'migrations applied' : 'schema is up to date');
  const sql = openPool(config, log, location.url, role);
  const readSql =
    role === 'api' && config.DATABASE_READ_URL !== undefined
      ? openPool(config, log, config.DATABASE_READ_URL, role, ':read')
      : undefined;
  const metrics = new Metrics({ defaultMetrics: role !== 'cli' });
  metrics.poolMax.set(config.DB_POOL_MAX);
  const secrets = await loadSecretBox(config, log);
  const composition = compose({
    config,
    sql,
    readSql,
    log,
    metrics,
    migrations: await migrationNames(),
    secrets,
  });
  return {
    ...composition,
    location,
    sql,
    readSql,
    metrics,
    secrets,
    close: async () => {
      composition.router?.stop();
      await Promise.all([sql.end({ timeout: 5 }), readSql?.end({ timeout: 5 })]);
      await location.embedded?.stop();
    },
  };
}

/** Runs an entry point's `main`; a known cause of failure is one sentence, a bug keeps its stack. */
export function run(
  main: () => Promise<number | undefined>,
  oneSentence: (error: unknown) => boolean = () => false,
): void {
  main().then(
    (code) => {
      if (code !== undefined) process.exit(code);
    },
    (error: unknown) => {
      const known =
        error instanceof EmbeddedPostgresError || error instanceof ConfigError || oneSentence(error);
      console.error(known && error instanceof Error ? error.message : error);
      process.exit(1);
    },
  );
}
