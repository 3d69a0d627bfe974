/**
 * `npm run worker`: a script executor alone, for more capacity or other
 * machines. Needs the same database (DATABASE_URL; without it, the embedded
 * PostgreSQL that `npm start` runs in EMBEDDED_PG_DIR); script bytes come from
 * PostgreSQL too, so it needs no disk shared with the API.
 * With METRICS_PORT, it serves GET /metrics and GET /health on METRICS_HOST:METRICS_PORT.
 * SIGTERM stops claiming, lets running scripts finish within the grace period,
 * records every outcome, closes the metrics server and the pool, and exits 0.
 */

import closeWithGrace from 'close-with-grace';
import { loadConfigOrExit, openDatabase, run } from './boot.ts';
import { shutdownDeadlineMs } from './config.ts';
import { Executor } from './executor/executor.ts';
import { startMetricsServer } from './executor/metrics-server.ts';
import { createLogger } from './logger.ts';
import { Scheduler } from './scheduler/scheduler.ts';

async function main(): Promise<undefined> {
  const config = loadConfigOrExit();
  const log = createLogger(config.LOG_LEVEL, 'dollarclub-worker');
  const opened = await openDatabase(config, log, 'worker');
  const { sql, metrics, secrets, repos, storage } = opened;
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
  let shuttingDown = false;
  closeWithGrace({ delay: shutdownDeadlineMs(config) }, async ({ signal, err }) => {
    shuttingDown = true;
    if (err) log.error({ err }, 'shutting down after an error');
    else log.info({ signal }, 'shutting down');
    await Promise.all([scheduler.stop(), executor.stop()]);
    await metricsServer?.close();
    await opened.close();
    log.info('stopped');
  });
  try {
    await executor.start();
    if (!shuttingDown) await scheduler.start();
  } catch (error) {
    // A SIGTERM while they started closed the pool under them: the shutdown is the story.
    if (!shuttingDown) throw error;
  }
  return undefined;
}

run(main);
