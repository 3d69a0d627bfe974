/** What the sandbox needs of the host: its programs, and root for uids of its own. */
import { access } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';

export const TIME_BIN = '/usr/bin/time';
export const PRLIMIT_BIN = '/usr/bin/prlimit';
export const SETPRIV_BIN = '/usr/bin/setpriv';
export const ENV_BIN = '/usr/bin/env';

/** GNU time, util-linux's prlimit and setpriv (also unprivileged: it sets the parent-death signal), and env. */
export async function checkTools(): Promise<void> {
  for (const tool of [TIME_BIN, PRLIMIT_BIN, SETPRIV_BIN, ENV_BIN]) {
    try {
      await access(tool);
    } catch {
      throw new Error(
        `the executor needs ${tool} (Debian packages: time, util-linux, coreutils); install it or set EXECUTOR_ENABLED=false`,
      );
    }
  }
}

/**
 * True when the executor is root: runs get uids of their own. Otherwise scripts
 * run as the executor's user and can read its environment (DATABASE_URL,
 * IBKR_TOKEN_KEY) through /proc: refused unless EXECUTOR_ALLOW_SAME_USER, and said
 * loudly when allowed.
 */
export function checkSandboxUser(uid: number, config: Config, log: Logger): boolean {
  if (uid === 0) return true;
  const risk =
    `the executor runs as uid ${uid}, not root, so scripts run as that same user and can read the ` +
    "executor's environment and memory through /proc, DATABASE_URL and IBKR_TOKEN_KEY included";
  if (!(config.EXECUTOR_ALLOW_SAME_USER ?? config.NODE_ENV !== 'production'))
    throw new Error(
      `${risk}; run the executor as root (scripts then get uids of their own), or set ` +
        'EXECUTOR_ALLOW_SAME_USER=true to accept this (development only), or EXECUTOR_ENABLED=false',
    );
  log.warn(`${risk} (EXECUTOR_ALLOW_SAME_USER): never run untrusted scripts like this`);
  return false;
}
