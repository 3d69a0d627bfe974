/**
 * The metrics listener (METRICS_PORT, on METRICS_HOST, 127.0.0.1 by default), of
 * `npm run worker` and of `npm start`: GET /metrics, the Prometheus text of the
 * process's registry, and GET /health, liveness. Nothing else. With METRICS_TOKEN
 * set, /metrics wants it here too (`Authorization: Bearer <token>`).
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.ts';
import type { Repositories } from '../repositories/index.ts';
import { presentsToken, scrape } from '../services/metrics-scrape.ts';

export interface MetricsServerOptions {
  host: string;
  port: number;
  metrics: Metrics;
  repos: Repositories;
  log: Logger;
  /** METRICS_TOKEN: required on /metrics when set. */
  token?: string;
  /** Sample the database pool too (an API process). */
  pool?: boolean;
}

export async function startMetricsServer(options: MetricsServerOptions): Promise<FastifyInstance> {
  const { metrics, repos, log } = options;
  const app = Fastify({ logger: false, forceCloseConnections: true });
  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/metrics', async (request, reply) => {
    if (options.token !== undefined && !presentsToken(request.headers.authorization, options.token))
      return reply.code(401).header('www-authenticate', 'Bearer').send({ status: 401 });
    const text = await scrape(metrics, repos, log, { pool: options.pool === true });
    return reply.type(metrics.registry.contentType).send(text);
  });
  const address = await app.listen({ host: options.host, port: options.port });
  log.info({ address }, 'metrics listening');
  return app;
}
