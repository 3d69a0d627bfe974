/**
 * Bearer tokens, by the SHA-256 the server keeps of each (src/services/tokens.ts).
 * A token is valid while it is neither revoked nor expired and its user is active.
 */
import type { Database } from '../db/database.ts';
import type { UserRole } from '../domain/enums.ts';

export interface TokenIdentity {
  user_id: number;
  role: UserRole;
  expires_at: Date;
}

export class TokenRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  async create(userId: number, hash: Buffer, expiresAt: Date): Promise<{ id: number; expires_at: Date }> {
    const sql = this.db.sql;
    return this.db.one(
      'tokens.create',
      sql`
        insert into api_tokens (user_id, token_hash, expires_at)
        values (${userId}, ${hash}, ${expiresAt})
        returning id, expires_at
      `,
    );
  }

  /** Who a token belongs to, if it is valid now; one indexed lookup. */
  async authenticate(hash: Buffer): Promise<TokenIdentity | null> {
    const sql = this.db.sql;
    return this.db.maybeOne<TokenIdentity>(
      'tokens.authenticate',
      sql`
        select u.id as user_id, u.role, t.expires_at
        from api_tokens as t
        join users as u on u.id = t.user_id
        where t.token_hash = ${hash}
          and t.revoked_at is null
          and t.expires_at > now()
          and u.is_active
      `,
    );
  }

  /** Revokes one token; false when it was unknown or already revoked. */
  async revoke(hash: Buffer): Promise<boolean> {
    const sql = this.db.sql;
    const n = await this.db.count(
      'tokens.revoke',
      sql`update api_tokens set revoked_at = now() where token_hash = ${hash} and revoked_at is null`,
    );
    return n === 1;
  }

  /** Revokes every live token of a user but `except` (the one in use); returns how many. */
  async revokeAllForUser(userId: number, except?: Buffer): Promise<number> {
    const sql = this.db.sql;
    return this.db.count(
      'tokens.revokeAllForUser',
      sql`
        update api_tokens
        set revoked_at = now()
        where user_id = ${userId}
          and revoked_at is null
          ${except === undefined ? sql`` : sql`and token_hash <> ${except}`}
      `,
    );
  }

  /** Deletes tokens that expired or were revoked before `before`; returns how many. */
  async prune(before: Date): Promise<number> {
    const sql = this.db.sql;
    return this.db.count(
      'tokens.prune',
      sql`delete from api_tokens where expires_at < ${before} or revoked_at < ${before}`,
    );
  }
}
