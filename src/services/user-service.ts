/** Changes to users that involve more than one repository call or outside effects. */

import type { UserRole } from '../domain/enums.ts';
import { NotFoundError } from '../domain/errors.ts';
import { fetchPage, type Page, type PageRequest } from '../domain/paging.ts';
import { assertValid, type User, usernameProblem } from '../domain/user.ts';
import type { Repositories } from '../repositories/index.ts';
import type { UserFilters, UserWithScripts } from '../repositories/user-listings.ts';
import type { AuthService, Principal } from './auth-service.ts';
import type { SecretBox } from './secret-box.ts';

/** `GET /users/{id}?include=scripts` embeds at most this many scripts, the newest. */
export const EMBEDDED_SCRIPTS_MAX = 100;

export interface IbkrLinkInput {
  ibkr_user_id: string;
  access_token?: string;
  refresh_token?: string;
  token_expires_at?: Date;
}

export class UserService {
  private readonly repos: Repositories;
  private readonly auth: AuthService;
  private readonly secrets: SecretBox;

  constructor(repos: Repositories, auth: AuthService, secrets: SecretBox) {
    this.repos = repos;
    this.auth = auth;
    this.secrets = secrets;
  }

  /** Admin listing: an offset or keyset page, as the request asks. */
  list(filters: UserFilters, request: PageRequest): Promise<Page<User>> {
    return fetchPage(
      request,
      (page) => this.repos.userListings.listPage(filters, page),
      (cursor, limit) => this.repos.userListings.listAfter(filters, cursor, limit),
    );
  }

  /** Case-insensitive substring search of email or username. */
  search(term: string, limit: number): Promise<User[]> {
    return this.repos.userListings.search(term, limit);
  }

  /**
   * PATCH /me: username and/or password (a new password needs the current one).
   * One transaction: the password write (guarded against a concurrent change: 409
   * PASSWORD_CHANGED), the revocation of the other tokens and the rename commit
   * together or not at all. The slow password check and hash run before it.
   */
  async updateSelf(
    principal: Principal,
    patch: { username?: string; current_password?: string; new_password?: string },
  ): Promise<User> {
    // Every cheap check before the expensive hash.
    if (patch.username !== undefined) assertValid([['/username', usernameProblem(patch.username)]]);
    if (patch.current_password !== undefined && patch.new_password === undefined)
      assertValid([['/current_password', 'is only needed to set a new_password']]);
    const change =
      patch.new_password === undefined
        ? null
        : await this.auth.preparePasswordChange(principal, patch.current_password, patch.new_password);
    const user = await this.repos.transaction(async (tx) => {
      if (change !== null) await this.auth.applyPasswordChange(tx, principal, change);
      return tx.users.update(principal.user_id, { username: patch.username });
    });
    if (change !== null) this.auth.evictUser(principal.user_id);
    return user;
  }

  /**
   * PATCH /users/{id} by an admin. A change of role revokes every token of the account
   * in the same transaction: a session opened with one role never carries another.
   */
  async update(
    id: number,
    patch: { username?: string; is_active?: boolean; is_verified?: boolean; role?: UserRole },
  ): Promise<User> {
    const user = await this.repos.transaction(async (tx) => {
      if (patch.role === undefined) return tx.users.update(id, patch);
      const before = await tx.users.lockRole(id);
      if (before === null) throw new NotFoundError('user');
      const updated = await tx.users.update(id, patch);
      if (before !== patch.role) await tx.tokens.revokeAllForUser(id);
      return updated;
    });
    if (patch.is_active !== undefined || patch.role !== undefined) this.auth.evictUser(id);
    return user;
  }

  /**
   * GET /users/{id}: the user, with its scripts when asked. An admin reads anyone, a
   * user only itself: anyone else is NOT_FOUND, like a user that does not exist.
   */
  async get(
    principal: Principal,
    id: number,
    options: { scripts?: boolean } = {},
  ): Promise<User | UserWithScripts> {
    assertSelfOrAdmin(principal, id);
    if (options.scripts !== true) return this.repos.users.getById(id);
    const user = await this.repos.userListings.findWithScripts(id, EMBEDDED_SCRIPTS_MAX);
    if (user === null) throw new NotFoundError('user');
    return user;
  }

  /**
   * Deletes the user, its tokens and scripts with their bytes (cascade). An admin
   * deletes anyone, a user only itself (anyone else is NOT_FOUND).
   */
  async delete(principal: Principal, id: number): Promise<void> {
    assertSelfOrAdmin(principal, id);
    await this.repos.users.delete(id);
    this.auth.evictUser(id);
  }

  async linkIbkr(userId: number, input: IbkrLinkInput): Promise<User> {
    return this.repos.ibkr.link(userId, {
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
    return this.repos.ibkr.unlink(userId);
  }
}

/** The caller itself, or anyone for an admin; otherwise the user is "not found" (no existence leak). */
function assertSelfOrAdmin(principal: Principal, id: number): void {
  if (principal.role !== 'admin' && principal.user_id !== id) throw new NotFoundError('user');
}

/** Additional data of an IBKR token ciphertext: it decrypts only for this user and field. */
export function ibkrContext(userId: number, field: 'access' | 'refresh'): string {
  return `users/${userId}/ibkr_${field}_token`;
}
