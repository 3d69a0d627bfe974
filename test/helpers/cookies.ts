/**
 * The cookies of an answer, and the one check of a browser session every
 * `cookie: true` sign-in (register, password, Google) must pass: what
 * src/http/session-cookies.ts sets, compared with the token row it stands for.
 */
import type { LightMyRequestResponse } from 'fastify';
import type { Test } from 'tap';
import type { Sql } from '../../src/db/client.ts';
import { csrfTokenFor } from '../../src/http/session-cookies.ts';
import { tokenHash } from '../../src/services/tokens.ts';

export interface Cookie {
  name: string;
  value: string;
  /** Attribute names lower-cased; a flag (HttpOnly) has the value ''. */
  attributes: Map<string, string>;
}

/** The Set-Cookie lines of an answer, by cookie name. */
export function cookiesOf(setCookie: string | string[] | undefined): Map<string, Cookie> {
  const cookies = new Map<string, Cookie>();
  for (const line of [setCookie ?? []].flat()) {
    const [pair, ...attrs] = line.split(';').map((p) => p.trim());
    const [name, value] = [pair!.slice(0, pair!.indexOf('=')), pair!.slice(pair!.indexOf('=') + 1)];
    const attributes = new Map<string, string>();
    for (const attr of attrs) {
      const at = attr.indexOf('=');
      attributes.set((at < 0 ? attr : attr.slice(0, at)).toLowerCase(), at < 0 ? '' : attr.slice(at + 1));
    }
    cookies.set(name, { name, value, attributes });
  }
  return cookies;
}

/**
 * Asserts that `res`, a sign-in answered with `cookie: true` over plain HTTP, started a
 * browser session: no token in the body but the CSRF token; `dc_session` HttpOnly,
 * SameSite=Lax, Path=/, not Secure, holding a live token of the answer's user and
 * expiring with it; `dc_csrf` readable, with the same attributes and expiry, holding
 * the session's CSRF token. Returns both values.
 */
export async function assertSessionCookies(
  t: Test,
  res: LightMyRequestResponse,
  sql: Sql,
): Promise<{ session: string; csrf: string }> {
  const body = res.json();
  t.same(Object.keys(body).sort(), ['csrf_token', 'user'], 'the body holds no token');
  t.equal(res.headers['cache-control'], 'no-store');
  const cookies = cookiesOf(res.headers['set-cookie']);
  t.same([...cookies.keys()].sort(), ['dc_csrf', 'dc_session'], 'both cookies, nothing else');
  const session = cookies.get('dc_session');
  const csrf = cookies.get('dc_csrf');
  if (session === undefined || csrf === undefined) return { session: '', csrf: '' };
  t.match(session.value, /^dc_[A-Za-z0-9_-]{43}$/);
  t.ok(session.attributes.has('httponly'), 'session cookie is HttpOnly');
  t.notOk(csrf.attributes.has('httponly'), 'CSRF cookie is readable by scripts');
  for (const cookie of [session, csrf]) {
    t.equal(cookie.attributes.get('samesite'), 'Lax', `${cookie.name}: SameSite=Lax`);
    t.equal(cookie.attributes.get('path'), '/', `${cookie.name}: Path=/`);
    t.notOk(cookie.attributes.has('secure'), `${cookie.name}: no Secure over plain HTTP`);
  }
  t.equal(csrf.value, body.csrf_token, 'the CSRF cookie is the csrf_token of the answer');
  t.equal(csrf.value, csrfTokenFor(session.value), 'bound to the session');
  const [token] = await sql<{ user_id: number; expires_at: Date; revoked_at: Date | null }[]>`
    select user_id, expires_at, revoked_at from api_tokens where token_hash = ${tokenHash(session.value)}
  `;
  t.match(token, { user_id: body.user.id, revoked_at: null }, 'the cookie holds a live token of this user');
  // Expires has whole seconds.
  const expires = new Date(session.attributes.get('expires') ?? '').getTime();
  t.ok(Math.abs(expires - (token?.expires_at.getTime() ?? 0)) < 1000, 'the cookie expires with the token');
  t.equal(csrf.attributes.get('expires'), session.attributes.get('expires'), 'both expire together');
  return { session: session.value, csrf: csrf.value };
}
