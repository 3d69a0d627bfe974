/**
 * `npm run worker`'s own little HTTP server (METRICS_PORT): GET /metrics, the
 * Prometheus text of the worker's registry (script runs by outcome, their
 * durations, database queries, the queue depth sampled at scrape time), and
 * GET /health, liveness. Nothing else: the worker serves no API.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.js';
import type { Repositories } from '../repositories/index.js';

export interface MetricsServerOptions {
  host: string;
  port: number;
  metrics: Metrics;
  repos: Repositories;
  log: Logger;
}

export async function startMetricsServer(options: MetricsServerOptions): Promise<FastifyInstance> {
  const { metrics, repos, log } = options;
  const app = Fastify({ logger: false });
  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/metrics', async (_request, reply) => {
    try {
      metrics.setQueueDepth(await repos.executions.queueDepth());
    } catch (err) {
      // Metrics must answer while the database is down: that is when they matter.
      log.warn({ err }, 'could not sample the queue for metrics');
    }
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  const address = await app.listen({ host: options.host, port: options.port });
  log.info({ address }, 'metrics listening');
  return app;
}
