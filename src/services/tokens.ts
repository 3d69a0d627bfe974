/** Bearer tokens: 256 random bits, shown once, stored only as a SHA-256. */
import { hash, randomBytes } from 'node:crypto';

// The prefix lets secret scanners recognise a leaked token.
const PREFIX = 'dc_';
const TOKEN_PATTERN = /^dc_[A-Za-z0-9_-]{43}$/;

export function newToken(): string {
  return PREFIX + randomBytes(32).toString('base64url');
}

/** The stored form of a token; null for anything that cannot be one of ours. */
export function tokenHash(token: string): Buffer | null {
  const key = tokenKey(token);
  return key === null ? null : hashOfKey(key);
}

/**
 * The token's SHA-256 as base64: what the auth cache is keyed by, made on every
 * authenticated request. One native call straight to the string (a Buffer then
 * `toString('base64')` cost ~2x as much in the HTTP bench's profile); null for anything
 * that cannot be one of ours.
 */
export function tokenKey(token: string): string | null {
  if (!TOKEN_PATTERN.test(token)) return null;
  return hash('sha256', token, 'base64');
}

/** The stored form (`api_tokens.token_hash`) of a `tokenKey`. */
export function hashOfKey(key: string): Buffer {
  return Buffer.from(key, 'base64');
}
