/**
 * Security headers (helmet). @fastify/helmet 13 builds helmet's middleware anew for
 * every request, and even built once, helmet sets a dozen headers through a chain
 * of middlewares on every request (measured in bench/). With static options (no
 * per-request CSP nonces) the headers are the same for every response, so helmet
 * runs once at start-up against a recording response, and each request gets the
 * recorded headers in one step. Helmet is run twice to prove the headers static.
 */
import type { ServerResponse } from 'node:http';
import fp from 'fastify-plugin';
import helmet, { type HelmetOptions } from 'helmet';

type Headers = Record<string, string>;

/** The headers helmet sets on a response (it only sets and removes headers). */
function recordHeaders(apply: ReturnType<typeof helmet>): Headers {
  const headers: Headers = {};
  const response = {
    setHeader(name: string, value: string | number | readonly string[]) {
      headers[name.toLowerCase()] = String(value);
    },
    removeHeader(name: string) {
      delete headers[name.toLowerCase()];
    },
  } as unknown as ServerResponse;
  let failure: unknown;
  apply({} as never, response, (error?: unknown) => {
    failure = error;
  });
  if (failure !== undefined) throw failure;
  return headers;
}

export const securityHeaders = fp<{ helmet: HelmetOptions }>(
  async (app, options) => {
    const apply = helmet(options.helmet);
    const headers = recordHeaders(apply);
    if (JSON.stringify(recordHeaders(apply)) !== JSON.stringify(headers))
      throw new Error('security headers: helmet options that vary per response are not supported here');
    app.addHook('onRequest', (_request, reply, done) => {
      reply.headers(headers);
      done();
    });
  },
  { name: 'security-headers' },
);
