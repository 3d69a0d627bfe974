/**
 * Password hashing: argon2id with OWASP's minimum parameters (m = 19 MiB, t = 2,
 * p = 1), computed off the event loop by @node-rs/argon2. bcrypt hashes imported
 * from the original platform (import-legacy) are verified too, by @node-rs/bcrypt,
 * and replaced by argon2id at the first successful sign-in (`isLegacyHash`).
 */
import { createHash } from 'node:crypto';
import { hash, verify } from '@node-rs/argon2';
import { verify as verifyBcrypt } from '@node-rs/bcrypt';

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
    if (isLegacyHash(hashed)) return await verifyBcrypt(legacyBcryptInput(password), hashed);
    return await verify(hashed, password);
  } catch {
    return false; // a malformed stored hash never signs anyone in
  }
}

const BCRYPT = /^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/;

/** A bcrypt hash from the original platform: verify it, then replace it with argon2id. */
export function isLegacyHash(hashed: string): boolean {
  return BCRYPT.test(hashed);
}

/**
 * What the original platform gave bcrypt (LEGACY.md): the password's UTF-8 bytes, or,
 * past bcrypt's 72-byte limit, the 32 raw bytes of their SHA-256.
 */
export function legacyBcryptInput(password: string): Buffer {
  const bytes = Buffer.from(password, 'utf8');
  return bytes.length > 72 ? createHash('sha256').update(bytes).digest() : bytes;
}
