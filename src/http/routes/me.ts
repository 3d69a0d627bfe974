/** The signed-in user: profile, password, and the IBKR link. */
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { RouteOptions } from '../context.ts';
import { principalOf } from '../plugins/auth.ts';
import { problems } from '../schemas/common.ts';
import { Password, User, Username } from '../schemas/user.ts';

export const meRoutes: FastifyPluginAsyncTypebox<RouteOptions> = async (app, { ctx }) => {
  app.get(
    '/me',
    {
      schema: {
        tags: ['me'],
        summary: 'The current user',
        // 404: the account was deleted after this request was authenticated.
        response: { 200: Type.Ref(User), ...problems(401, 404, 503) },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      return ctx.users.get(principal, principal.user_id);
    },
  );

  app.patch(
    '/me',
    {
      schema: {
        tags: ['me'],
        summary: 'Change the username and/or the password',
        description:
          'A new password needs the current one, and ends every other session of the user. ' +
          'Username and password change together or not at all; 409 PASSWORD_CHANGED when another ' +
          'request changed the password after this one checked the current password (nothing is changed).',
        body: Type.Object(
          {
            username: Type.Optional(Username),
            current_password: Type.Optional(Type.String({ maxLength: 1024 })),
            new_password: Type.Optional(Password),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Ref(User), ...problems(400, 401, 404, 409, 503) },
      },
    },
    async (request) => ctx.users.updateSelf(principalOf(request), request.body),
  );

  app.put(
    '/me/ibkr',
    {
      schema: {
        tags: ['me'],
        summary: 'Link an Interactive Brokers account',
        description: 'Tokens are stored encrypted (AES-256-GCM) and never returned.',
        body: Type.Object(
          {
            ibkr_user_id: Type.String({ minLength: 1, maxLength: 100 }),
            access_token: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
            refresh_token: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
            token_expires_at: Type.Optional(Type.String({ format: 'date-time', maxLength: 64 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Ref(User), ...problems(400, 401, 404, 409, 503) },
      },
    },
    async (request) => {
      const { token_expires_at, ...rest } = request.body;
      return ctx.users.linkIbkr(principalOf(request).user_id, {
        ...rest,
        token_expires_at: token_expires_at === undefined ? undefined : new Date(token_expires_at),
      });
    },
  );

  app.delete(
    '/me/ibkr',
    {
      schema: {
        tags: ['me'],
        summary: 'Unlink the Interactive Brokers account and forget its tokens',
        // 404: the account was deleted after this request was authenticated.
        response: { 200: Type.Ref(User), ...problems(401, 404, 503) },
      },
    },
    async (request) => ctx.users.unlinkIbkr(principalOf(request).user_id),
  );
};
