/**
 * Runs: the history of executions, one run, its output (plain or followed over
 * Server-Sent Events), cancel. Someone else's run is a 404; admins reach all, and
 * list another user's (`user_id`) or everyone's (`all=true`).
 */
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { CursorPage } from '../../domain/paging.ts';
import type { Run as RunRow } from '../../domain/run.ts';
import type { Principal } from '../../services/auth-service.ts';
import type { LogFollow } from '../../services/run-service.ts';
import type { RouteOptions } from '../context.ts';
import type { Followers } from '../followers.ts';
import { logsDescription, streamLogs } from '../log-stream.ts';
import { principalOf } from '../plugins/auth.ts';
import { CursorQuery, IdParams, problems } from '../schemas/common.ts';
import { Run, RunPage, RunStatus, RunTrigger } from '../schemas/run.ts';

export const PageOfRuns = Type.Ref(RunPage);

export const RunPageQuery = Type.Object(
  {
    ...CursorQuery,
    per_page: Type.Optional(Type.Integer({ format: 'int32', minimum: 1, maximum: 100, default: 20 })),
  },
  { additionalProperties: false },
);

const LogsQuery = Type.Object(
  {
    tail: Type.Optional(Type.Integer({ format: 'int32', minimum: 1, maximum: 100_000 })),
    follow: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

/** Where a logs route reads: the output (its last `tail` lines), or a follower of it. */
export interface LogsSource {
  read(principal: Principal, id: number, tail: number | undefined): Promise<string>;
  follow(principal: Principal, id: number): Promise<LogFollow>;
}

/**
 * A logs route (GET /runs/{id}/logs, GET /scripts/{id}/logs): the output as text, or with
 * `follow=true` as an event stream (log-stream.ts).
 */
export function logsRoute(
  app: Parameters<FastifyPluginAsyncTypebox>[0],
  followers: Followers,
  url: string,
  summary: string,
  description: string,
  source: LogsSource,
): void {
  app.get(
    url,
    {
      schema: {
        tags: ['runs'],
        summary,
        description,
        params: IdParams,
        produces: ['text/plain', 'text/event-stream'],
        querystring: LogsQuery,
        response: {
          200: Type.String({
            description: 'the output (text/plain), or an event stream (text/event-stream)',
          }),
          ...problems(400, 401, 404, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const { tail, follow } = request.query;
      if (follow !== true)
        return reply
          .type('text/plain; charset=utf-8')
          .send(await source.read(principal, request.params.id, tail));
      return streamLogs(request, reply, followers, await source.follow(principal, request.params.id), tail);
    },
  );
}

export function runPageBody(page: CursorPage<RunRow>): { runs: RunRow[]; next_cursor: string | null } {
  return { runs: page.items, next_cursor: page.next_cursor };
}

export const runRoutes: FastifyPluginAsyncTypebox<RouteOptions & { followers: Followers }> = async (
  app,
  { ctx, followers },
) => {
  const runs = ctx.runs;

  app.get(
    '/runs',
    {
      schema: {
        tags: ['runs'],
        summary:
          'Own runs, newest first (cursor page); admins may ask for one user (`user_id`) or everyone (`all`)',
        querystring: Type.Object(
          {
            ...RunPageQuery.properties,
            script_id: Type.Optional(Type.Integer({ format: 'int64', minimum: 1, maximum: 2 ** 53 - 1 })),
            status: Type.Optional(Type.Ref(RunStatus)),
            trigger: Type.Optional(Type.Ref(RunTrigger)),
            since: Type.Optional(
              Type.String({ format: 'date-time', maxLength: 64, description: 'queued at or after' }),
            ),
            user_id: Type.Optional(Type.Integer({ format: 'int64', minimum: 1, maximum: 2 ** 53 - 1 })),
            all: Type.Optional(Type.Boolean()),
          },
          { additionalProperties: false },
        ),
        response: { 200: PageOfRuns, ...problems(400, 401, 403, 503) },
      },
    },
    async (request) => {
      const { since, ...rest } = request.query;
      const page = await runs.list(principalOf(request), {
        ...rest,
        since: since === undefined ? undefined : new Date(since),
      });
      return runPageBody(page);
    },
  );

  app.get(
    '/runs/:id',
    {
      schema: {
        tags: ['runs'],
        summary: 'One run',
        params: IdParams,
        response: { 200: Type.Ref(Run), ...problems(400, 401, 404, 503) },
      },
    },
    async (request) => runs.get(principalOf(request), request.params.id),
  );

  app.post(
    '/runs/:id/cancel',
    {
      schema: {
        tags: ['runs'],
        summary: 'Cancel a queued or running run; a running process is killed',
        description: '409 INVALID_STATE when the run is already over.',
        params: IdParams,
        response: { 200: Type.Ref(Run), ...problems(400, 401, 404, 409, 503) },
      },
    },
    async (request) => {
      const run = await runs.cancel(principalOf(request), request.params.id);
      request.log.info({ run_id: run.id, script_id: run.script_id }, 'run cancelled');
      return run;
    },
  );

  logsRoute(app, followers, '/runs/:id/logs', 'Output of a run', logsDescription(followers), {
    read: (principal, id, tail) => runs.logs(principal, id, tail),
    follow: (principal, id) => runs.follow(principal, id),
  });
};
