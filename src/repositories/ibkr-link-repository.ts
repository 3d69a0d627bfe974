/**
 * A user's IBKR link: the account id and its tokens, stored encrypted (secret-box;
 * this repository never sees a plain token), read for a run that may use them, and
 * re-encrypted in batches by a key rotation. Responses never carry a token: the
 * methods that read them are for the code that decrypts them.
 */
import type { Database } from '../db/database.ts';
import { NotFoundError } from '../domain/errors.ts';
import { assertValid, IBKR_USER_ID_MAX_LENGTH, USER_COLUMNS, type User } from '../domain/user.ts';

export interface IbkrLink {
  ibkr_user_id: string;
  /** Already encrypted (secret-box); the repository never sees plain tokens. */
  access_token_encrypted: string | null;
  refresh_token_encrypted: string | null;
  token_expires_at: Date | null;
}

export interface StoredIbkrTokens {
  id: number;
  /** As stored: encrypted (secret-box), or null. */
  ibkr_access_token: string | null;
  ibkr_refresh_token: string | null;
}

export class IbkrLinkRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  private get sql() {
    return this.db.sql;
  }

  /** Links (or relinks) an IBKR account. IBKR_ACCOUNT_TAKEN when another user has it. */
  async link(id: number, link: IbkrLink): Promise<User> {
    if (link.ibkr_user_id.length === 0 || link.ibkr_user_id.length > IBKR_USER_ID_MAX_LENGTH)
      assertValid([['/ibkr_user_id', `must be 1 to ${IBKR_USER_ID_MAX_LENGTH} characters`]]);
    const sql = this.sql;
    const user = await this.db.maybeOne<User>(
      'users.linkIbkr',
      sql`
        update users
        set ibkr_user_id = ${link.ibkr_user_id},
            ibkr_access_token = ${link.access_token_encrypted},
            ibkr_refresh_token = ${link.refresh_token_encrypted},
            ibkr_token_expires_at = ${link.token_expires_at},
            ibkr_connected_at = case
              when ibkr_user_id is not distinct from ${link.ibkr_user_id} then ibkr_connected_at
              else now()
            end
        where id = ${id}
        returning ${sql(USER_COLUMNS)}
      `,
    );
    return orNotFound(user);
  }

  async unlink(id: number): Promise<User> {
    const sql = this.sql;
    const user = await this.db.maybeOne<User>(
      'users.unlinkIbkr',
      sql`
        update users
        set ibkr_user_id = null, ibkr_access_token = null, ibkr_refresh_token = null,
            ibkr_token_expires_at = null, ibkr_connected_at = null
        where id = ${id}
        returning ${sql(USER_COLUMNS)}
      `,
    );
    return orNotFound(user);
  }

  /**
   * What a run of the script needs to get its owner's IBKR credentials, read when the
   * run starts: the script's ibkr_access and the owner's link (tokens still encrypted).
   */
  async findForScript(scriptId: number): Promise<{
    user_id: number;
    ibkr_access: boolean;
    ibkr_user_id: string | null;
    ibkr_access_token: string | null;
    ibkr_refresh_token: string | null;
    ibkr_token_expires_at: Date | null;
  } | null> {
    const sql = this.sql;
    return this.db.maybeOne(
      'users.findIbkrLinkForScript',
      sql`
        select u.id as user_id, s.ibkr_access, u.ibkr_user_id, u.ibkr_access_token,
          u.ibkr_refresh_token, u.ibkr_token_expires_at
        from scripts as s
        join users as u on u.id = s.user_id
        where s.id = ${scriptId}
      `,
    );
  }

  /** The stored (encrypted) IBKR tokens, for the code that decrypts them; never for responses. */
  async findTokens(
    id: number,
  ): Promise<{ ibkr_access_token: string | null; ibkr_refresh_token: string | null } | null> {
    const sql = this.sql;
    return this.db.maybeOne(
      'users.findIbkrTokens',
      sql`select ibkr_access_token, ibkr_refresh_token from users where id = ${id}`,
    );
  }

  /**
   * Users after `afterId` (by id) with a stored IBKR token not encrypted with key
   * `kid`, `limit` at most: the next batch of a key rotation.
   */
  async listTokensNotOn(kid: string, afterId: number, limit: number): Promise<StoredIbkrTokens[]> {
    const sql = this.sql;
    const prefix = `v2:${kid}:`;
    return this.db.many<StoredIbkrTokens>(
      'users.listIbkrTokensNotOn',
      sql`
        select id, ibkr_access_token, ibkr_refresh_token
        from users
        where id > ${afterId}
          and (
            (ibkr_access_token is not null and not starts_with(ibkr_access_token, ${prefix}))
            or (ibkr_refresh_token is not null and not starts_with(ibkr_refresh_token, ${prefix}))
          )
        order by id
        limit ${limit}
      `,
    );
  }

  /**
   * Writes re-encrypted tokens, one statement for the batch: each row only while it
   * still holds the values they were made from (a token relinked meanwhile wins).
   * Returns how many rows were written.
   */
  async replaceTokens(
    rows: Array<{ before: StoredIbkrTokens; after: Omit<StoredIbkrTokens, 'id'> }>,
  ): Promise<number> {
    if (rows.length === 0) return 0;
    const sql = this.sql;
    return this.db.count(
      'users.replaceIbkrTokens',
      sql`
        update users as u
        set ibkr_access_token = v.new_access, ibkr_refresh_token = v.new_refresh
        from unnest(
          ${rows.map((r) => r.before.id)}::bigint[],
          ${rows.map((r) => r.before.ibkr_access_token)}::text[],
          ${rows.map((r) => r.before.ibkr_refresh_token)}::text[],
          ${rows.map((r) => r.after.ibkr_access_token)}::text[],
          ${rows.map((r) => r.after.ibkr_refresh_token)}::text[]
        ) as v(id, old_access, old_refresh, new_access, new_refresh)
        where u.id = v.id
          and u.ibkr_access_token is not distinct from v.old_access
          and u.ibkr_refresh_token is not distinct from v.old_refresh
      `,
    );
  }
}

function orNotFound(user: User | null): User {
  if (user === null) throw new NotFoundError('user');
  return user;
}
