/**
 * IBKR token keys (issue 7, item 3): without a configured key a random one is
 * generated once into a 0600 file next to the data (never a fixed or derived key);
 * keys have ids and a ring; `rotate-ibkr-key` re-encrypts everything to the newest
 * key in batches and finishes after a crash when run again.
 */
import { spawn } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { loadConfig } from '../../src/config.ts';
import { rotateIbkrKeys } from '../../src/services/ibkr-key-rotation.ts';
import { SecretBox } from '../../src/services/secret-box.ts';
import { keyFileOf, loadSecretBox } from '../../src/services/secret-keys.ts';
import { ibkrContext } from '../../src/services/user-service.ts';
import { testDatabase } from '../helpers/db.ts';
import { childEnv, entryArgs } from '../helpers/entry.ts';
import { makeUser } from '../helpers/fixtures.ts';
import { captureLogger } from '../helpers/log-capture.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
const key = () => randomBytes(32).toString('base64');

async function folder(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-keys-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('without a key, a random one is generated once into a 0600 file next to the data', async (t) => {
  const dir = await folder(t);
  const config = loadConfig({ EMBEDDED_PG_DIR: path.join(dir, 'data', 'postgres') });
  const file = keyFileOf(config);
  t.equal(file, path.join(dir, 'data', 'ibkr-token.key'), 'beside EMBEDDED_PG_DIR');
  const { log: logger, lines } = captureLogger();
  const box = await loadSecretBox(config, logger);
  const text = await readFile(file, 'utf8');
  t.match(text, /^k[0-9a-f]{12}:[A-Za-z0-9+/]{43}=\n$/);
  t.equal(text.split(':')[0], box.kid);
  t.equal((await stat(file)).mode & 0o777, 0o600, 'only the owner reads it');
  const warning = lines.find((l) => l.level === 40);
  t.match(warning, { file, kid: box.kid, msg: /generated a random key/ });
  t.notMatch(JSON.stringify(lines), text.trim().split(':')[1]!, 'the key itself is never logged');

  const again = await loadSecretBox(config, captureLogger().log);
  t.equal(again.kid, box.kid, 'the same key on the next start');
  const stored = box.encrypt('token', 'ctx');
  t.equal(again.decrypt(stored, 'ctx'), 'token');

  const other = await folder(t);
  const elsewhere = await loadSecretBox(
    loadConfig({ EMBEDDED_PG_DIR: path.join(other, 'postgres') }),
    captureLogger().log,
  );
  t.not(elsewhere.kid, box.kid, 'another installation gets another random key');
  t.throws(() => elsewhere.decrypt(stored, 'ctx'));
});

t.test('processes starting together agree on one key', async (t) => {
  const dir = await folder(t);
  const config = loadConfig({ IBKR_TOKEN_KEY_FILE: path.join(dir, 'keys', 'ibkr.key') });
  const boxes = await Promise.all(
    Array.from({ length: 8 }, () => loadSecretBox(config, captureLogger().log)),
  );
  t.equal(new Set(boxes.map((b) => b.kid)).size, 1);
});

t.test('a key file others can read is refused, saying how to fix it', async (t) => {
  const dir = await folder(t);
  const config = loadConfig({ IBKR_TOKEN_KEY_FILE: path.join(dir, 'ibkr.key') });
  await loadSecretBox(config, captureLogger().log);
  await chmod(keyFileOf(config), 0o644);
  await t.rejects(loadSecretBox(config, captureLogger().log), { message: /mode 644.*chmod 600/ });
});

t.test('configured keys come first; a key file that exists stays readable', async (t) => {
  const dir = await folder(t);
  const file = path.join(dir, 'ibkr.key');
  const generated = await loadSecretBox(loadConfig({ IBKR_TOKEN_KEY_FILE: file }), captureLogger().log);
  const old = generated.encrypt('from the generated key', 'ctx');
  const [k1, k2] = [key(), key()];
  const box = await loadSecretBox(
    loadConfig({ IBKR_TOKEN_KEY_FILE: file, IBKR_TOKEN_KEYS: `new:${k2},older:${k1}` }),
    captureLogger().log,
  );
  t.equal(box.kid, 'new');
  t.same(box.kids, ['new', 'older', generated.kid]);
  t.equal(box.decrypt(old, 'ctx'), 'from the generated key');
  t.throws(() => loadConfig({ IBKR_TOKEN_KEYS: 'nope' }), { message: /IBKR_TOKEN_KEYS=\(hidden\)/ });
  t.throws(() => loadConfig({ NODE_ENV: 'production' }), { message: /IBKR_TOKEN_KEY is required/ });
  t.equal(loadConfig({ NODE_ENV: 'production', IBKR_TOKEN_KEYS: `a:${k1}` }).NODE_ENV, 'production');
});

function encryptV1(keyBytes: Buffer, text: string, context: string): string {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', keyBytes, nonce);
  cipher.setAAD(Buffer.from(context));
  const body = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()]);
  return `v1:${Buffer.concat([nonce, cipher.getAuthTag(), body]).toString('base64url')}`;
}

