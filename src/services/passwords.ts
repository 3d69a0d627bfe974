/**
 * Password hashing: argon2id with OWASP's minimum parameters (m = 19 MiB, t = 2,
 * p = 1), computed off the event loop by @node-rs/argon2.
 */
import { hash, verify } from '@node-rs/argon2';

// Algorithm.Argon2id; the package's enum is an ambient const enum, unusable with isolatedModules.
const ARGON2ID = 2;
const OPTIONS = { algorithm: ARGON2ID, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;

export function hashPassword(password: string): Promise<string> {
  return hash(password, OPTIONS);
}

/** A hash of a random password, verified when the account does not exist so both paths cost the same. */
let dummy: Promise<string> | undefined;

/**
 * True when `password` matches `hashed`. With `hashed` null (no such user, or no
 * password), a dummy hash is verified anyway and false returned, so response time
 * does not tell whether an email is registered.
 */
export async function verifyPassword(hashed: string | null, password: string): Promise<boolean> {
  if (hashed === null) {
    dummy ??= hashPassword(`dummy-${Math.random()}`);
    await verify(await dummy, password).catch(() => false);
    return false;
  }
  try {
    return await verify(hashed, password);
  } catch {
    return false; // a malformed stored hash never signs anyone in
  }
}
