/** Changes to users that involve more than one repository call or outside effects. */

import type { Logger } from 'pino';
import type { UserRole } from '../domain/enums.js';
import { assertValid, type User, usernameProblem } from '../domain/user.js';
import type { Repositories } from '../repositories/index.js';
import type { Storage } from '../storage/file-storage.js';
import type { AuthService, Principal } from './auth-service.js';
import type { SecretBox } from './secret-box.js';

export interface IbkrLinkInput {
  ibkr_user_id: string;
  access_token?: string;
  refresh_token?: string;
  token_expires_at?: Date;
}

export class UserService {
  constructor(
    private readonly repos: Repositories,
    private readonly auth: AuthService,
    private readonly storage: Storage,
    private readonly secrets: SecretBox,
    private readonly log: Logger,
  ) {}

  /** PATCH /me: username and/or password (a new password needs the current one). */
  async updateSelf(
    principal: Principal,
    patch: { username?: string; current_password?: string; new_password?: string },
  ): Promise<User> {
    // Check the username first: a refused rename must not leave a changed password behind.
    if (patch.username !== undefined) assertValid([['/username', usernameProblem(patch.username)]]);
    if (patch.current_password !== undefined && patch.new_password === undefined)
      assertValid([['/current_password', 'is only needed to set a new_password']]);
    if (patch.new_password !== undefined)
      await this.auth.changePassword(principal, patch.current_password, patch.new_password);
    return this.repos.users.update(principal.user_id, { username: patch.username });
  }

  /** PATCH /users/{id} by an admin. */
  async update(
    id: number,
    patch: { username?: string; is_active?: boolean; is_verified?: boolean; role?: UserRole },
  ): Promise<User> {
    const user = await this.repos.users.update(id, patch);
    if (patch.is_active !== undefined || patch.role !== undefined) this.auth.evictUser(id);
    return user;
  }

  /** Deletes the user, its tokens and scripts (cascade), then the script files. */
  async delete(id: number): Promise<void> {
    const { file_paths } = await this.repos.users.delete(id);
    this.auth.evictUser(id);
    await Promise.all(
      file_paths.map((key) =>
        this.storage
          .remove(key)
          .catch((err) => this.log.warn({ err, key }, 'could not remove a script file')),
      ),
    );
  }

  async linkIbkr(userId: number, input: IbkrLinkInput): Promise<User> {
    return this.repos.users.linkIbkr(userId, {
      ibkr_user_id: input.ibkr_user_id,
      access_token_encrypted:
        input.access_token === undefined
          ? null
          : this.secrets.encrypt(input.access_token, ibkrContext(userId, 'access')),
      refresh_token_encrypted:
        input.refresh_token === undefined
          ? null
          : this.secrets.encrypt(input.refresh_token, ibkrContext(userId, 'refresh')),
      token_expires_at: input.token_expires_at ?? null,
    });
  }

  unlinkIbkr(userId: number): Promise<User> {
    return this.repos.users.unlinkIbkr(userId);
  }
}

/** Additional data of an IBKR token ciphertext: it decrypts only for this user and field. */
export function ibkrContext(userId: number, field: 'access' | 'refresh'): string {
  return `users/${userId}/ibkr_${field}_token`;
}
