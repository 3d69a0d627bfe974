/**
 * Liveness (`/health`, no database call, never refused for load) and readiness
 * (`/health/database`: one round trip, answered 503 within READINESS_TIMEOUT_MS when
 * the database is down or frozen, or while the server sheds load). Readiness says
 * only `ok` or `unavailable` to the public; the detail (server version, migration
 * names, pool figures, the read replica's lag) only to a caller presenting METRICS_TOKEN.
 */
import { performance } from 'node:perf_hooks';
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import { presentsToken } from '../../services/metrics-scrape.ts';
import type { ReadRouting, ReplicaStatus, RouteOptions } from '../context.ts';
import { answerUnderPressure } from '../pressure.ts';

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
    replica: Type.Optional(
      Type.Object(
        {
          state: Type.Union([
            Type.Literal('ok'),
            Type.Literal('lagging'),
            Type.Literal('down'),
            Type.Literal('unknown'),
          ]),
          lag_seconds: Type.Union([Type.Number(), Type.Null()]),
          max_lag_seconds: Type.Integer(),
        },
        {
          additionalProperties: false,
          description:
            'the read replica (DATABASE_READ_URL), when configured: `lagging` (more than ' +
            'max_lag_seconds behind) and `down` are bypassed, reads go to the primary; not a reason to be unready',
        },
      ),
    ),
  },
  { additionalProperties: false, title: 'readiness with detail (METRICS_TOKEN)' },
);

const ReadyPublic = Type.Object(
  { status: Type.Literal('ok') },
  { additionalProperties: false, title: 'readiness' },
);

const Unavailable = Type.Object(
  { status: Type.Literal('unavailable'), detail: Type.Optional(Type.String()) },
  { additionalProperties: false },
);

/** A probe of the replica, or the last known figures when it takes more than half the time limit. */
function replicaStatus(router: ReadRouting): Promise<ReplicaStatus> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    router.probe(),
    new Promise<ReplicaStatus>((resolve) => {
      timer = setTimeout(() => resolve(router.status()), READINESS_TIMEOUT_MS / 2);
    }),
  ]).finally(() => clearTimeout(timer));
}

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
          return presentsToken(request.headers.authorization, ctx.config.METRICS_TOKEN)
            ? { status: 'unavailable', detail: 'the server is overloaded' }
            : { status: 'unavailable' };
        }),
      },
      schema: {
        tags: ['health'],
        summary: 'Readiness: the database answers, and the schema is migrated',
        description:
          'Answers `{status}` only; a request with `Authorization: Bearer <METRICS_TOKEN>` gets the ' +
          'detail: latency, server version, pool, migrations, the read replica and its lag (and why it is unavailable).',
        response: {
          200: Type.Union([Ready, ReadyPublic]),
          503: Unavailable,
        },
      },
    },
    async (request, reply) => {
      const detailed = presentsToken(request.headers.authorization, ctx.config.METRICS_TOKEN);
      const start = performance.now();
      let timer: NodeJS.Timeout | undefined;
      // The replica's figures, fresh when it answers in time; it never makes readiness fail.
      const replica = ctx.readRouter === undefined ? undefined : replicaStatus(ctx.readRouter);
      try {
        const status = await Promise.race([
          ctx.system.databaseStatus(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('no answer in time')), READINESS_TIMEOUT_MS);
          }),
        ]);
        if (!detailed) return { status: 'ok' as const };
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
          ...(replica === undefined ? {} : { replica: await replica }),
        };
      } catch (err) {
        request.log.warn({ err }, 'readiness check failed');
        return reply
          .code(503)
          .header('retry-after', '5')
          .send(
            detailed
              ? { status: 'unavailable', detail: 'the database does not answer' }
              : { status: 'unavailable' },
          );
      } finally {
        clearTimeout(timer);
      }
    },
  );
};
