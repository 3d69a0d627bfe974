/**
 * `npm run worker`: a script executor alone, for more capacity or other
 * machines. Needs the same database (DATABASE_URL; without it, the embedded
 * PostgreSQL that `npm start` runs in EMBEDDED_PG_DIR); script bytes come from
 * PostgreSQL too, so it needs no disk shared with the API.
 * With METRICS_PORT, it serves GET /metrics and GET /health on METRICS_HOST:METRICS_PORT.
 * SIGTERM stops claiming, lets running scripts finish within the grace period,
 * records every outcome, closes the metrics server and the pool, and exits 0.
 */

import { hostname } from 'node:os';
import closeWithGrace from 'close-with-grace';
import { ConfigError, loadConfig, shutdownDeadlineMs } from './config.js';
import { createPool, poolOptionsFrom } from './db/client.js';
import { locateDatabase } from './db/connect.js';
import { Database } from './db/database.js';
import { EmbeddedPostgresError } from './db/embedded.js';
import { migrate } from './db/migrate.js';
import { Executor } from './executor/executor.js';
import { startMetricsServer } from './executor/metrics-server.js';
import { createLogger } from './logger.js';
import { Metrics } from './metrics.js';
import { Repositories } from './repositories/index.js';
import { Scheduler } from './scheduler/scheduler.js';
import { loadSecretBox } from './services/secret-keys.js';
import { PgStorage } from './storage/pg-storage.js';

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      process.exit(1);
    }
    throw error;
  }
  const log = createLogger(config.LOG_LEVEL, 'dollarclub-worker');
  const location = await locateDatabase(config, log, { reuseRunning: true });
  await migrate({ databaseUrl: location.url });
  const sql = createPool(
    poolOptionsFrom(config, location.url, `dollarclub-worker:${hostname()}:${process.pid}`),
    log,
  );
  const metrics = new Metrics();
  const db = new Database(sql, {
    log,
    slowQueryMs: config.SLOW_QUERY_MS,
    queryTimeoutMs: config.DB_QUERY_TIMEOUT_MS,
    prePingIdleMs: config.DB_PREPING_IDLE_SECONDS * 1000,
    onQuery: metrics.observeQuery,
  });
  metrics.poolMax.set(config.DB_POOL_MAX);
  const storage = new PgStorage(db);
  const repos = new Repositories(db);
  const secrets = await loadSecretBox(config, log);
  const executor = new Executor({ config, repos, sql, storage, log, metrics, secrets });
  const scheduler = new Scheduler({
    repos,
    sql,
    log,
    catchupSeconds: config.SCHEDULE_CATCHUP_SECONDS,
    maxConcurrentScripts: config.MAX_CONCURRENT_SCRIPTS,
  });
  const metricsServer =
    config.METRICS_PORT > 0
      ? await startMetricsServer({
          host: config.METRICS_HOST,
          port: config.METRICS_PORT,
          metrics,
          repos,
          log,
          token: config.METRICS_TOKEN,
        })
      : undefined;
  closeWithGrace({ delay: shutdownDeadlineMs(config) }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'shutting down after an error');
    else log.info({ signal }, 'shutting down');
    await Promise.all([scheduler.stop(), executor.stop()]);
    await metricsServer?.close();
    await sql.end({ timeout: 5 });
    await location.embedded?.stop();
    log.info('stopped');
  });
  await executor.start();
  await scheduler.start();
}

main().catch((error) => {
  // A known cause in one sentence (the embedded PostgreSQL cannot run here); a bug with its stack.
  console.error(error instanceof EmbeddedPostgresError ? error.message : error);
  process.exit(1);
});
