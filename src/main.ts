/**
 * `npm start`: the composition root. Config → database (DATABASE_URL or an
 * embedded PostgreSQL in ./.data) → migrations → API → listen → script executor
 * (unless EXECUTOR_ENABLED=false). SIGTERM/SIGINT finish in-flight requests,
 * stop the executor (recording its runs), close the pool and the embedded
 * database, and exit 0.
 */
import closeWithGrace from 'close-with-grace';
import { loadConfigOrExit, openDatabase, run } from './boot.ts';
import { shutdownDeadlineMs, trustProxyOf } from './config.ts';
import { Executor } from './executor/executor.ts';
import { startMetricsServer } from './executor/metrics-server.ts';
import { build } from './http/app.ts';
import { createLogger } from './logger.ts';
import { startMaintenance } from './maintenance.ts';
import { Scheduler } from './scheduler/scheduler.ts';
import { listenForAuthChanges } from './services/auth-listener.ts';
import { moveContentsAtStartup } from './storage/move-contents.ts';

async function main(): Promise<undefined> {
  const config = loadConfigOrExit();
  const log = createLogger(config.LOG_LEVEL);
  const opened = await openDatabase(config, log, 'api');
  const { sql, metrics, secrets, repos } = opened;
  // Scripts uploaded before script_contents: their files, if this machine has them.
  await moveContentsAtStartup(opened.db, config.STORAGE_DIR, log);
  const authListener = await listenForAuthChanges(sql, opened.cache, log);
  const app = await build({
    ctx: opened.ctx,
    logger: log,
    activity: opened.activity,
    trustProxy: trustProxyOf(config.TRUST_PROXY),
  });
  const maintenance = startMaintenance(repos, config.RUN_RETENTION_DAYS, log);
  const executor = config.EXECUTOR_ENABLED
    ? new Executor({ config, repos, sql, storage: opened.storage, log, metrics, secrets })
    : undefined;
  // Every executor process fires due schedules too (each occurrence once, however many run).
  const scheduler = config.EXECUTOR_ENABLED
    ? new Scheduler({
        repos,
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
          repos,
          log,
          token: config.METRICS_TOKEN,
          pool: true,
        })
      : undefined;

  let shuttingDown = false;
  closeWithGrace({ delay: shutdownDeadlineMs(config) }, async ({ signal, err }) => {
    shuttingDown = true;
    if (err) log.error({ err }, 'shutting down after an error');
    else log.info({ signal }, 'shutting down');
    maintenance.stop();
    // Stop accepting and finish in-flight requests; stop claiming, and let running
    // scripts finish within the grace period (then they are killed and recorded).
    await Promise.all([app.close(), scheduler?.stop(), executor?.stop()]);
    await metricsServer?.close();
    await authListener.unlisten().catch(() => {});
    await opened.close();
    log.info('stopped');
  });

  await app.listen({ host: config.HOST, port: config.PORT });
  try {
    await executor?.start();
    if (!shuttingDown) await scheduler?.start();
  } catch (error) {
    // A SIGTERM while they started closed the pool under them: the shutdown is the story.
    if (!shuttingDown) throw error;
  }
  return undefined;
}

run(main);
