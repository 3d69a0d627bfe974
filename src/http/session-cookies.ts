/**
 * Browser sessions: the bearer token in an HttpOnly cookie, and the CSRF defence
 * that a cookie needs (README, "Web front ends").
 *
 * CSRF: a signed double-submit. The CSRF token is HMAC-SHA256(session token,
 * "dc_csrf"): the `dc_csrf` cookie (readable by scripts of the same host) and the
 * `csrf_token` of the sign-in answer (for a front end on another host) carry it,
 * and a cookie-authenticated POST, PUT, PATCH or DELETE must send it back in
 * `X-CSRF-Token`. Another site can make a browser send the cookies but can neither
 * read them nor set that header; and since the token is bound to the session, a
 * `dc_csrf` cookie planted by a sibling subdomain does not match either. Checking it
 * costs one HMAC and no query. Requests with `Authorization: Bearer` need no token:
 * a browser never adds that header on its own.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { CookieSerializeOptions } from '@fastify/cookie';
import type { FastifyReply, FastifyRequest } from 'fastify';

export const SESSION_COOKIE = 'dc_session';
export const CSRF_COOKIE = 'dc_csrf';
export const CSRF_HEADER = 'x-csrf-token';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The CSRF token of a session: derived from its token, so nothing is stored. */
export function csrfTokenFor(sessionToken: string): string {
  return createHmac('sha256', sessionToken).update('dc_csrf').digest('base64url');
}

/** Whether a cookie-authenticated request carries the CSRF token its session needs. */
export function csrfSatisfied(request: FastifyRequest, sessionToken: string): boolean {
  if (SAFE_METHODS.has(request.method)) return true;
  const sent = request.headers[CSRF_HEADER];
  if (typeof sent !== 'string') return false;
  const expected = Buffer.from(csrfTokenFor(sessionToken));
  const given = Buffer.from(sent);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function baseOptions(request: FastifyRequest): CookieSerializeOptions {
  // request.protocol follows X-Forwarded-Proto only with TRUST_PROXY.
  return { path: '/', sameSite: 'lax', secure: request.protocol === 'https' };
}

/** Sets the session cookie and the readable CSRF cookie; both expire with the token. */
export function setSessionCookies(
  request: FastifyRequest,
  reply: FastifyReply,
  session: { token: string; expires_at: Date },
): string {
  const csrf = csrfTokenFor(session.token);
  const options = { ...baseOptions(request), expires: session.expires_at };
  reply.setCookie(SESSION_COOKIE, session.token, { ...options, httpOnly: true });
  reply.setCookie(CSRF_COOKIE, csrf, { ...options, httpOnly: false });
  return csrf;
}

/** Clears both cookies (logout). */
export function clearSessionCookies(request: FastifyRequest, reply: FastifyReply): void {
  reply.clearCookie(SESSION_COOKIE, { ...baseOptions(request), httpOnly: true });
  reply.clearCookie(CSRF_COOKIE, baseOptions(request));
}
