/** Users, for admins; a user may read and delete itself. Anyone else's id is a 404. */
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import { pageBody } from '../../domain/paging.ts';
import { EMBEDDED_SCRIPTS_MAX } from '../../services/user-service.ts';
import type { RouteOptions } from '../context.ts';
import { principalOf } from '../plugins/auth.ts';
import { CursorQuery, IdParams, NoContent, PageQuery, problems } from '../schemas/common.ts';
import { Script } from '../schemas/script.ts';
import { AuthProvider, User, Username, UserRole } from '../schemas/user.ts';

const UserWithScripts = Type.Object(
  {
    ...User.properties,
    scripts: Type.Optional(Type.Array(Type.Ref(Script), { maxItems: EMBEDDED_SCRIPTS_MAX })),
    scripts_next: Type.Optional(
      Type.Union([Type.String(), Type.Null()], {
        description:
          'with include=scripts: the URL of the next page of GET /api/v1/scripts (newest first) after ' +
          'the last embedded script, or null when every script is embedded',
      }),
    ),
  },
  { additionalProperties: false },
);

const UserPage = Type.Union([
  Type.Object(
    {
      users: Type.Array(Type.Ref(User)),
      total: Type.Integer(),
      page: Type.Integer(),
      per_page: Type.Integer(),
      pages: Type.Integer(),
    },
    { additionalProperties: false, title: 'offset page' },
  ),
  Type.Object(
    { users: Type.Array(Type.Ref(User)), next_cursor: Type.Union([Type.String(), Type.Null()]) },
    { additionalProperties: false, title: 'cursor page' },
  ),
]);

export const userRoutes: FastifyPluginAsyncTypebox<RouteOptions> = async (app, { ctx }) => {
  app.get(
    '/users',
    {
      // Before validation: a user learns nothing of an admin route's input rules.
      onRequest: app.requireAdmin,
      schema: {
        tags: ['users'],
        summary: 'List users, newest first (offset page, or keyset with `cursor`)',
        querystring: Type.Object(
          {
            ...PageQuery,
            ...CursorQuery,
            auth_provider: Type.Optional(Type.Ref(AuthProvider)),
            is_active: Type.Optional(Type.Boolean()),
            ibkr_connected: Type.Optional(Type.Boolean()),
            last_login_since: Type.Optional(Type.String({ format: 'date-time', maxLength: 64 })),
            created_since: Type.Optional(Type.String({ format: 'date-time', maxLength: 64 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: UserPage, ...problems(400, 401, 403, 503) },
      },
    },
    async (request) => {
      const { page, per_page, cursor, last_login_since, created_since, ...rest } = request.query;
      const filters = {
        ...rest,
        last_login_since: last_login_since === undefined ? undefined : new Date(last_login_since),
        created_since: created_since === undefined ? undefined : new Date(created_since),
      };
      return pageBody('users', await ctx.users.list(filters, { page, per_page, cursor }));
    },
  );

  app.get(
    '/users/search',
    {
      // Before validation: a user learns nothing of an admin route's input rules.
      onRequest: app.requireAdmin,
      schema: {
        tags: ['users'],
        summary: 'Case-insensitive substring search of email or username',
        querystring: Type.Object(
          {
            q: Type.String({ minLength: 1, maxLength: 100 }),
            limit: Type.Optional(Type.Integer({ format: 'int32', minimum: 1, maximum: 100, default: 20 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ users: Type.Array(Type.Ref(User)) }, { additionalProperties: false }),
          ...problems(400, 401, 403, 503),
        },
      },
    },
    async (request) => ({ users: await ctx.users.search(request.query.q, request.query.limit ?? 20) }),
  );

  app.get(
    '/users/:id',
    {
      schema: {
        tags: ['users'],
        summary: 'One user (admin, or the user itself); `include=scripts` embeds its newest scripts',
        description:
          `\`include=scripts\` embeds the user's newest ${EMBEDDED_SCRIPTS_MAX} scripts, newest first. ` +
          'When it has more, `scripts_next` is the URL of the rest: GET /api/v1/scripts with ' +
          '`user_id` and a `cursor` (keyset pages of `per_page` scripts, newest first; follow ' +
          '`next_cursor` from there). Without more scripts, `scripts_next` is null.',
        params: IdParams,
        querystring: Type.Object(
          { include: Type.Optional(Type.Literal('scripts')) },
          { additionalProperties: false },
        ),
        response: { 200: UserWithScripts, ...problems(400, 401, 404, 503) },
      },
    },
    async (request) => {
      const user = await ctx.users.get(principalOf(request), request.params.id, {
        scripts: request.query.include === 'scripts',
      });
      if (!('scripts_cursor' in user)) return user;
      const { scripts_cursor, ...rest } = user;
      const next =
        scripts_cursor === null
          ? null
          : `/api/v1/scripts?user_id=${user.id}&per_page=${EMBEDDED_SCRIPTS_MAX}&cursor=${scripts_cursor}`;
      return { ...rest, scripts_next: next };
    },
  );

  app.patch(
    '/users/:id',
    {
      // Before validation: a user learns nothing of an admin route's input rules.
      onRequest: app.requireAdmin,
      schema: {
        tags: ['users'],
        summary: 'Change a user (admin)',
        params: IdParams,
        body: Type.Object(
          {
            username: Type.Optional(Username),
            is_active: Type.Optional(Type.Boolean()),
            is_verified: Type.Optional(Type.Boolean()),
            role: Type.Optional(Type.Ref(UserRole)),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Ref(User), ...problems(400, 401, 403, 404, 503) },
      },
    },
    async (request) => {
      const user = await ctx.users.update(request.params.id, request.body);
      request.log.info({ user_id: user.id, changes: Object.keys(request.body) }, 'user changed by an admin');
      return user;
    },
  );

  app.delete(
    '/users/:id',
    {
      schema: {
        tags: ['users'],
        summary: 'Delete a user, its scripts and their files (admin, or the user itself)',
        params: IdParams,
        response: { 204: NoContent, ...problems(400, 401, 404, 503) },
      },
    },
    async (request, reply) => {
      await ctx.users.delete(principalOf(request), request.params.id);
      request.log.info({ user_id: request.params.id }, 'user deleted');
      return reply.code(204).send(null);
    },
  );
};
