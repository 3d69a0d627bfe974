/**
 * Liveness (`/health`, no database call, never refused for load) and readiness
 * (`/health/database`: one round trip, answered 503 within READINESS_TIMEOUT_MS when
 * the database is down or frozen, or while the server sheds load).
 */
import { performance } from 'node:perf_hooks';
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { RouteOptions } from '../context.js';
import { answerUnderPressure } from '../pressure.js';

export const READINESS_TIMEOUT_MS = 2000;

const Ready = Type.Object(
  {
    status: Type.Literal('ok'),
    latency_ms: Type.Number(),
    server_version: Type.String(),
    pool: Type.Object({
      size: Type.Integer(),
      idle: Type.Integer(),
      waiting: Type.Integer(),
      max: Type.Integer(),
    }),
    migrations: Type.Object({ current: Type.Union([Type.String(), Type.Null()]), pending: Type.Integer() }),
  },
  { additionalProperties: false },
);

export const healthRoutes: FastifyPluginAsyncTypebox<
  RouteOptions & { activity?: { inFlight: number } }
> = async (app, { ctx, activity }) => {
  app.get(
    '/health',
    {
      schema: {
        tags: ['health'],
        summary: 'Liveness: the process answers (no database call)',
        response: { 200: Type.Object({ status: Type.Literal('ok') }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/health/database',
    {
      config: {
        // Under load it is shed like the API (an overloaded instance is not ready for more
        // traffic; liveness, /health, is never shed), but answered in this route's own form.
        pressureHandler: answerUnderPressure((request, reply, type) => {
          request.log.warn({ type }, 'under pressure: not ready');
          reply.code(503).header('retry-after', '5');
          return { status: 'unavailable', detail: 'the server is overloaded' };
        }),
      },
      schema: {
        tags: ['health'],
        summary: 'Readiness: the database answers, and the schema is migrated',
        response: {
          200: Ready,
          503: Type.Object({ status: Type.Literal('unavailable'), detail: Type.String() }),
        },
      },
    },
    async (request, reply) => {
      const start = performance.now();
      let timer: NodeJS.Timeout | undefined;
      try {
        const status = await Promise.race([
          ctx.repos.system.status(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('no answer in time')), READINESS_TIMEOUT_MS);
          }),
        ]);
        const latency_ms = Math.round((performance.now() - start) * 100) / 100;
        const applied = new Set(status.applied_migrations);
        const max = ctx.config.DB_POOL_MAX;
        return {
          status: 'ok' as const,
          latency_ms,
          server_version: status.server_version,
          pool: {
            size: status.connections,
            idle: status.idle_connections,
            // Our own query is in flight too; anything beyond the pool size waits for a connection.
            waiting: Math.max(0, (activity?.inFlight ?? 0) - max),
            max,
          },
          migrations: {
            current: status.applied_migrations.at(-1) ?? null,
            pending: ctx.migrations.filter((m) => !applied.has(m)).length,
          },
        };
      } catch (err) {
        request.log.warn({ err }, 'readiness check failed');
        return reply
          .code(503)
          .header('retry-after', '5')
          .send({ status: 'unavailable', detail: 'the database does not answer' });
      } finally {
        clearTimeout(timer);
      }
    },
  );
};
