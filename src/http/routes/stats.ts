/** Statistics for admins; each answer is one database round trip. */
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { RouteOptions } from '../context.ts';
import { Nullable, NullableDateTime, PageQuery, problems } from '../schemas/common.ts';
import { ScriptStatus } from '../schemas/script.ts';
import { AuthProvider } from '../schemas/user.ts';

const counts = (keys: readonly string[]) =>
  Type.Object(Object.fromEntries(keys.map((k) => [k, Type.Integer()])), { additionalProperties: false });

const ScriptStats = Type.Object(
  {
    total_scripts: Type.Integer(),
    running_scripts: Type.Integer(),
    by_status: counts(['uploaded', 'queued', 'running', 'completed', 'failed', 'cancelled']),
    total_size_mb: Type.Number(),
    avg_execution_time: Nullable(Type.Number()),
    uploads_last_7_days: Type.Integer(),
  },
  { $id: 'ScriptStats', additionalProperties: false },
);

const UserStats = Type.Object(
  {
    total: Type.Integer(),
    active: Type.Integer(),
    verified: Type.Integer(),
    ibkr_connected: Type.Integer(),
    by_provider: counts(['email', 'google']),
    registrations_last_30_days: Type.Integer(),
  },
  { $id: 'UserStats', additionalProperties: false },
);

export const STATS_SCHEMAS = [ScriptStats, UserStats];

export const statsRoutes: FastifyPluginAsyncTypebox<RouteOptions> = async (app, { ctx }) => {
  // onRequest, after `authenticate`: a user gets 403 before any input is validated.
  app.addHook('onRequest', app.requireAdmin);
  const stats = ctx.stats;
  const tags = ['stats'];

  app.get(
    '/stats/scripts',
    {
      schema: {
        tags,
        summary: 'Scripts: totals, by status, size, average run time, recent uploads',
        response: { 200: Type.Ref(ScriptStats), ...problems(401, 403, 503) },
      },
    },
    () => stats.scripts(),
  );

  app.get(
    '/stats/scripts/by-status',
    {
      schema: {
        tags,
        summary: 'Per status: count, average run time, total size in bytes',
        response: {
          200: Type.Array(
            Type.Object(
              {
                status: Type.Ref(ScriptStatus),
                count: Type.Integer(),
                avg_time: Nullable(Type.Number()),
                total_size: Type.Integer(),
              },
              { additionalProperties: false },
            ),
          ),
          ...problems(401, 403, 503),
        },
      },
    },
    () => stats.scriptsByStatus(),
  );

  app.get(
    '/stats/scripts/performance',
    {
      schema: {
        tags,
        summary: 'Run times of completed scripts',
        response: {
          200: Type.Object(
            {
              avg_time: Nullable(Type.Number()),
              max_time: Nullable(Type.Number()),
              min_time: Nullable(Type.Number()),
              total_scripts: Type.Integer(),
            },
            { additionalProperties: false },
          ),
          ...problems(401, 403, 503),
        },
      },
    },
    () => stats.performance(),
  );

  app.get(
    '/stats/users',
    {
      schema: {
        tags,
        summary: 'Users: totals, active, verified, IBKR-connected, by provider, recent registrations',
        response: { 200: Type.Ref(UserStats), ...problems(401, 403, 503) },
      },
    },
    () => stats.users(),
  );

  app.get(
    '/stats/users/by-provider',
    {
      schema: {
        tags,
        summary: 'Users per sign-in provider, with their mean registration time',
        response: {
          200: Type.Array(
            Type.Object(
              {
                auth_provider: Type.Ref(AuthProvider),
                user_count: Type.Integer(),
                avg_created_at: NullableDateTime(),
              },
              { additionalProperties: false },
            ),
          ),
          ...problems(401, 403, 503),
        },
      },
    },
    () => stats.usersByProvider(),
  );

  app.get(
    '/stats/users/top',
    {
      schema: {
        tags,
        summary: 'Users with the most scripts, most first',
        querystring: Type.Object(
          { limit: Type.Optional(Type.Integer({ format: 'int32', minimum: 1, maximum: 100, default: 10 })) },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Array(
            Type.Object(
              { user_id: Type.Integer(), username: Type.String(), script_count: Type.Integer() },
              { additionalProperties: false },
            ),
          ),
          ...problems(400, 401, 403, 503),
        },
      },
    },
    (request) => stats.topUsers(request.query.limit),
  );

  app.get(
    '/stats/users/script-counts',
    {
      schema: {
        tags,
        summary: 'Every user with its number of scripts (zero included), as an offset page',
        querystring: Type.Object(PageQuery, { additionalProperties: false }),
        response: {
          200: Type.Object(
            {
              users: Type.Array(
                Type.Object(
                  {
                    user_id: Type.Integer(),
                    username: Type.String(),
                    email: Type.String(),
                    script_count: Type.Integer(),
                  },
                  { additionalProperties: false },
                ),
              ),
              total: Type.Integer(),
              page: Type.Integer(),
              per_page: Type.Integer(),
              pages: Type.Integer(),
            },
            { additionalProperties: false },
          ),
          ...problems(400, 401, 403, 503),
        },
      },
    },
    async (request) => {
      const { items, ...page } = await stats.userScriptCounts(request.query);
      return { users: items, ...page };
    },
  );
};
