/**
 * Running scripts: queue a run (execute answers the run), cancel a script's run, the
 * output of its latest run (plain or followed over Server-Sent Events), its run
 * history, and what is running now. The /runs routes are in runs.ts. Ownership as
 * everywhere: someone else's script is a 404.
 */
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { RouteOptions } from '../context.ts';
import { Followers, type FollowLimits, followLimits } from '../followers.ts';
import { logsDescription } from '../log-stream.ts';
import { principalOf } from '../plugins/auth.ts';
import { IdParams, problems } from '../schemas/common.ts';
import { Run } from '../schemas/run.ts';
import { Script } from '../schemas/script.ts';
import { logsRoute, PageOfRuns, RunPageQuery, runPageBody, runRoutes } from './runs.ts';

export { tailLines } from '../../services/run-service.ts';
export { FOLLOW_POLL_MS, FOLLOW_RETRY_AFTER_SECONDS, sseEvent } from '../log-stream.ts';

export const executionRoutes: FastifyPluginAsyncTypebox<
  RouteOptions & { followLimits?: FollowLimits }
> = async (app, { ctx, followLimits: limits }) => {
  const followers = new Followers(limits ?? followLimits(ctx.config));
  const runs = ctx.runs;

  app.get(
    '/scripts/running',
    {
      schema: {
        tags: ['runs'],
        summary: 'Scripts running now: your own (admins: everyone’s)',
        response: {
          200: Type.Object({ scripts: Type.Array(Type.Ref(Script)) }, { additionalProperties: false }),
          ...problems(401, 503),
        },
      },
    },
    async (request) => ({ scripts: await ctx.scripts.listRunning(principalOf(request)) }),
  );

  app.post(
    '/scripts/:id/execute',
    {
      schema: {
        tags: ['runs'],
        summary: 'Queue a run of the script; answers the run',
        description:
          'Answers 202 with the queued run and `Location: /api/v1/runs/{run_id}`. ' +
          `409 INVALID_STATE while the script has a queued or running run; 429 TOO_MANY_RUNNING past MAX_CONCURRENT_SCRIPTS (${ctx.config.MAX_CONCURRENT_SCRIPTS}) queued + running runs of the owner.`,
        params: IdParams,
        response: {
          202: Type.Ref(Run, {
            headers: {
              Location: Type.String({ description: 'the queued run: `/api/v1/runs/{run_id}`' }),
            },
          }),
          ...problems(400, 401, 404, 409, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const run = await runs.execute(principalOf(request), request.params.id);
      request.log.info({ script_id: run.script_id, run_id: run.id }, 'run queued');
      return reply.code(202).header('location', `/api/v1/runs/${run.id}`).send(run);
    },
  );

  app.post(
    '/scripts/:id/cancel',
    {
      schema: {
        tags: ['runs'],
        summary: 'Cancel the script’s queued or running run; a running process is killed',
        params: IdParams,
        response: { 200: Type.Ref(Script), ...problems(400, 401, 404, 409, 503) },
      },
    },
    async (request) => {
      const script = await runs.cancelScript(principalOf(request), request.params.id);
      request.log.info({ script_id: script.id, run_id: script.last_run_id }, 'run cancelled');
      return script;
    },
  );

  app.get(
    '/scripts/:id/runs',
    {
      schema: {
        tags: ['runs'],
        summary: 'The script’s runs, newest first (cursor page)',
        params: IdParams,
        querystring: RunPageQuery,
        response: { 200: PageOfRuns, ...problems(400, 401, 404, 503) },
      },
    },
    async (request) =>
      runPageBody(await runs.listForScript(principalOf(request), request.params.id, request.query)),
  );

  logsRoute(
    app,
    followers,
    '/scripts/:id/logs',
    'Output of the script’s latest run (as /runs/{run_id}/logs)',
    `${logsDescription(followers)} A script that never ran has empty output (its stream ends at once with status \`uploaded\`).`,
    {
      read: (principal, id, tail) => runs.scriptLogs(principal, id, tail),
      follow: (principal, id) => runs.followScript(principal, id),
    },
  );

  await app.register(runRoutes, { ctx, followers });

  // A stream is a hijacked response: server.close() would wait for it forever.
  app.addHook('preClose', (done) => {
    followers.shutdownAll();
    done();
  });
};
