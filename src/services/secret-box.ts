/**
 * Encryption at rest for third-party secrets (IBKR tokens): AES-256-GCM with a
 * random 96-bit nonce per value. The additional data binds a ciphertext to its
 * row and field, so a value copied to another user or column does not decrypt.
 *
 * Keys have ids and live in a keyring, newest first: new values are encrypted with
 * the newest and stored as `v2:<kid>:<base64url(nonce | tag | ciphertext)>`, so the
 * key of any stored value is known and old keys keep decrypting until
 * `rotate-ibkr-key` has re-encrypted everything (src/services/ibkr-key-rotation.ts).
 * Values of the first format, `v1:<…>` (no key id), still decrypt with any key of
 * the ring, or with the development key earlier versions used without a key, so
 * they can be rotated; nothing is ever encrypted with that key again.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/** A key id: letters, digits, `_` and `-`. */
export const KID_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;

export interface KeyringEntry {
  kid: string;
  /** 32 bytes, base64. */
  key: string;
}

/**
 * The key earlier versions derived from a published string when no key was set:
 * only for reading `v1` values written then (they are no secret from anyone who
 * reads the source; rotating re-encrypts them under a real key).
 */
const LEGACY_V1_KEY = createHash('sha256').update('dollarclub insecure development key').digest();

function decodeKey(base64: string): Buffer {
  const key = Buffer.from(base64, 'base64');
  if (key.length !== 32 || key.toString('base64') !== base64)
    throw new Error('the encryption key must be 32 bytes, base64');
  return key;
}

/** The id a key gets when none is given (IBKR_TOKEN_KEY, the key file): a fingerprint of it. */
export function fingerprint(base64: string): string {
  return `k${createHash('sha256').update(decodeKey(base64)).digest('hex').slice(0, 12)}`;
}

/** `kid:base64key,kid:base64key` (newest first), as IBKR_TOKEN_KEYS holds it; throws on a bad entry. */
export function parseKeyring(text: string): KeyringEntry[] {
  const entries = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((entry, i) => {
      const at = entry.indexOf(':');
      const kid = at < 0 ? '' : entry.slice(0, at);
      const key = at < 0 ? '' : entry.slice(at + 1);
      if (!KID_PATTERN.test(kid))
        throw new Error(`entry ${i + 1}: expected kid:base64key with a kid of [A-Za-z0-9_-]`);
      try {
        decodeKey(key);
      } catch {
        throw new Error(`entry ${i + 1} (${kid}): the key must be 32 bytes, base64`);
      }
      return { kid, key };
    });
  if (entries.length === 0) throw new Error('no key');
  const kids = new Set(entries.map((e) => e.kid));
  if (kids.size !== entries.length) throw new Error('a kid appears twice');
  return entries;
}

export class SecretBox {
  /** The id of the key new values are encrypted with. */
  readonly kid: string;
  private readonly keys: Map<string, Buffer>;

  /** A keyring (newest first), or one key (base64) whose id is its fingerprint. */
  constructor(keyring: string | readonly KeyringEntry[]) {
    const entries = typeof keyring === 'string' ? [{ kid: fingerprint(keyring), key: keyring }] : keyring;
    if (entries.length === 0) throw new Error('the keyring is empty');
    this.keys = new Map();
    for (const { kid, key } of entries) {
      if (!KID_PATTERN.test(kid)) throw new Error(`bad key id ${JSON.stringify(kid)}`);
      if (!this.keys.has(kid)) this.keys.set(kid, decodeKey(key));
    }
    this.kid = entries[0]!.kid;
  }

  /** Key ids of the ring, newest first. */
  get kids(): string[] {
    return [...this.keys.keys()];
  }

  /** Whether `stored` was encrypted with the newest key (else `rotate-ibkr-key` re-encrypts it). */
  isCurrent(stored: string): boolean {
    return stored.startsWith(`v2:${this.kid}:`);
  }

  encrypt(plaintext: string, context: string): string {
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.keys.get(this.kid)!, nonce);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return `v2:${this.kid}:${Buffer.concat([nonce, cipher.getAuthTag(), body]).toString('base64url')}`;
  }

  /** Throws when the value was not made by a key of this ring for this context. */
  decrypt(stored: string, context: string): string {
    const parts = stored.split(':');
    if (parts[0] === 'v2' && parts.length === 3) {
      const key = this.keys.get(parts[1]!);
      if (key === undefined) throw new Error(`the key ${JSON.stringify(parts[1])} is not in the keyring`);
      return open(key, parts[2]!, context);
    }
    if (parts[0] === 'v1' && parts.length === 2) {
      for (const key of [...this.keys.values(), LEGACY_V1_KEY]) {
        try {
          return open(key, parts[1]!, context);
        } catch {
          // not this key
        }
      }
      throw new Error('no key of the keyring decrypts this value');
    }
    throw new Error('unknown secret format');
  }
}

function open(key: Buffer, data: string, context: string): string {
  const raw = Buffer.from(data, 'base64url');
  // authTagLength: without it Node accepts a tag cut to 4 bytes, which is forgeable.
  const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12), { authTagLength: 16 });
  decipher.setAAD(Buffer.from(context));
  decipher.setAuthTag(raw.subarray(12, 28));
  return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
}
