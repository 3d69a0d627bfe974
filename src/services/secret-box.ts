/**
 * Encryption at rest for third-party secrets (IBKR tokens): AES-256-GCM with a
 * random 96-bit nonce per value. The additional data binds a ciphertext to its
 * row and field, so a value copied to another user or column does not decrypt.
 * Stored as text `v1:<base64url(nonce | tag | ciphertext)>`; the version leaves
 * room to rotate keys.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

const VERSION = 'v1';

export class SecretBox {
  private readonly key: Buffer;

  /** `key` is 32 bytes, base64 (IBKR_TOKEN_KEY). */
  constructor(keyBase64: string) {
    this.key = Buffer.from(keyBase64, 'base64');
    if (this.key.length !== 32) throw new Error('the encryption key must be 32 bytes');
  }

  /**
   * A key for development only, derived from a fixed string: values stay readable
   * across restarts of a local setup, and are worthless as secrets.
   * config.ts refuses to start in production without a real key.
   */
  static development(): SecretBox {
    return new SecretBox(createHash('sha256').update('dollarclub insecure development key').digest('base64'));
  }

  encrypt(plaintext: string, context: string): string {
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, nonce);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return `${VERSION}:${Buffer.concat([nonce, cipher.getAuthTag(), body]).toString('base64url')}`;
  }

  /** Throws when the value was not made by this key for this context. */
  decrypt(stored: string, context: string): string {
    const [version, data] = stored.split(':');
    if (version !== VERSION || data === undefined) throw new Error('unknown secret format');
    const raw = Buffer.from(data, 'base64url');
    // authTagLength: without it Node accepts a tag cut to 4 bytes, which is forgeable.
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, 12), { authTagLength: 16 });
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(raw.subarray(12, 28));
    return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
  }
}
