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
import fp from 'fastify-plugin';
import helmet, { type HelmetOptions } from 'helmet';

export type Headers = Record<string, string>;

export interface SecurityHeadersOptions {
  /** Every answer but the documents' (`staticHeaders` of helmet's options, and any of our own). */
  api: Headers;
  /** The documents a browser renders: paths that are `prefix` or start with `prefix/`. */
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

/** Whether the request target `url` (path and query) is `prefix` or under `prefix/`. */
export function underPrefix(url: string, prefix: string): boolean {
  if (!url.startsWith(prefix)) return false;
  const next = url.charCodeAt(prefix.length);
  // end of the URL, '/', '?' or '#'
  return Number.isNaN(next) || next === 47 || next === 63 || next === 35;
}

export const securityHeaders = fp<SecurityHeadersOptions>(
  async (app, { api, documents }) => {
    if (documents === undefined) {
      app.addHook('onRequest', (_request, reply, done) => {
        reply.headers(api);
        done();
      });
      return;
    }
    const { headers, prefix } = documents;
    app.addHook('onRequest', (request, reply, done) => {
      reply.headers(underPrefix(request.url, prefix) ? headers : api);
      done();
    });
  },
  { name: 'security-headers' },
);
