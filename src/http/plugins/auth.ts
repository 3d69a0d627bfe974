/**
 * Authentication by `Authorization: Bearer` or by the session cookie of a browser
 * (src/http/session-cookies.ts), whose unsafe requests must also pass the CSRF
 * check (403 CSRF_FAILED, decided before any lookup). Either way it is the same
 * token check: one cached lookup (AuthService.authenticate), nothing more.
 * `authenticate` (an onRequest hook) puts the caller on `request.principal`; `requireAdmin` (a preHandler) refuses everyone else with
 * 403. Ownership is answered by `ownerScope`: a user is limited to itself, an
 * admin to nothing.
 */
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction, onRequestHookHandler } from 'fastify';
import fp from 'fastify-plugin';
import { ForbiddenError, UnauthenticatedError } from '../../domain/errors.ts';
import { type AuthService, type Principal, scopeOf } from '../../services/auth-service.ts';
import { csrfSatisfied, SESSION_COOKIE } from '../session-cookies.ts';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyInstance {
    authenticate: onRequestHookHandler;
    requireAdmin: (request: FastifyRequest) => Promise<void>;
  }
}

const BEARER = /^Bearer ([^\s]+)$/i;

/** The bearer token, else the session cookie's (after the CSRF check); throws 401/403 when neither is presented. */
function presentedToken(request: FastifyRequest): string {
  const header = request.headers.authorization;
  if (header !== undefined) {
    const match = BEARER.exec(header);
    if (match === null) throw new UnauthenticatedError('a bearer token is required');
    return match[1]!;
  }
  const cookie = request.cookies?.[SESSION_COOKIE];
  if (cookie === undefined || cookie === '')
    throw new UnauthenticatedError('a bearer token or a session cookie is required');
  if (!csrfSatisfied(request, cookie))
    throw new ForbiddenError(
      'a request authenticated by the session cookie needs the X-CSRF-Token header (the dc_csrf cookie)',
      'CSRF_FAILED',
    );
  return cookie;
}

export const authPlugin = fp<{ auth: AuthService }>(
  async (app, { auth }) => {
    app.decorateRequest('principal', null);
    // A hook with `done`, not an async function: a token the cache knows (nearly every
    // request) is answered without a promise or a microtask (bench/README.md, HTTP).
    app.decorate(
      'authenticate',
      (request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction) => {
        let token: string;
        try {
          token = presentedToken(request);
        } catch (error) {
          return done(error as Error);
        }
        const known = auth.cached(token);
        if (known !== null) {
          request.principal = known;
          return done();
        }
        auth.authenticate(token).then(
          (principal) => {
            request.principal = principal;
            done();
          },
          // Never `done(undefined)`: that would let the request on without a principal.
          (error: unknown) => done(error instanceof Error ? error : new Error(String(error))),
        );
      },
    );
    app.decorate('requireAdmin', async (request: FastifyRequest) => {
      if (request.principal?.role !== 'admin') throw new ForbiddenError('this route is for admins');
    });
  },
  { name: 'auth' },
);

/** The authenticated caller; only for routes behind `authenticate`. */
export function principalOf(request: FastifyRequest): Principal {
  if (request.principal === null) throw new UnauthenticatedError('a bearer token is required');
  return request.principal;
}

/** Whose rows a caller may reach: its own id, or undefined (everyone's) for an admin. */
export function ownerScope(request: FastifyRequest): number | undefined {
  return scopeOf(principalOf(request));
}
