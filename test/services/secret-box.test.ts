import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import t from 'tap';
import { SecretBox } from '../../src/services/secret-box.js';

const key = () => randomBytes(32).toString('base64');
const CONTEXT = 'users/1/ibkr_access_token';

/** The stored text's bytes after `v1:`: nonce (12) | tag (16) | ciphertext. */
function raw(stored: string): Buffer {
  return Buffer.from(stored.slice('v1:'.length), 'base64url');
}
function pack(bytes: Buffer): string {
  return `v1:${bytes.toString('base64url')}`;
}

t.test('encrypt then decrypt gives the plaintext back', async (t) => {
  const box = new SecretBox(key());
  for (const text of ['ibkr-token', '', 'ü ✓ 📈 漢字', 'x'.repeat(10_000)]) {
    const stored = box.encrypt(text, CONTEXT);
    t.match(stored, /^v1:[A-Za-z0-9_-]+$/, 'versioned base64url text');
    t.notMatch(stored, text === '' ? /^$/ : text.slice(0, 20), 'the plaintext does not show');
    t.equal(box.decrypt(stored, CONTEXT), text);
  }
  fc.assert(
    fc.property(
      fc.string({ unit: 'grapheme', maxLength: 200 }),
      fc.string({ maxLength: 50 }),
      (text, context) => {
        return box.decrypt(box.encrypt(text, context), context) === text;
      },
    ),
    { numRuns: 300 },
  );
});

t.test('the same plaintext encrypts differently every time (random nonce)', async (t) => {
  const box = new SecretBox(key());
  const a = box.encrypt('same', CONTEXT);
  const b = box.encrypt('same', CONTEXT);
  t.not(a, b);
  t.notOk(raw(a).subarray(0, 12).equals(raw(b).subarray(0, 12)), 'different nonces');
  t.equal(box.decrypt(a, CONTEXT), 'same');
  t.equal(box.decrypt(b, CONTEXT), 'same');
  const nonces = new Set(
    Array.from({ length: 200 }, () => raw(box.encrypt('x', CONTEXT)).subarray(0, 12).toString('hex')),
  );
  t.equal(nonces.size, 200);
});

t.test('a value does not decrypt under another context', async (t) => {
  const box = new SecretBox(key());
  const stored = box.encrypt('secret', 'users/1/ibkr_access_token');
  for (const other of [
    'users/2/ibkr_access_token',
    'users/1/ibkr_refresh_token',
    '',
    'users/1/ibkr_access_token ',
  ])
    t.throws(() => box.decrypt(stored, other), JSON.stringify(other));
});

t.test('a tampered value does not decrypt', async (t) => {
  const box = new SecretBox(key());
  const stored = box.encrypt('a secret token', CONTEXT);
  const bytes = raw(stored);
  const flip = (at: number) => {
    const copy = Buffer.from(bytes);
    copy[at] = (copy[at] as number) ^ 0x01;
    return pack(copy);
  };
  t.throws(() => box.decrypt(flip(0), CONTEXT), 'a changed nonce');
  t.throws(() => box.decrypt(flip(12), CONTEXT), 'a changed tag');
  t.throws(() => box.decrypt(flip(27), CONTEXT), 'a changed tag (last byte)');
  t.throws(() => box.decrypt(flip(28), CONTEXT), 'a changed ciphertext');
  t.throws(() => box.decrypt(flip(bytes.length - 1), CONTEXT), 'a changed last byte');
  t.throws(() => box.decrypt(pack(bytes.subarray(0, bytes.length - 1)), CONTEXT), 'a cut-off ciphertext');
  t.throws(() => box.decrypt(pack(Buffer.concat([bytes, Buffer.from([0])])), CONTEXT), 'an extra byte');
  t.throws(() => box.decrypt(pack(bytes.subarray(0, 20)), CONTEXT), 'a truncated tag');
  t.throws(() => box.decrypt(pack(bytes.subarray(0, 12)), CONTEXT), 'no tag at all');
  t.throws(() => box.decrypt(stored.replace(/^v1:/, 'v2:'), CONTEXT), 'an unknown version');
  t.throws(() => box.decrypt(stored.slice(3), CONTEXT), 'no version');
  t.throws(() => box.decrypt('', CONTEXT), 'nothing');
  t.equal(box.decrypt(stored, CONTEXT), 'a secret token', 'the original still decrypts');
});

t.test('a value whose tag is cut short never decrypts, even to an empty string', async (t) => {
  const box = new SecretBox(key());
  const bytes = raw(box.encrypt('', CONTEXT));
  t.equal(bytes.length, 28, 'an empty plaintext is nonce and tag only');
  for (const tagLength of [4, 8, 12, 15])
    t.throws(() => box.decrypt(pack(bytes.subarray(0, 12 + tagLength)), CONTEXT), `a ${tagLength}-byte tag`);
});

t.test('a value does not decrypt with another key', async (t) => {
  const stored = new SecretBox(key()).encrypt('secret', CONTEXT);
  t.throws(() => new SecretBox(key()).decrypt(stored, CONTEXT));
  t.throws(() => SecretBox.development().decrypt(stored, CONTEXT));
});

t.test('the development key is the same in every instance', async (t) => {
  const stored = SecretBox.development().encrypt('dev', CONTEXT);
  t.equal(SecretBox.development().decrypt(stored, CONTEXT), 'dev');
});

t.test('a key that is not 32 bytes is refused', async (t) => {
  for (const [label, bad] of [
    ['16 bytes', randomBytes(16).toString('base64')],
    ['31 bytes', randomBytes(31).toString('base64')],
    ['33 bytes', randomBytes(33).toString('base64')],
    ['64 bytes', randomBytes(64).toString('base64')],
    ['empty', ''],
    ['not base64', '!!!!'],
  ] as const) {
    t.throws(() => new SecretBox(bad), { message: /32 bytes/ }, label);
  }
  t.doesNotThrow(() => new SecretBox(key()));
});
