/**
 * Prometheus: request durations by route pattern (never the raw URL, whose ids
 * would explode the label set). Database query durations and script runs are
 * recorded where they happen (Database, Executor).
 *
 * `GET /metrics` on the API port exists only with METRICS_TOKEN set, and answers only
 * a request that presents it: the figures (pool, queue, routes) are for the
 * monitoring system, not the public. Otherwise metrics are served by the metrics
 * listener on METRICS_PORT (src/executor/metrics-server.ts), or not at all.
 */
import fp from 'fastify-plugin';
import { presentsToken } from '../../services/metrics-scrape.ts';
import type { AppContext } from '../context.ts';
import { problem, sendProblem } from '../errors.ts';

export const metricsPlugin = fp<{ ctx: AppContext }>(
  async (app, { ctx }) => {
    const { metrics } = ctx;
    metrics.poolMax.set(ctx.config.DB_POOL_MAX);
    app.addHook('onResponse', (request, reply, done) => {
      metrics.observeRequest(
        request.method,
        request.routeOptions.url ?? 'unmatched',
        reply.statusCode,
        reply.elapsedTime / 1000,
      );
      done();
    });
    const token = ctx.config.METRICS_TOKEN;
    if (token === undefined) return;
    app.get(
      '/metrics',
      {
        schema: { hide: true },
        onRequest: (request, reply, done) => {
          if (presentsToken(request.headers.authorization, token)) return done();
          void sendProblem(
            reply.header('www-authenticate', 'Bearer'),
            problem(401, 'UNAUTHENTICATED', 'metrics need the metrics token', { request_id: request.id }),
          );
        },
      },
      async (request, reply) => {
        const text = await ctx.system.metricsText(request.log, { pool: true });
        return reply.type(metrics.registry.contentType).send(text);
      },
    );
  },
  { name: 'metrics' },
);