t.test(
  'rotation re-encrypts every token to the newest key; a crash midway is finished by a re-run',
  async (t) => {
    const { repos, sql } = await testDatabase(t);
    const [oldKey, newKey] = [key(), key()];
    const before = new SecretBox([{ kid: 'old', key: oldKey }]);
    const ring = new SecretBox([
      { kid: 'new', key: newKey },
      { kid: 'old', key: oldKey },
    ]);
    const legacyKey = createHash('sha256').update('dollarclub insecure development key').digest();
    const plain = new Map<number, [string, string | null]>();
    const link = async (box: SecretBox | 'v1' | 'lost', refresh: boolean) => {
      const user = await makeUser(repos);
      const access = `access-${user.id}`;
      const refreshToken = refresh ? `refresh-${user.id}` : null;
      const enc = (text: string, field: 'access' | 'refresh') =>
        box === 'v1'
          ? encryptV1(legacyKey, text, ibkrContext(user.id, field))
          : box === 'lost'
            ? new SecretBox([{ kid: 'lost', key: key() }]).encrypt(text, ibkrContext(user.id, field))
            : box.encrypt(text, ibkrContext(user.id, field));
      await repos.ibkr.link(user.id, {
        ibkr_user_id: `U${user.id}`,
        access_token_encrypted: enc(access, 'access'),
        refresh_token_encrypted: refreshToken === null ? null : enc(refreshToken, 'refresh'),
        token_expires_at: null,
      });
      plain.set(user.id, [access, refreshToken]);
      return user.id;
    };
    for (let i = 0; i < 5; i++) await link(before, i % 2 === 0);
    await link('v1', true);
    const current = await link(ring, true);
    const lost = await link('lost', false);
    await makeUser(repos); // no tokens at all

    let batches = 0;
    await t.rejects(
      rotateIbkrKeys(repos, ring, {
        batchSize: 2,
        onBatch: () => {
          if (++batches === 1) throw new Error('crash after the first batch');
        },
      }),
      { message: /crash/ },
    );
    const stored = async () =>
      sql<{ id: number; ibkr_access_token: string | null; ibkr_refresh_token: string | null }[]>`
      select id, ibkr_access_token, ibkr_refresh_token from users where ibkr_user_id is not null order by id
    `;
    const midway = (await stored()).filter((r) => r.ibkr_access_token!.startsWith('v2:new:'));
    t.equal(midway.length, 3, 'the first batch (2 users) committed, next to the one already current');

    const beforeCurrent = (await stored()).find((r) => r.id === current)!;
    const report = await rotateIbkrKeys(repos, ring, { batchSize: 2 });
    t.same(report, { kid: 'new', rotated: 4, raced: 0, failed: [lost] }, 'the rest, and only the rest');
    const after = await stored();
    t.same(
      after.find((r) => r.id === current),
      beforeCurrent,
      'a row already on the newest key is not rewritten',
    );
    for (const row of after) {
      if (row.id === lost) {
        t.match(row.ibkr_access_token, /^v2:lost:/, 'what no key decrypts is left as it was');
        continue;
      }
      t.match(row.ibkr_access_token, /^v2:new:/);
      if (row.ibkr_refresh_token !== null) t.match(row.ibkr_refresh_token, /^v2:new:/);
      const [access, refresh] = plain.get(row.id)!;
      const only = new SecretBox([{ kid: 'new', key: newKey }]);
      t.equal(only.decrypt(row.ibkr_access_token!, ibkrContext(row.id, 'access')), access);
      if (refresh !== null)
        t.equal(only.decrypt(row.ibkr_refresh_token!, ibkrContext(row.id, 'refresh')), refresh);
    }
    t.same(
      await rotateIbkrKeys(repos, ring),
      { kid: 'new', rotated: 0, raced: 0, failed: [lost] },
      'idempotent',
    );
  },
);

t.test('npm run cli -- rotate-ibkr-key', async (t) => {
  const { repos, url, sql } = await testDatabase(t);
  const [oldKey, newKey] = [key(), key()];
  const user = await makeUser(repos);
  await repos.ibkr.link(user.id, {
    ibkr_user_id: 'U1',
    access_token_encrypted: new SecretBox([{ kid: 'old', key: oldKey }]).encrypt(
      'tok',
      ibkrContext(user.id, 'access'),
    ),
    refresh_token_encrypted: null,
    token_expires_at: null,
  });
  const child = spawn(
    process.execPath,
    [...entryArgs('src/cli.ts'), 'rotate-ibkr-key', '--batch-size', '10'],
    {
      cwd: REPO,
      env: childEnv({
        ...process.env,
        NODE_OPTIONS: '',
        NODE_ENV: 'test',
        DATABASE_URL: url,
        IBKR_TOKEN_KEYS: `fresh:${newKey},old:${oldKey}`,
      }),
    },
  );
  let out = '';
  child.stdout.on('data', (c) => {
    out += c;
  });
  child.stderr.on('data', (c) => {
    out += c;
  });
  const code = await new Promise((resolve) => child.on('close', resolve));
  t.equal(code, 0, out);
  t.match(out, /re-encrypted the IBKR tokens of 1 user\(s\) with key fresh/);
  t.notMatch(out, newKey);
  const [row] = await sql`select ibkr_access_token from users where id = ${user.id}`;
  t.match(row!.ibkr_access_token, /^v2:fresh:/);
});
