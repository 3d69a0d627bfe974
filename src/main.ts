/**
 * `npm start`: the composition root. Config → database (DATABASE_URL or an
 * embedded PostgreSQL in ./.data) → migrations → API → listen → script executor
 * (unless EXECUTOR_ENABLED=false). SIGTERM/SIGINT finish in-flight requests,
 * stop the executor (recording its runs), close the pool and the embedded
 * database, and exit 0.
 */
import { hostname } from 'node:os';
import closeWithGrace from 'close-with-grace';
import { compose } from './compose.js';
import { ConfigError, loadConfig, shutdownDeadlineMs, trustProxyOf } from './config.js';
import { createPool, poolOptionsFrom } from './db/client.js';
import { locateDatabase } from './db/connect.js';
import { EmbeddedPostgresError } from './db/embedded.js';
import { migrate, migrationNames } from './db/migrate.js';
import { Executor } from './executor/executor.js';
import { startMetricsServer } from './executor/metrics-server.js';
import { build } from './http/app.js';
import { createLogger } from './logger.js';
import { startMaintenance } from './maintenance.js';
import { Metrics } from './metrics.js';
import { Scheduler } from './scheduler/scheduler.js';
import { listenForAuthChanges } from './services/auth-listener.js';
import { loadSecretBox } from './services/secret-keys.js';
import { moveContentsAtStartup } from './storage/move-contents.js';

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
  const log = createLogger(config.LOG_LEVEL);
  const location = await locateDatabase(config, log);
  const ran = await migrate({ databaseUrl: location.url, log: (message) => log.debug({ migrate: message }) });
  log.info({ applied: ran }, ran.length > 0 ? 'migrations applied' : 'schema is up to date');

  const processName = `dollarclub-api:${hostname()}:${process.pid}`;
  const sql = createPool(poolOptionsFrom(config, location.url, processName), log);
  const readSql = config.DATABASE_READ_URL
    ? createPool(poolOptionsFrom(config, config.DATABASE_READ_URL, `${processName}:read`), log)
    : undefined;
  const metrics = new Metrics();
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
  // Scripts uploaded before script_contents: their files, if this machine has them.
  await moveContentsAtStartup(composition.db, config.STORAGE_DIR, log);
  const authListener = await listenForAuthChanges(sql, composition.cache, log);
  const app = await build({
    ctx: composition.ctx,
    logger: log,
    activity: composition.activity,
    trustProxy: trustProxyOf(config.TRUST_PROXY),
  });
  const maintenance = startMaintenance(composition.repos, config.RUN_RETENTION_DAYS, log);
  const executor = config.EXECUTOR_ENABLED
    ? new Executor({
        config,
        repos: composition.repos,
        sql,
        storage: composition.storage,
        log,
        metrics,
        secrets,
      })
    : undefined;
  // Every executor process fires due schedules too (each occurrence once, however many run).
  const scheduler = config.EXECUTOR_ENABLED
    ? new Scheduler({
        repos: composition.repos,
        sql,
        log,
        catchupSeconds: config.SCHEDULE_CATCHUP_SECONDS,
        maxConcurrentScripts: config.MAX_CONCURRENT_SCRIPTS,
      })
    : undefined;

  const metricsServer =
    config.METRICS_PORT > 0
      ? await startMetricsServer({
          host: config.METRICS_HOST,
          port: config.METRICS_PORT,
          metrics,
          repos: composition.repos,
          log,
          token: config.METRICS_TOKEN,
          pool: true,
        })
      : undefined;

  closeWithGrace({ delay: shutdownDeadlineMs(config) }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'shutting down after an error');
    else log.info({ signal }, 'shutting down');
    maintenance.stop();
    // Stop accepting and finish in-flight requests; stop claiming, and let running
    // scripts finish within the grace period (then they are killed and recorded).
    await Promise.all([app.close(), scheduler?.stop(), executor?.stop()]);
    await metricsServer?.close();
    await authListener.unlisten().catch(() => {});
    await Promise.all([sql.end({ timeout: 5 }), readSql?.end({ timeout: 5 })]);
    await location.embedded?.stop();
    log.info('stopped');
  });

  await app.listen({ host: config.HOST, port: config.PORT });
  await executor?.start();
  await scheduler?.start();
}

main().catch((error) => {
  // A known cause in one sentence (the embedded PostgreSQL cannot run here); a bug with its stack.
  console.error(error instanceof EmbeddedPostgresError ? error.message : error);
  process.exit(1);
});
