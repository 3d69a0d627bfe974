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
  if (!TOKEN_PATTERN.test(token)) return null;
  // One-shot hash: on every authenticated request, ~1 µs cheaper than createHash().update().digest().
  return hash('sha256', token, 'buffer');
}
