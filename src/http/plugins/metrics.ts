/**
 * Prometheus: request durations by route pattern (never the raw URL, whose ids
 * would explode the label set), and `GET /metrics`, which also samples the pool
 * and the run queue at scrape time. Database query durations and script runs
 * are recorded where they happen (Database, Executor).
 */
import fp from 'fastify-plugin';
import type { AppContext } from '../context.js';

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
    app.get('/metrics', { schema: { hide: true } }, async (request, reply) => {
      try {
        const [status, depth] = await Promise.all([
          ctx.repos.system.status(),
          ctx.repos.executions.queueDepth(),
        ]);
        metrics.poolConnections.set({ state: 'total' }, status.connections);
        metrics.poolConnections.set({ state: 'idle' }, status.idle_connections);
        metrics.setQueueDepth(depth);
      } catch (err) {
        // Metrics must answer while the database is down: that is when they matter.
        request.log.warn({ err }, 'could not sample the pool for metrics');
      }
      return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
    });
  },
  { name: 'metrics' },
);
