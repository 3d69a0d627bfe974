import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import t from 'tap';
import { fingerprint, parseKeyring, SecretBox } from '../../src/services/secret-box.ts';

const key = () => randomBytes(32).toString('base64');
const CONTEXT = 'users/1/ibkr_access_token';

/** The stored text's bytes after `v2:<kid>:`: nonce (12) | tag (16) | ciphertext. */
function raw(stored: string): Buffer {
  return Buffer.from(stored.slice(stored.lastIndexOf(':') + 1), 'base64url');
}
let prefix = '';
function pack(bytes: Buffer): string {
  return `${prefix}${bytes.toString('base64url')}`;
}

/** A value as the first version stored it: `v1:` and no key id. */
function encryptV1(keyBytes: Buffer, text: string, context: string): string {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', keyBytes, nonce);
  cipher.setAAD(Buffer.from(context));
  const body = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()]);
  return `v1:${Buffer.concat([nonce, cipher.getAuthTag(), body]).toString('base64url')}`;
}

t.test('encrypt then decrypt gives the plaintext back', async (t) => {
  const box = new SecretBox(key());
  for (const text of ['ibkr-token', '', 'ü ✓ 📈 漢字', 'x'.repeat(10_000)]) {
    const stored = box.encrypt(text, CONTEXT);
    t.match(stored, /^v2:k[0-9a-f]{12}:[A-Za-z0-9_-]+$/, 'versioned, with the key id, base64url text');
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
  prefix = stored.slice(0, stored.lastIndexOf(':') + 1);
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
  t.throws(() => box.decrypt(stored.replace(/^v2:/, 'v3:'), CONTEXT), 'an unknown version');
  t.throws(() => box.decrypt(stored.replace(/^v2:/, 'v1:'), CONTEXT), 'another version');
  t.throws(() => box.decrypt(stored.slice(3), CONTEXT), 'no version');
  t.throws(() => box.decrypt(stored.replace(/^v2:k/, 'v2:x'), CONTEXT), { message: /not in the keyring/ });
  t.throws(() => box.decrypt('', CONTEXT), 'nothing');
  t.equal(box.decrypt(stored, CONTEXT), 'a secret token', 'the original still decrypts');
});

t.test('a value whose tag is cut short never decrypts, even to an empty string', async (t) => {
  const box = new SecretBox(key());
  const empty = box.encrypt('', CONTEXT);
  prefix = empty.slice(0, empty.lastIndexOf(':') + 1);
  const bytes = raw(empty);
  t.equal(bytes.length, 28, 'an empty plaintext is nonce and tag only');
  for (const tagLength of [4, 8, 12, 15])
    t.throws(() => box.decrypt(pack(bytes.subarray(0, 12 + tagLength)), CONTEXT), `a ${tagLength}-byte tag`);
});

t.test('a value does not decrypt with another key', async (t) => {
  const stored = new SecretBox(key()).encrypt('secret', CONTEXT);
  t.throws(() => new SecretBox(key()).decrypt(stored, CONTEXT));
});

t.test('a keyring encrypts with its newest key and decrypts with any of its keys', async (t) => {
  const [oldKey, newKey] = [key(), key()];
  const before = new SecretBox([{ kid: 'old', key: oldKey }]);
  const written = before.encrypt('token', CONTEXT);
  t.match(written, /^v2:old:/);
  const ring = new SecretBox([
    { kid: 'new', key: newKey },
    { kid: 'old', key: oldKey },
  ]);
  t.equal(ring.kid, 'new');
  t.same(ring.kids, ['new', 'old']);
  t.equal(ring.decrypt(written, CONTEXT), 'token', 'an old key still decrypts');
  t.notOk(ring.isCurrent(written));
  const rewritten = ring.encrypt('token', CONTEXT);
  t.match(rewritten, /^v2:new:/);
  t.ok(ring.isCurrent(rewritten));
  t.throws(() => before.decrypt(rewritten, CONTEXT), { message: /"new" is not in the keyring/ });
  t.throws(
    () => new SecretBox([{ kid: 'old', key: newKey }]).decrypt(written, CONTEXT),
    'the right id with the wrong key does not decrypt',
  );
  t.equal(new SecretBox(newKey).kid, fingerprint(newKey), 'a lone key is named by its fingerprint');
  t.not(fingerprint(newKey), fingerprint(oldKey));
});

t.test('values of the first format (v1, no key id) still decrypt, and are never written', async (t) => {
  const k = key();
  const v1 = encryptV1(Buffer.from(k, 'base64'), 'from before', CONTEXT);
  const ring = new SecretBox([
    { kid: 'newest', key: key() },
    { kid: 'former', key: k },
  ]);
  t.equal(ring.decrypt(v1, CONTEXT), 'from before', 'with whichever key of the ring made it');
  t.notOk(ring.isCurrent(v1));
  t.throws(() => ring.decrypt(v1, 'users/2/ibkr_access_token'), 'the context still binds it');
  t.throws(() => new SecretBox(key()).decrypt(v1, CONTEXT), { message: /no key of the keyring/ });
  // What an earlier version wrote without any key: readable so that rotation can replace it.
  const legacy = createHash('sha256').update('dollarclub insecure development key').digest();
  const unsafe = encryptV1(legacy, 'dev token', CONTEXT);
  t.equal(new SecretBox(key()).decrypt(unsafe, CONTEXT), 'dev token');
  const box = new SecretBox(key());
  for (let i = 0; i < 20; i++) t.match(box.encrypt('x', CONTEXT), /^v2:/, 'only v2 is written');
});

t.test('IBKR_TOKEN_KEYS is kid:key pairs, newest first', async (t) => {
  const [a, b] = [key(), key()];
  t.same(parseKeyring(` k2:${b} , k1:${a}`), [
    { kid: 'k2', key: b },
    { kid: 'k1', key: a },
  ]);
  for (const [bad, message] of [
    ['', /no key/],
    [a, /entry 1: expected kid:base64key/],
    [`k1:${a},k1:${b}`, /twice/],
    ['k1:short', /entry 1 \(k1\): the key must be 32 bytes/],
    [`bad kid:${a}`, /entry 1/],
  ] as const)
    t.throws(() => parseKeyring(bad), { message }, bad);
  t.notMatch(
    (() => {
      try {
        parseKeyring(`k1:${a},k2:tooshort`);
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })(),
    a,
    'errors never show a key',
  );
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
