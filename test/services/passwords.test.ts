/**
 * Password hashes: argon2id with OWASP's parameters; a missing or malformed stored
 * hash never signs anyone in; bcrypt hashes of the original platform verify with its
 * input rule (the UTF-8 bytes, or their SHA-256 past 72 bytes).
 */
import { createHash } from 'node:crypto';
import { hash as bcryptRs } from '@node-rs/bcrypt';
import bcryptjs from 'bcryptjs';
import t from 'tap';
import {
  hashPassword,
  isLegacyHash,
  legacyBcryptInput,
  verifyPassword,
} from '../../src/services/passwords.ts';

t.test(
  'hashPassword makes an argon2id hash with m=19456, t=2, p=1 that verifies only its password',
  async (t) => {
    const hashed = await hashPassword('correct horse battery');
    t.match(hashed, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    t.not(
      await hashPassword('correct horse battery'),
      hashed,
      'salted: the same password hashes differently',
    );
    t.equal(await verifyPassword(hashed, 'correct horse battery'), true);
    t.equal(await verifyPassword(hashed, 'correct horse batterY'), false);
    t.equal(isLegacyHash(hashed), false, 'argon2id is not a legacy hash');
  },
);

t.test('no stored hash (no such account, or a Google one) never verifies', async (t) => {
  t.equal(await verifyPassword(null, 'anything'), false);
  t.equal(await verifyPassword(null, ''), false, 'the dummy hash is reused, and still false');
});

t.test('a malformed stored hash never verifies, and does not throw', async (t) => {
  for (const stored of ['', 'plain text', '$argon2id$v=19$m=19456,t=2,p=1$bm9wZQ$', '$2b$04$tooshort'])
    t.equal(await verifyPassword(stored, 'plain text'), false, JSON.stringify(stored));
});

t.test('a bcrypt hash from the original platform verifies its password', async (t) => {
  for (const prefix of ['$2a$', '$2b$', '$2y$']) {
    const hashed = bcryptjs.hashSync('legacy password', 4).replace(/^\$2[aby]\$/, prefix);
    t.equal(isLegacyHash(hashed), true, `${prefix} is a legacy hash`);
    t.equal(await verifyPassword(hashed, 'legacy password'), true, `${prefix} verifies`);
    t.equal(await verifyPassword(hashed, 'legacy passwore'), false, `${prefix} refuses another password`);
  }
  const body = '04$abcdefghijklmnopqrstuv0123456789abcdefghijklmnopqrstu';
  t.equal(isLegacyHash(`$2b$${body}`), true, 'the shape alone makes a legacy hash');
  t.equal(isLegacyHash(`$2x$${body}`), false, '$2x$ (the buggy variant) is not one of ours');
  t.equal(isLegacyHash(`$2b$${body}x`), false, 'nor is a longer string');
});

t.test('legacyBcryptInput: the UTF-8 bytes up to 72, their SHA-256 beyond', async (t) => {
  const euro72 = '€'.repeat(24); // 3 bytes each: 72 bytes
  t.same(legacyBcryptInput(euro72), Buffer.from(euro72, 'utf8'), '72 bytes are kept as they are');
  const euro75 = '€'.repeat(25);
  t.same(
    legacyBcryptInput(euro75),
    createHash('sha256').update(euro75, 'utf8').digest(),
    '75 bytes (25 characters) are pre-hashed: bytes count, not characters',
  );
  t.equal(legacyBcryptInput('x'.repeat(73)).length, 32);
});

t.test('a password past 72 bytes verifies against the hash of its SHA-256, not of its prefix', async (t) => {
  const long = `${'a long passphrase '.repeat(5)}end`; // 93 bytes
  const prehashed = await bcryptRs(createHash('sha256').update(long).digest(), 4);
  t.equal(await verifyPassword(prehashed, long), true);
  t.equal(await verifyPassword(prehashed, `${long}!`), false, 'bytes past 72 count');
  const truncated = await bcryptRs(Buffer.from(long).subarray(0, 72), 4);
  t.equal(await verifyPassword(truncated, long), false, 'bcrypt’s own 72-byte cut is not the rule');
});
