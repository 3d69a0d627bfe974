/** Register, login, logout. Register and login are rate limited per client address. */
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { RouteOptions } from '../context.js';
import { principalOf } from '../plugins/auth.js';
import { NoContent, problems } from '../schemas/common.js';
import { Email, Password, Session, Username } from '../schemas/user.js';

export const authRoutes: FastifyPluginAsyncTypebox<RouteOptions> = async (app, { ctx }) => {
  const rateLimit = {
    max: ctx.config.AUTH_RATE_LIMIT_MAX,
    timeWindow: ctx.config.AUTH_RATE_LIMIT_WINDOW_SECONDS * 1000,
  };

  app.post(
    '/register',
    {
      config: { rateLimit },
      schema: {
        tags: ['auth'],
        summary: 'Create an account and sign in',
        body: Type.Object(
          { email: Email, username: Username, password: Password },
          { additionalProperties: false },
        ),
        response: { 201: Type.Ref(Session), ...problems(400, 409, 429, 503) },
      },
    },
    async (request, reply) => {
      const session = await ctx.auth.register(request.body);
      request.log.info({ user_id: session.user.id }, 'user registered');
      return reply.code(201).send(session);
    },
  );

  app.post(
    '/login',
    {
      config: { rateLimit },
      schema: {
        tags: ['auth'],
        summary: 'Sign in with email and password',
        description: 'Unknown email and wrong password get the same 401.',
        body: Type.Object(
          { email: Type.String({ maxLength: 320 }), password: Type.String({ maxLength: 1024 }) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Ref(Session), ...problems(400, 401, 403, 429, 503) },
      },
    },
    async (request) => {
      const session = await ctx.auth.login(request.body.email, request.body.password);
      request.log.info({ user_id: session.user.id }, 'user signed in');
      return session;
    },
  );

  app.post(
    '/logout',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['auth'],
        summary: 'Revoke the token in use',
        security: [{ bearerAuth: [] }],
        response: { 204: NoContent, ...problems(401, 503) },
      },
    },
    async (request, reply) => {
      await ctx.auth.logout(principalOf(request));
      return reply.code(204).send(null);
    },
  );
};
