/**
 * Where the IBKR token keyring comes from: IBKR_TOKEN_KEYS (`kid:key,…`, newest
 * first), IBKR_TOKEN_KEY (one key), or — neither set, outside production — a random
 * key generated once into a file next to the data (IBKR_TOKEN_KEY_FILE, by default
 * `ibkr-token.key` beside EMBEDDED_PG_DIR: `.data/ibkr-token.key`), mode 0600. Never
 * a fixed or derived key. A key file that exists is kept in the ring (as its oldest
 * key) after keys are configured, so what it encrypted still decrypts until rotated.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { fingerprint, type KeyringEntry, parseKeyring, SecretBox } from './secret-box.ts';

type KeyConfig = Pick<
  Config,
  'IBKR_TOKEN_KEYS' | 'IBKR_TOKEN_KEY' | 'IBKR_TOKEN_KEY_FILE' | 'EMBEDDED_PG_DIR'
>;

export function keyFileOf(config: KeyConfig): string {
  return path.resolve(
    config.IBKR_TOKEN_KEY_FILE ?? path.join(path.dirname(config.EMBEDDED_PG_DIR), 'ibkr-token.key'),
  );
}

/** The configured keys (IBKR_TOKEN_KEYS, then IBKR_TOKEN_KEY), newest first; empty when none is set. */
export function configuredKeys(config: KeyConfig): KeyringEntry[] {
  const ring = config.IBKR_TOKEN_KEYS === undefined ? [] : parseKeyring(config.IBKR_TOKEN_KEYS);
  if (config.IBKR_TOKEN_KEY !== undefined) {
    const kid = fingerprint(config.IBKR_TOKEN_KEY);
    if (!ring.some((e) => e.kid === kid || e.key === config.IBKR_TOKEN_KEY))
      ring.push({ kid, key: config.IBKR_TOKEN_KEY });
  }
  return ring;
}

export class KeyFileError extends Error {
  override name = 'KeyFileError';
}

/** Reads the key file: one line `kid:base64key`. Null when there is none. */
async function readKeyFile(file: string): Promise<KeyringEntry | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new KeyFileError(`cannot read the IBKR token key file ${file}: ${(error as Error).message}`);
  }
  const { mode } = await stat(file);
  if ((mode & 0o077) !== 0)
    throw new KeyFileError(
      `the IBKR token key file ${file} can be read by other users (mode ${(mode & 0o777).toString(8)}); run chmod 600 on it`,
    );
  try {
    const [entry] = parseKeyring(text.trim());
    return entry!;
  } catch (error) {
    throw new KeyFileError(
      `the IBKR token key file ${file} is not kid:base64key: ${(error as Error).message}`,
    );
  }
}

/**
 * Creates the key file with a random key, unless another process just did: the key is
 * written to a private temporary file first and linked into place, which fails when
 * the name exists (then that file's key is used).
 */
async function createKeyFile(file: string): Promise<KeyringEntry> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const key = randomBytes(32).toString('base64');
  const entry = { kid: fingerprint(key), key };
  const temporary = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temporary, `${entry.kid}:${entry.key}\n`, { mode: 0o600, flag: 'wx' });
  try {
    await link(temporary, file);
    return entry;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const existing = await readKeyFile(file);
    if (existing === null) throw error;
    return existing;
  } finally {
    await unlink(temporary).catch(() => {});
  }
}

/** The keyring of this process (see the module comment). */
export async function loadSecretBox(
  config: KeyConfig & Pick<Config, 'NODE_ENV'>,
  log: Logger,
): Promise<SecretBox> {
  const file = keyFileOf(config);
  const configured = configuredKeys(config);
  if (configured.length > 0) {
    // A key file that exists stays in the ring (tokens may be encrypted with it); one that
    // cannot be used stops the start, as it does without configured keys, rather than
    // leaving its tokens undecryptable without a word.
    const fromFile = await readKeyFile(file);
    if (fromFile !== null && !configured.some((e) => e.kid === fromFile.kid)) configured.push(fromFile);
    return new SecretBox(configured);
  }
  if (config.NODE_ENV === 'production')
    throw new KeyFileError('IBKR_TOKEN_KEY or IBKR_TOKEN_KEYS is required in production');
  const existing = await readKeyFile(file);
  const entry = existing ?? (await createKeyFile(file));
  if (existing === null)
    log.warn(
      { file, kid: entry.kid },
      'IBKR_TOKEN_KEY is not set: generated a random key for IBKR tokens into this file (mode 0600); back it up with the database, or set IBKR_TOKEN_KEYS',
    );
  else log.info({ file, kid: entry.kid }, 'IBKR tokens are encrypted with the key in this file');
  return new SecretBox([entry]);
}
