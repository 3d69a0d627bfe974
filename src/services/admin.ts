/**
 * `create-admin`: creates an admin account. An account that already has the email
 * is promoted only when the operator says so (`promoteExisting`): anyone may have
 * registered that email before the operator ran the command, and a promotion must
 * not turn that stranger's session into an admin one. So a promotion sets the
 * operator's password and revokes every token of the account, in one transaction.
 */
import { ConflictError } from '../domain/errors.ts';
import { assertValid, normalizeEmail, passwordProblem, usernameProblem } from '../domain/user.ts';
import type { Repositories } from '../repositories/index.ts';
import { hashPassword } from './passwords.ts';

export interface CreateAdminInput {
  email: string;
  username: string;
  password: string;
  /** Promote the account that has this email already, instead of refusing. */
  promoteExisting?: boolean;
}

export interface CreateAdminResult {
  action: 'created' | 'promoted';
  user_id: number;
  email: string;
  /** Tokens revoked by a promotion. */
  revoked: number;
}

export async function createAdmin(repos: Repositories, input: CreateAdminInput): Promise<CreateAdminResult> {
  const email = normalizeEmail(input.email);
  assertValid([
    ['/username', usernameProblem(input.username)],
    ['/password', passwordProblem(input.password)],
  ]);
  const hashed_password = await hashPassword(input.password);
  return repos.transaction(async (tx) => {
    const existing = await tx.users.lockByEmail(email);
    if (existing === null) {
      const user = await tx.users.create({ email, username: input.username, hashed_password, role: 'admin' });
      return { action: 'created' as const, user_id: user.id, email: user.email, revoked: 0 };
    }
    if (input.promoteExisting !== true)
      throw new ConflictError(
        'EMAIL_TAKEN',
        `an account with the email ${email} exists already; nothing was changed. ` +
          'To make that account an admin (its password is replaced and all its sessions end), ' +
          'run the command again with --promote-existing',
      );
    const user = await tx.users.update(existing.id, { role: 'admin', is_active: true, hashed_password });
    const revoked = await tx.tokens.revokeAllForUser(user.id);
    return { action: 'promoted' as const, user_id: user.id, email: user.email, revoked };
  });
}
