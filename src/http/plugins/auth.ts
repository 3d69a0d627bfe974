/**
 * Bearer authentication. `authenticate` (an onRequest hook) puts the caller on
 * `request.principal`; `requireAdmin` (a preHandler) refuses everyone else with
 * 403. Ownership is answered by `ownerScope`: a user is limited to itself, an
 * admin to nothing.
 */
import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ForbiddenError, UnauthenticatedError } from '../../domain/errors.js';
import type { AuthService, Principal } from '../../services/auth-service.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
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
    app.decorate('authenticate', async (request: FastifyRequest) => {
      const header = request.headers.authorization;
      const match = header === undefined ? null : BEARER.exec(header);
      if (match === null) throw new UnauthenticatedError('a bearer token is required');
      request.principal = await auth.authenticate(match[1]!);
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
  const principal = principalOf(request);
  return principal.role === 'admin' ? undefined : principal.user_id;
}
