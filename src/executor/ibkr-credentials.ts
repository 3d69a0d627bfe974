/**
 * The owner's IBKR credentials for one run (PATCH /scripts/{id} {ibkr_access}):
 * read when the run starts — so an unlink while it was queued is honoured — and
 * decrypted here, in the executor, only to be handed to that run's process.
 *
 * They never go on a command line (every process of the chain would show them in
 * /proc/<pid>/cmdline to the whole host): `startRun` writes them into a pipe on the
 * child's fd 3, and the last step before the script (`withSecretEnv`, after `env -i`,
 * inside the sandbox and as the run's uid) exports them and closes the pipe. Nothing
 * here logs a value or puts one in an error.
 */
import type { Logger } from 'pino';
import type { Repositories } from '../repositories/index.ts';
import type { SecretBox } from '../services/secret-box.ts';
import { ibkrContext } from '../services/user-service.ts';

/** The variables a run with IBKR access gets. */
export const IBKR_VARIABLES = [
  'IBKR_USER_ID',
  'IBKR_ACCESS_TOKEN',
  'IBKR_REFRESH_TOKEN',
  'IBKR_TOKEN_EXPIRES_AT',
] as const;

/** `KEY=value` lines on fd 3 become the environment; then the script replaces the shell. */
const LAUNCHER =
  'while IFS= read -r kv; do case "$kv" in IBKR_*=*) export "$kv";; esac; done <&3; exec 3<&-; exec "$@"';

export interface IbkrEnvironment {
  /** The variables: empty unless the script has ibkr_access and its owner a link. */
  env: Record<string, string>;
  /** Stored tokens left out because they did not decrypt (their variable names). */
  undecryptable: string[];
}

/** The IBKR variables of a run of `scriptId` now. */
export async function ibkrEnvironment(
  repos: Repositories,
  secrets: SecretBox,
  scriptId: number,
  log: Logger,
): Promise<IbkrEnvironment> {
  const undecryptable: string[] = [];
  const row = await repos.ibkr.findForScript(scriptId);
  if (row === null || !row.ibkr_access || row.ibkr_user_id === null) return { env: {}, undecryptable };
  const env: Record<string, string> = { IBKR_USER_ID: row.ibkr_user_id };
  const tokens = [
    ['IBKR_ACCESS_TOKEN', row.ibkr_access_token, 'access'],
    ['IBKR_REFRESH_TOKEN', row.ibkr_refresh_token, 'refresh'],
  ] as const;
  for (const [name, stored, field] of tokens) {
    if (stored === null) continue;
    try {
      env[name] = secrets.decrypt(stored, ibkrContext(row.user_id, field));
    } catch {
      // The reason would say nothing useful and must not carry the value: name the field only.
      undecryptable.push(name);
      log.warn(
        { user_id: row.user_id, field: name },
        'an IBKR token could not be decrypted; the run goes without it',
      );
    }
  }
  if (row.ibkr_token_expires_at !== null) env.IBKR_TOKEN_EXPIRES_AT = row.ibkr_token_expires_at.toISOString();
  // One value per line: a value with a line break (never a real token) is left out rather than split.
  for (const [name, value] of Object.entries(env)) if (/[\n\r\0]/.test(value)) delete env[name];
  return { env, undecryptable };
}

/** The command that gives the script `secretEnv` from fd 3 (see the module comment); `command` when there is none. */
export function withSecretEnv(command: string[], secretEnv: Record<string, string>): string[] {
  if (Object.keys(secretEnv).length === 0) return command;
  return ['/bin/sh', '-c', LAUNCHER, 'dollarclub-env', ...command];
}

/** What `startRun` writes on fd 3. */
export function secretEnvPayload(secretEnv: Record<string, string>): string {
  return Object.entries(secretEnv)
    .map(([name, value]) => `${name}=${value}\n`)
    .join('');
}
