/**
 * Where the IBKR keyring comes from, beyond what test/services/ibkr-keys.test.ts
 * covers: a single IBKR_TOKEN_KEY and its id, a key file that cannot be read or is
 * not `kid:key`, and production without a configured key.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { fingerprint, SecretBox } from '../../src/services/secret-box.ts';
import { configuredKeys, KeyFileError, keyFileOf, loadSecretBox } from '../../src/services/secret-keys.ts';
import { captureLogger } from '../helpers/log-capture.ts';

const key = () => randomBytes(32).toString('base64');

async function folder(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-secret-keys-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The keys part of Config, as loadSecretBox reads it. */
function keyConfig(fields: {
  file: string;
  keys?: string;
  key?: string;
  env?: 'development' | 'test' | 'production';
}) {
  return {
    IBKR_TOKEN_KEYS: fields.keys,
    IBKR_TOKEN_KEY: fields.key,
    IBKR_TOKEN_KEY_FILE: fields.file,
    EMBEDDED_PG_DIR: '.data/postgres',
    NODE_ENV: fields.env ?? 'test',
  };
}

t.test(
  'keyFileOf: IBKR_TOKEN_KEY_FILE made absolute, else ibkr-token.key beside EMBEDDED_PG_DIR',
  async (t) => {
    t.equal(keyFileOf({ ...keyConfig({ file: 'keys/ibkr.key' }) }), path.resolve('keys/ibkr.key'));
    t.equal(
      keyFileOf({
        ...keyConfig({ file: '' }),
        IBKR_TOKEN_KEY_FILE: undefined,
        EMBEDDED_PG_DIR: '/srv/dc/postgres',
      }),
      '/srv/dc/ibkr-token.key',
    );
  },
);

t.test(
  'configuredKeys: IBKR_TOKEN_KEYS in order, then IBKR_TOKEN_KEY by its fingerprint, never twice',
  async (t) => {
    const [a, b, single] = [key(), key(), key()];
    t.same(configuredKeys(keyConfig({ file: 'x' })), [], 'none configured');
    t.same(configuredKeys(keyConfig({ file: 'x', key: single })), [
      { kid: fingerprint(single), key: single },
    ]);
    t.same(
      configuredKeys(keyConfig({ file: 'x', keys: `new:${a},old:${b}`, key: single })),
      [
        { kid: 'new', key: a },
        { kid: 'old', key: b },
        { kid: fingerprint(single), key: single },
      ],
      'the single key is the oldest',
    );
    t.same(
      configuredKeys(keyConfig({ file: 'x', keys: `new:${a},old:${b}`, key: b })),
      [
        { kid: 'new', key: a },
        { kid: 'old', key: b },
      ],
      'a single key already in the ring (under another id) is not added again',
    );
    t.same(
      configuredKeys(keyConfig({ file: 'x', keys: `${fingerprint(single)}:${a}`, key: single })),
      [{ kid: fingerprint(single), key: a }],
      'nor is one whose fingerprint is an id of the ring',
    );
  },
);

t.test('IBKR_TOKEN_KEY alone: the box encrypts with it, and no key file is made', async (t) => {
  const dir = await folder(t);
  const file = path.join(dir, 'ibkr.key');
  const single = key();
  const box = await loadSecretBox(keyConfig({ file, key: single }), captureLogger().log);
  t.equal(box.kid, fingerprint(single));
  t.equal(new SecretBox(single).decrypt(box.encrypt('token', 'ctx'), 'ctx'), 'token');
  await t.rejects(stat(file), { code: 'ENOENT' });
});

t.test(
  'with keys configured, a key file that exists but cannot be used stops the start, naming it',
  async (t) => {
    // Tokens may be encrypted with the file's key: leaving it out silently would make them
    // undecryptable. A missing file is fine (next test).
    const dir = await folder(t);
    const single = key();
    const unreadable = path.join(dir, 'folder.key');
    await mkdir(unreadable); // a folder where the file should be: reading it fails
    await t.rejects(loadSecretBox(keyConfig({ file: unreadable, key: single }), captureLogger().log), {
      constructor: KeyFileError,
      message: new RegExp(`cannot read the IBKR token key file ${unreadable}`),
    });
    const open = path.join(dir, 'open.key');
    await writeFile(open, `k1:${key()}\n`, { mode: 0o644 });
    await chmod(open, 0o644);
    await t.rejects(loadSecretBox(keyConfig({ file: open, key: single }), captureLogger().log), {
      constructor: KeyFileError,
      message: /can be read by other users \(mode 644\)/,
    });
  },
);

t.test('with keys configured, a usable key file joins the ring after them; no file, no change', async (t) => {
  const dir = await folder(t);
  const single = key();
  const file = path.join(dir, 'ibkr.key');
  const none = await loadSecretBox(keyConfig({ file, key: single }), captureLogger().log);
  t.same(none.kids, [fingerprint(single)], 'no key file: the configured key alone');
  await writeFile(file, `kfile:${key()}\n`, { mode: 0o600 });
  const both = await loadSecretBox(keyConfig({ file, key: single }), captureLogger().log);
  t.same(both.kids, [fingerprint(single), 'kfile'], 'the file’s key decrypts what it encrypted');
});

t.test('without configured keys, an unreadable key file stops the start, naming the file', async (t) => {
  const dir = await folder(t);
  const file = path.join(dir, 'ibkr.key');
  await mkdir(file);
  await t.rejects(loadSecretBox(keyConfig({ file }), captureLogger().log), {
    constructor: KeyFileError,
    name: 'KeyFileError',
    message: new RegExp(`cannot read the IBKR token key file ${file}`),
  });
});

t.test('a key file that is not kid:base64key stops the start, naming the file', async (t) => {
  const dir = await folder(t);
  for (const [name, content] of [
    ['no-kid.key', `${key()}\n`],
    ['short.key', 'k1:c2hvcnQ=\n'],
    ['empty.key', '\n'],
  ] as const) {
    const file = path.join(dir, name);
    await writeFile(file, content, { mode: 0o600 });
    await t.rejects(
      loadSecretBox(keyConfig({ file }), captureLogger().log),
      { constructor: KeyFileError, message: new RegExp(`${name} is not kid:base64key`) },
      name,
    );
  }
});

t.test('production without a configured key does not generate one', async (t) => {
  const dir = await folder(t);
  const file = path.join(dir, 'ibkr.key');
  await t.rejects(loadSecretBox(keyConfig({ file, env: 'production' }), captureLogger().log), {
    constructor: KeyFileError,
    message: /IBKR_TOKEN_KEY or IBKR_TOKEN_KEYS is required in production/,
  });
  await t.rejects(stat(file), { code: 'ENOENT' }, 'no file made');
});

t.test('an existing key file is used and said so at info level', async (t) => {
  const dir = await folder(t);
  const file = path.join(dir, 'ibkr.key');
  const k = key();
  await writeFile(file, `mine:${k}\n`, { mode: 0o600 });
  const { log, lines } = captureLogger();
  const box = await loadSecretBox(keyConfig({ file }), log);
  t.same(box.kids, ['mine']);
  t.match(lines, [{ level: 30, file, kid: 'mine', msg: /encrypted with the key in this file/ }]);
  t.notMatch(JSON.stringify(lines), k, 'the key itself is not logged');
});
