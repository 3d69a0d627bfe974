/**
 * Security headers (helmet), in two sets: one for the API's answers (JSON, problems,
 * downloads) and one for the documents a browser renders (the API docs under
 * `documents.prefix`).
 *
 * Most of helmet's defaults are for HTML documents: a CSP of script and style sources,
 * Origin-Agent-Cluster, Cross-Origin-Opener-Policy, X-DNS-Prefetch-Control,
 * X-Download-Options, X-Permitted-Cross-Domain-Policies, X-XSS-Protection,
 * Referrer-Policy. A JSON answer runs no script and loads nothing, so on the API they
 * protect nothing and cost ~700 bytes and a dozen header validations a response. The
 * API gets what OWASP's REST Security Cheat Sheet asks of an API instead: a CSP that
 * allows nothing (`default-src 'none'; frame-ancestors 'none'`, stricter than the
 * documents' policy), X-Frame-Options DENY, nosniff, HSTS, Cross-Origin-Resource-Policy,
 * and `Cache-Control: no-store` (answers about an account are never kept by a browser
 * or a proxy; a route that means otherwise sets its own).
 *
 * @fastify/helmet 13 builds helmet's middleware anew for every request, and even built
 * once, helmet sets its headers through a chain of middlewares on every request
 * (measured in bench/). With static options (no per-request CSP nonces) the headers
 * are the same for every response, so helmet runs once at start-up against a
 * recording response, and each request gets the recorded set in one step. Helmet is
 * run twice to prove the headers static.
 */
import type { ServerResponse } from 'node:http';
import type { onRequestHookHandler } from 'fastify';
import fp from 'fastify-plugin';
import helmet, { type HelmetOptions } from 'helmet';

export type Headers = Record<string, string>;

export interface SecurityHeadersOptions {
  /** Every answer but the documents' (`staticHeaders` of helmet's options, and any of our own). */
  api: Headers;
  /**
   * The documents a browser renders: the routes whose pattern is `prefix` or starts with
   * `prefix/`, chosen by the route matched (never by the raw URL, which may spell the
   * prefix in %-escapes). Registered before those routes.
   */
  documents?: { headers: Headers; prefix: string };
}

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

/** Helmet's headers for `options`, refused when they would differ between two responses. */
export function staticHeaders(options: HelmetOptions): Headers {
  const apply = helmet(options);
  const headers = recordHeaders(apply);
  if (JSON.stringify(recordHeaders(apply)) !== JSON.stringify(headers))
    throw new Error('security headers: helmet options that vary per response are not supported here');
  return headers;
}

/** Whether the route pattern `url` is `prefix` or under `prefix/`. */
export function underPrefix(url: string, prefix: string): boolean {
  return url === prefix || url.startsWith(`${prefix}/`);
}

/**
 * Every answer gets the API's headers from the first onRequest hook, so even an answer
 * that a later hook gives at once (load shedding, shutdown, authentication) has them;
 * the documents' routes replace them with theirs in a hook of their own.
 */
export const securityHeaders = fp<SecurityHeadersOptions>(
  async (app, { api, documents }) => {
    app.addHook('onRequest', (_request, reply, done) => {
      reply.headers(api);
      done();
    });
    if (documents === undefined) return;
    const { headers, prefix } = documents;
    const apiOnly = Object.keys(api).filter((name) => !(name in headers));
    const forDocuments: onRequestHookHandler = (_request, reply, done) => {
      for (const name of apiOnly) reply.removeHeader(name);
      reply.headers(headers);
      done();
    };
    app.addHook('onRoute', (route) => {
      if (!underPrefix(route.url, prefix)) return;
      const own = route.onRequest;
      route.onRequest = own === undefined ? [forDocuments] : [...[own].flat(), forDocuments];
    });
  },
  { name: 'security-headers' },
);
