/**
 * Authentication by `Authorization: Bearer` or by the session cookie of a browser
 * (src/http/session-cookies.ts), whose unsafe requests must also pass the CSRF
 * check (403 CSRF_FAILED, decided before any lookup). Either way it is the same
 * token check: one cached lookup (AuthService.authenticate), nothing more.
 * `authenticate` (an onRequest hook) puts the caller on `request.principal`; `requireAdmin` (a preHandler) refuses everyone else with
 * 403. Ownership is answered by `ownerScope`: a user is limited to itself, an
 * admin to nothing.
 */
import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ForbiddenError, UnauthenticatedError } from '../../domain/errors.ts';
import { type AuthService, type Principal, scopeOf } from '../../services/auth-service.ts';
import { csrfSatisfied, SESSION_COOKIE } from '../session-cookies.ts';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
    /** True when the caller authenticated with the session cookie rather than a bearer header. */
    viaCookie: boolean;
  }
  interface FastifyInstance {
    authenticate: (request: FastifyRequest) => Promise<void>;
    requireAdmin: (request: FastifyRequest) => Promise<void>;
  }
}

const BEARER = /^Bearer ([^\s]+)$/i;

export const authPlugin = fp<{ auth: AuthService }>(
  async (app, { auth }) => {
    app.decorateRequest('principal', null);
    app.decorateRequest('viaCookie', false);
    app.decorate('authenticate', async (request: FastifyRequest) => {
      const header = request.headers.authorization;
      if (header !== undefined) {
        const match = BEARER.exec(header);
        if (match === null) throw new UnauthenticatedError('a bearer token is required');
        request.principal = await auth.authenticate(match[1]!);
        return;
      }
      const cookie = request.cookies?.[SESSION_COOKIE];
      if (cookie === undefined || cookie === '')
        throw new UnauthenticatedError('a bearer token or a session cookie is required');
      if (!csrfSatisfied(request, cookie))
        throw new ForbiddenError(
          'a request authenticated by the session cookie needs the X-CSRF-Token header (the dc_csrf cookie)',
          'CSRF_FAILED',
        );
      request.principal = await auth.authenticate(cookie);
      request.viaCookie = true;
    });
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
