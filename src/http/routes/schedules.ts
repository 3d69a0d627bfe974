/**
 * Schedules (API.md, Schedules): cron rules that queue runs of a script. A user
 * reaches only its own schedules and scripts (someone else's id is a 404);
 * admins reach all. Firing is the scheduler's (src/scheduler/).
 */
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import { MAX_SCHEDULES_PER_SCRIPT } from '../../domain/schedule.ts';
import type { RouteOptions } from '../context.ts';
import { ownerScope, principalOf } from '../plugins/auth.ts';
import { CursorQuery, IdParams, NoContent, PageQuery, problems } from '../schemas/common.ts';
import { NewSchedule, Schedule, ScheduleChange } from '../schemas/schedule.ts';

const ScheduleList = Type.Object(
  { schedules: Type.Array(Type.Ref(Schedule)) },
  { additionalProperties: false },
);
const SchedulePage = Type.Object(
  { schedules: Type.Array(Type.Ref(Schedule)), next_cursor: Type.Union([Type.String(), Type.Null()]) },
  { additionalProperties: false },
);

export const scheduleRoutes: FastifyPluginAsyncTypebox<RouteOptions> = async (app, { ctx }) => {
  const schedules = ctx.schedules;

  app.post(
    '/scripts/:id/schedules',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Schedule runs of a script',
        description:
          `400 VALIDATION_FAILED naming \`cron\` or \`timezone\`; 409 TOO_MANY_SCHEDULES past ${MAX_SCHEDULES_PER_SCRIPT} ` +
          'schedules per script. `next_run_at` is the first occurrence after now (null when disabled).',
        params: IdParams,
        body: NewSchedule,
        response: {
          201: Type.Ref(Schedule, {
            headers: {
              Location: Type.String({ description: 'the new schedule: `/api/v1/schedules/{schedule_id}`' }),
            },
          }),
          ...problems(400, 401, 404, 409, 503),
        },
      },
    },
    async (request, reply) => {
      const schedule = await schedules.create(request.params.id, request.body, ownerScope(request));
      request.log.info({ schedule_id: schedule.id, script_id: schedule.script_id }, 'schedule created');
      return reply.code(201).header('location', `/api/v1/schedules/${schedule.id}`).send(schedule);
    },
  );

  app.get(
    '/scripts/:id/schedules',
    {
      schema: {
        tags: ['schedules'],
        summary: 'A script’s schedules, oldest first',
        params: IdParams,
        response: { 200: ScheduleList, ...problems(400, 401, 404, 503) },
      },
    },
    async (request) => ({
      schedules: await schedules.listByScript(request.params.id, ownerScope(request)),
    }),
  );

  app.get(
    '/schedules',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Own schedules, newest first (admins: everyone’s with `all=true`), cursor page',
        querystring: Type.Object(
          {
            ...CursorQuery,
            per_page: PageQuery.per_page,
            all: Type.Optional(Type.Boolean()),
          },
          { additionalProperties: false },
        ),
        response: { 200: SchedulePage, ...problems(400, 401, 403, 503) },
      },
    },
    async (request) => {
      const page = await schedules.list(principalOf(request), request.query);
      return { schedules: page.items, next_cursor: page.next_cursor };
    },
  );

  app.get(
    '/schedules/:id',
    {
      schema: {
        tags: ['schedules'],
        summary: 'One schedule',
        params: IdParams,
        response: { 200: Type.Ref(Schedule), ...problems(400, 401, 404, 503) },
      },
    },
    async (request) => schedules.get(request.params.id, ownerScope(request)),
  );

  app.patch(
    '/schedules/:id',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Change a schedule’s rule or state; `next_run_at` is recomputed from now',
        params: IdParams,
        body: ScheduleChange,
        response: { 200: Type.Ref(Schedule), ...problems(400, 401, 404, 503) },
      },
    },
    async (request) => {
      const schedule = await schedules.update(request.params.id, request.body, ownerScope(request));
      request.log.info({ schedule_id: schedule.id }, 'schedule changed');
      return schedule;
    },
  );

  app.delete(
    '/schedules/:id',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Delete a schedule (its past runs stay)',
        params: IdParams,
        response: { 204: NoContent, ...problems(400, 401, 404, 503) },
      },
    },
    async (request, reply) => {
      await schedules.delete(request.params.id, ownerScope(request));
      request.log.info({ schedule_id: request.params.id }, 'schedule deleted');
      return reply.code(204).send(null);
    },
  );
};
