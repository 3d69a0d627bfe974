/**
 * Tells the read router (src/db/read-router.ts, through ReadRouting) who is asking, so reads keep up with the
 * caller's own writes: every request runs in a read scope (a request that may write reads
 * from the primary throughout); once authenticated, the scope names the user; a request
 * that may have written pins its user to the primary, before it is answered, until the
 * replica has replayed the write. Routes never choose a pool: this only describes the
 * request. Without a replica there is nothing to do and nothing is registered.
 */
import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { ReadRouting, ReadScope } from '../context.ts';

const READ_ONLY_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

const scopes = new WeakMap<FastifyRequest, ReadScope>();

export const readScopePlugin = fp<{ router: ReadRouting | undefined }>(
  async (app, { router }) => {
    if (router === undefined) return;
    app.addHook('onRequest', (request, _reply, done) => {
      const scope: ReadScope = { userId: null, writes: !READ_ONLY_METHODS.has(request.method) };
      scopes.set(request, scope);
      // The rest of the request (hooks, handler) runs inside the scope.
      router.withScope(scope, done);
    });
    // After every onRequest hook, the authenticating one included.
    app.addHook('preHandler', (request, _reply, done) => {
      const scope = scopes.get(request);
      if (scope !== undefined && request.principal !== null) scope.userId = request.principal.user_id;
      done();
    });
    app.addHook('onSend', async (request, _reply, payload) => {
      const scope = scopes.get(request);
      if (scope?.writes && scope.userId !== null) await router.wrote(scope);
      return payload;
    });
  },
  { name: 'read-scope', dependencies: ['auth'] },
);
