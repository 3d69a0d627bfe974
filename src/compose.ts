/**
 * The object graph of a process, apart from where its configuration and its
 * pool come from: main.ts, worker.ts, cli.ts and the tests all build it here.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from './config.ts';
import type { Sql } from './db/client.ts';
import { Database } from './db/database.ts';
import { ReadRouter } from './db/read-router.ts';
import type { AppContext } from './http/context.ts';
import type { Metrics } from './metrics.ts';
import { Repositories } from './repositories/index.ts';
import { AuthCache } from './services/auth-cache.ts';
import { AuthService } from './services/auth-service.ts';
import { GoogleIdTokenVerifier } from './services/google-id-token.ts';
import { RunService } from './services/run-service.ts';
import { ScheduleService } from './services/schedule-service.ts';
import { ScriptService } from './services/script-service.ts';
import { SecretBox } from './services/secret-box.ts';
import { configuredKeys } from './services/secret-keys.ts';
import { StatsService } from './services/stats-service.ts';
import { SystemService } from './services/system-service.ts';
import { UserService } from './services/user-service.ts';
import { PgStorage } from './storage/pg-storage.ts';
import type { Storage } from './storage/storage.ts';

export interface ComposeOptions {
  config: Config;
  sql: Sql;
  /**
   * A read replica's pool (DATABASE_READ_URL): listings, history, search and statistics
   * read from it through `db.reader` (src/db/read-router.ts); the primary when absent.
   */
  readSql?: Sql;
  log: Logger;
  metrics: Metrics;
  /** Where script bytes live: PostgreSQL (script_contents, through the primary) unless given. */
  storage?: Storage;
  migrations: string[];
  /**
   * The IBKR token keyring (entry points load it with loadSecretBox). Without it, the
   * keys configured in `config`; with none configured, a random key that lives as long
   * as the process — only for tests (NODE_ENV=test), never a fixed one.
   */
  secrets?: SecretBox;
}

export interface Composition {
  ctx: AppContext;
  /** For the executor, the scheduler and maintenance (the routes get services only). */
  repos: Repositories;
  db: Database;
  cache: AuthCache;
  storage: Storage;
  /** Queries under way on the primary pool (readiness reports the waiting ones). */
  activity: { inFlight: number };
  /** Routes reads to the replica, when there is one (already probing; `stop()` it at shutdown). */
  router?: ReadRouter;
}

export function compose(options: ComposeOptions): Composition {
  const { config, log, metrics } = options;
  const activity = { inFlight: 0 };
  const dbOptions = {
    log,
    slowQueryMs: config.SLOW_QUERY_MS,
    queryTimeoutMs: config.DB_QUERY_TIMEOUT_MS,
    prePingIdleMs: config.DB_PREPING_IDLE_SECONDS * 1000,
    onQuery: metrics.observeQuery,
  };
  const reads: { router?: ReadRouter; reader(): Database } = {
    reader() {
      return this.router?.reader() ?? db;
    },
  };
  const db = new Database(options.sql, { ...dbOptions, activity, reads });
  if (options.readSql !== undefined) {
    const replica = new Database(options.readSql, {
      ...dbOptions,
      fallback: { db, failed: (error) => reads.router?.replicaFailed(error) },
    });
    reads.router = new ReadRouter({
      primary: db,
      replica,
      maxLagSeconds: config.REPLICA_MAX_LAG_SECONDS,
      log,
    });
    reads.router.start();
  }
  const repos = new Repositories(db);
  const storage = options.storage ?? new PgStorage(db);
  const cache = new AuthCache(config.AUTH_CACHE_TTL_SECONDS * 1000);
  const auth = new AuthService(repos, cache, config.TOKEN_TTL_HOURS * 3_600_000, {
    maxFailures: config.LOGIN_MAX_FAILURES,
    windowSeconds: config.LOGIN_FAILURE_WINDOW_SECONDS,
    lockSeconds: config.LOGIN_LOCK_SECONDS,
  });
  const secrets = options.secrets ?? secretBoxFromConfig(config);
  const ctx: AppContext = {
    config,
    auth,
    google:
      config.GOOGLE_CLIENT_ID === undefined
        ? null
        : new GoogleIdTokenVerifier({
            clientId: config.GOOGLE_CLIENT_ID,
            jwksUrl: config.GOOGLE_JWKS_URL,
            timeoutMs: config.GOOGLE_JWKS_TIMEOUT_MS,
            cooldownMs: config.GOOGLE_JWKS_COOLDOWN_SECONDS * 1000,
          }),
    users: new UserService(repos, auth, secrets),
    scripts: new ScriptService(
      repos,
      storage,
      {
        maxUploadBytes: config.MAX_UPLOAD_BYTES,
        maxScripts: config.MAX_SCRIPTS_PER_USER,
        maxStorageBytes: config.MAX_STORAGE_BYTES_PER_USER,
      },
      log,
    ),
    schedules: new ScheduleService(repos),
    runs: new RunService(repos, config.MAX_CONCURRENT_SCRIPTS),
    stats: new StatsService(repos),
    system: new SystemService(repos, metrics),
    rateLimits: repos.rateLimits,
    metrics,
    migrations: options.migrations,
    readRouter: reads.router,
  };
  return { ctx, repos, db, cache, storage, activity, router: reads.router };
}

function secretBoxFromConfig(config: Config): SecretBox {
  const keys = configuredKeys(config);
  if (keys.length > 0) return new SecretBox(keys);
  if (config.NODE_ENV === 'test') return new SecretBox(randomBytes(32).toString('base64'));
  throw new Error('no IBKR token key: the entry point must load one (loadSecretBox)');
}
