/**
 * Register, login, Google sign-in, logout, and which sign-ins exist. The sign-ins
 * are rate limited per client address; with `cookie: true` they start a browser
 * session (src/http/session-cookies.ts) instead of returning the token.
 */
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { NotFoundError } from '../../domain/errors.ts';
import type { Session as IssuedSession } from '../../services/auth-service.ts';
import { ID_TOKEN_MAX_LENGTH } from '../../services/google-id-token.ts';
import type { RouteOptions } from '../context.ts';
import { principalOf } from '../plugins/auth.ts';
import { NoContent, problems } from '../schemas/common.ts';
import { CookieFlag, Email, Password, Providers, Session, Username } from '../schemas/user.ts';
import { clearSessionCookies, setSessionCookies } from '../session-cookies.ts';

/** The body of a sign-in answer: the token, or (cookie: true) the cookies and the CSRF token. */
function answer(request: FastifyRequest, reply: FastifyReply, session: IssuedSession, cookie?: boolean) {
  if (cookie !== true) return { user: session.user, token: session.token };
  // A session answer must never be stored by a cache (it sets the session cookie).
  reply.header('cache-control', 'no-store');
  return { user: session.user, csrf_token: setSessionCookies(request, reply, session) };
}

export const authRoutes: FastifyPluginAsyncTypebox<RouteOptions> = async (app, { ctx }) => {
  const rateLimit = {
    max: ctx.config.AUTH_RATE_LIMIT_MAX,
    timeWindow: ctx.config.AUTH_RATE_LIMIT_WINDOW_SECONDS * 1000,
  };

  app.get(
    '/providers',
    {
      schema: {
        tags: ['auth'],
        summary: 'Which sign-ins this server offers',
        description: 'A front end shows the Google button only when `google` is not null.',
        response: { 200: Type.Ref(Providers) },
      },
    },
    async () => ({
      email: true as const,
      google: ctx.config.GOOGLE_CLIENT_ID === undefined ? null : { client_id: ctx.config.GOOGLE_CLIENT_ID },
    }),
  );

  app.post(
    '/register',
    {
      config: { rateLimit },
      schema: {
        tags: ['auth'],
        summary: 'Create an account and sign in',
        body: Type.Object(
          { email: Email, username: Username, password: Password, cookie: CookieFlag },
          { additionalProperties: false },
        ),
        response: { 201: Type.Ref(Session), ...problems(400, 409, 429, 503) },
      },
    },
    async (request, reply) => {
      const { cookie, ...fields } = request.body;
      const session = await ctx.auth.register(fields);
      request.log.info({ user_id: session.user.id, cookie: cookie === true }, 'user registered');
      return reply.code(201).send(answer(request, reply, session, cookie));
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
          {
            email: Type.String({ maxLength: 320 }),
            password: Type.String({ maxLength: 1024 }),
            cookie: CookieFlag,
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Ref(Session), ...problems(400, 401, 403, 429, 503) },
      },
    },
    async (request, reply) => {
      const session = await ctx.auth.login(request.body.email, request.body.password);
      request.log.info({ user_id: session.user.id, cookie: request.body.cookie === true }, 'user signed in');
      return answer(request, reply, session, request.body.cookie);
    },
  );

  app.post(
    '/google',
    {
      config: { rateLimit },
      schema: {
        tags: ['auth'],
        summary: 'Sign in with a Google ID token',
        description:
          'Checks the ID token from Google Identity Services (signature against Google’s keys, `iss`, `aud` = ' +
          'GOOGLE_CLIENT_ID, `exp`, `email_verified`) and signs in the user with that Google account, creating ' +
          'it on first sign-in (201). 401 INVALID_ID_TOKEN for any bad token; 409 EMAIL_TAKEN when another ' +
          'account owns the email; 404 when Google sign-in is not configured; 503 when Google’s keys cannot ' +
          'be fetched in time.',
        body: Type.Object(
          {
            // Far above any real token: an over-long one is still "a bad token" (401), not a 400.
            id_token: Type.String({ minLength: 1, maxLength: ID_TOKEN_MAX_LENGTH * 16 }),
            cookie: CookieFlag,
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Ref(Session),
          201: Type.Ref(Session),
          ...problems(400, 401, 403, 404, 409, 429, 503),
        },
      },
    },
    async (request, reply) => {
      if (ctx.google === null) throw new NotFoundError('Google sign-in', 'Google sign-in is not configured');
      const identity = await ctx.google.verify(request.body.id_token);
      const session = await ctx.auth.signInWithGoogle(identity);
      request.log.info(
        { user_id: session.user.id, created: session.created, cookie: request.body.cookie === true },
        session.created ? 'user registered with Google' : 'user signed in with Google',
      );
      return reply
        .code(session.created ? 201 : 200)
        .send(answer(request, reply, session, request.body.cookie));
    },
  );

  app.post(
    '/logout',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['auth'],
        summary: 'Revoke the token in use (and clear the session cookies)',
        security: [{ bearerAuth: [] }, { cookieAuth: [] }],
        response: { 204: NoContent, ...problems(401, 403, 503) },
      },
    },
    async (request, reply) => {
      await ctx.auth.logout(principalOf(request));
      clearSessionCookies(request, reply);
      return reply.code(204).send(null);
    },
  );
};
