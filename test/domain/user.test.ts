import fc from 'fast-check';
import t from 'tap';
import { ValidationError } from '../../src/domain/errors.ts';
import { normalizeEmail, passwordProblem, usernameProblem } from '../../src/domain/user.ts';

t.test('normalizeEmail trims and lower-cases, and refuses what is not an address', async (t) => {
  t.equal(normalizeEmail('  Bob@Example.ORG\t'), 'bob@example.org');
  for (const bad of [
    '',
    '   ',
    'bob',
    'bob@',
    '@x.org',
    'a b@c.de',
    'a@b',
    'a@@b.c',
    `${'a'.repeat(250)}@x.org`,
  ]) {
    t.throws(() => normalizeEmail(bad), ValidationError, JSON.stringify(bad));
  }
});

t.test('usernames are 3-100 of letters, digits, underscore, hyphen', async (t) => {
  t.equal(usernameProblem('abc'), null);
  t.equal(usernameProblem('A_b-9'.repeat(20)), null);
  for (const bad of ['ab', 'a'.repeat(101), 'a b', 'ab!', 'ünï', 'a\nb'])
    t.type(usernameProblem(bad), 'string', bad);
  fc.assert(
    fc.property(
      fc.string({ maxLength: 120 }),
      (s) => (usernameProblem(s) === null) === /^[A-Za-z0-9_-]{3,100}$/.test(s),
    ),
    { numRuns: 2000 },
  );
});

t.test('passwords are 8-256 characters, counted as people count them', async (t) => {
  t.equal(passwordProblem('12345678'), null);
  t.type(passwordProblem('1234567'), 'string');
  t.equal(passwordProblem('📈'.repeat(8)), null, '8 emoji are 8 characters');
  t.equal(passwordProblem('x'.repeat(256)), null);
  t.type(passwordProblem('x'.repeat(257)), 'string');
});
