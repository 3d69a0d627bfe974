/**
 * Users: accounts, their profile, role and state (the IBKR link: ibkr-link-repository.ts).
 * Every statement returns only the public columns (USER_COLUMNS); password hash
 * and IBKR tokens are read by the dedicated methods that need them.
 */
import { Type } from '@sinclair/typebox';
import type { Fragment } from '../db/client.ts';
import type { Database } from '../db/database.ts';
import type { AuthProvider, UserRole } from '../domain/enums.ts';
import { NotFoundError } from '../domain/errors.ts';
import {
  type CursorPage,
  cursorPage,
  decodeCursor,
  type OffsetPage,
  type OffsetQuery,
  offsetOf,
  offsetPage,
} from '../domain/paging.ts';
import { SCRIPT_COLUMNS, type Script } from '../domain/script.ts';
import { assertValid, normalizeEmail, USER_COLUMNS, type User, usernameProblem } from '../domain/user.ts';
import { likeContains, type PageRow, rowsOf, scriptFromJson } from './rows.ts';

export interface NewUser {
  email: string;
  username: string;
  /** argon2id PHC string; required for `email` users. */
  hashed_password?: string | null;
  auth_provider?: AuthProvider;
  google_id?: string | null;
  role?: UserRole;
  is_verified?: boolean;
}

/** Columns an update may change. Anything else is not a key of this type. */
export interface UserPatch {
  username?: string;
  is_active?: boolean;
  is_verified?: boolean;
  role?: UserRole;
  hashed_password?: string;
}
const PATCHABLE = ['username', 'is_active', 'is_verified', 'role', 'hashed_password'] as const;

export interface UserFilters {
  auth_provider?: AuthProvider;
  is_active?: boolean;
  ibkr_connected?: boolean;
  last_login_since?: Date;
  created_since?: Date;
}

export interface Credentials {
  id: number;
  hashed_password: string | null;
  is_active: boolean;
}

export type UserWithScripts = User & {
  scripts: Script[];
  /** GET /scripts cursor after the last embedded script; null when all are embedded. */
  scripts_cursor: string | null;
};

// The maximum keeps an out-of-range id (1e300) a tampered cursor, not an SQL data error.
const UserCursor = Type.Tuple([Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })]);

export class UserRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  private get sql() {
    return this.db.sql;
  }

  /** Creates a user; the email is trimmed and lower-cased. EMAIL_TAKEN on a duplicate. */
  async create(input: NewUser): Promise<User> {
    const email = normalizeEmail(input.email);
    assertValid([['/username', usernameProblem(input.username)]]);
    const sql = this.sql;
    return this.db.one<User>(
      'users.create',
      sql`
        insert into users (email, username, hashed_password, auth_provider, google_id, role, is_verified)
        values (
          ${email}, ${input.username}, ${input.hashed_password ?? null},
          ${input.auth_provider ?? 'email'}, ${input.google_id ?? null},
          ${input.role ?? 'user'}, ${input.is_verified ?? false}
        )
        returning ${sql(USER_COLUMNS)}
      `,
    );
  }

  /** Hot (GET /me): columns written out, so the driver reuses the statement text as is. */
  async findById(id: number): Promise<User | null> {
    const sql = this.sql;
    return this.db.maybeOne<User>(
      'users.findById',
      sql`
        select id, email, username, auth_provider, role, is_active, is_verified, is_ibkr_connected,
          ibkr_user_id, ibkr_connected_at, created_at, updated_at, last_login_at
        from users
        where id = ${id}
      `,
    );
  }

  async getById(id: number): Promise<User> {
    return orNotFound(await this.findById(id));
  }

  /** Columns written out, as in findById: no identifier list to escape on every call. */
  async findByEmail(email: string): Promise<User | null> {
    const sql = this.sql;
    return this.db.maybeOne<User>(
      'users.findByEmail',
      sql`
        select id, email, username, auth_provider, role, is_active, is_verified, is_ibkr_connected,
          ibkr_user_id, ibkr_connected_at, created_at, updated_at, last_login_at
        from users
        where email = ${email.trim().toLowerCase()}
      `,
    );
  }

  /**
   * The user with this email, its row locked until the transaction ends (a role change
   * decided on what it read is not raced by another).
   */
  async lockByEmail(email: string): Promise<{ id: number; role: UserRole } | null> {
    const sql = this.sql;
    return this.db.maybeOne(
      'users.lockByEmail',
      sql`select id, role from users where email = ${email.trim().toLowerCase()} for update`,
    );
  }

  /** The user's role, its row locked until the transaction ends; null when there is no such user. */
  async lockRole(id: number): Promise<UserRole | null> {
    const sql = this.sql;
    const row = await this.db.maybeOne<{ role: UserRole }>(
      'users.lockRole',
      sql`select role from users where id = ${id} for update`,
    );
    return row?.role ?? null;
  }

  /** What login needs to check a password, for an email user. */
  async findCredentials(email: string): Promise<Credentials | null> {
    const sql = this.sql;
    return this.db.maybeOne<Credentials>(
      'users.findCredentials',
      sql`
        select id, hashed_password, is_active
        from users
        where email = ${email.trim().toLowerCase()}
          and auth_provider = 'email'
      `,
    );
  }

  async findCredentialsById(id: number): Promise<Credentials | null> {
    const sql = this.sql;
    return this.db.maybeOne<Credentials>(
      'users.findCredentialsById',
      sql`select id, hashed_password, is_active from users where id = ${id}`,
    );
  }

  async findByGoogleId(googleId: string): Promise<User | null> {
    const sql = this.sql;
    return this.db.maybeOne<User>(
      'users.findByGoogleId',
      sql`select ${sql(USER_COLUMNS)} from users where google_id = ${googleId}`,
    );
  }

  /** Records a Google sign-in of an active user with this Google id; null when there is none. */
  async touchGoogleLogin(googleId: string): Promise<User | null> {
    const sql = this.sql;
    return this.db.maybeOne<User>(
      'users.touchGoogleLogin',
      sql`
        update users set last_login_at = now()
        where google_id = ${googleId}
          and is_active
        returning ${sql(USER_COLUMNS)}
      `,
    );
  }

  /** Changes the given columns; an empty patch returns the user unchanged. */
  async update(id: number, patch: UserPatch): Promise<User> {
    if (patch.username !== undefined) assertValid([['/username', usernameProblem(patch.username)]]);
    const columns = PATCHABLE.filter((c) => patch[c] !== undefined);
    if (columns.length === 0) return this.getById(id);
    const sql = this.sql;
    const user = await this.db.maybeOne<User>(
      'users.update',
      sql`
        update users
        set ${sql(patch, columns)}
        where id = ${id}
        returning ${sql(USER_COLUMNS)}
      `,
    );
    return orNotFound(user);
  }

  /**
   * Replaces the password hash only while it is still `expected` (compare-and-set):
   * of two changes checked against the same hash, the second finds the first's hash
   * (PostgreSQL rechecks the condition on the row the first committed) and changes
   * nothing. False when nothing was changed (the hash differs, or no such user).
   */
  async replacePassword(id: number, expected: string, hashed: string): Promise<boolean> {
    const sql = this.sql;
    const n = await this.db.count(
      'users.replacePassword',
      sql`
        update users
        set hashed_password = ${hashed}
        where id = ${id}
          and hashed_password = ${expected}
      `,
    );
    return n === 1;
  }

  async deactivate(id: number): Promise<User> {
    return this.update(id, { is_active: false });
  }

  /**
   * Records a successful sign-in, only if the account is still active and still has
   * the password hash the sign-in was checked against: a password change or a
   * deactivation committed since the check wins, and null comes back.
   */
  async touchLogin(id: number, checkedHash: string): Promise<User | null> {
    const sql = this.sql;
    return this.db.maybeOne<User>(
      'users.touchLogin',
      sql`
        update users set last_login_at = now()
        where id = ${id}
          and hashed_password = ${checkedHash}
          and is_active
        returning ${sql(USER_COLUMNS)}
      `,
    );
  }

  /** Deletes the user and, by cascade, its tokens, scripts, their bytes and output. */
  async delete(id: number): Promise<void> {
    const deleted = await this.db.count('users.delete', this.sql`delete from users where id = ${id}`);
    if (deleted === 0) throw new NotFoundError('user');
  }

  /** Offset page, newest first, with the total, in one round trip. */
  async listPage(filters: UserFilters, page: OffsetQuery): Promise<OffsetPage<User>> {
    const db = this.db.reader;
    const sql = db.sql;
    const where = this.where(filters);
    const rows = await db.many<PageRow<User>>(
      'users.listPage',
      sql`
        select c.total, u.*
        from (select count(*) as total from users ${where}) as c
        left join lateral (
          select ${sql(USER_COLUMNS)}
          from users
          ${where}
          order by id desc
          limit ${page.per_page}
          offset ${offsetOf(page)}
        ) as u on true
      `,
    );
    return offsetPage(rowsOf(rows), rows[0]?.total ?? 0, page);
  }

  /** Keyset page, newest first; `cursor` null for the first page. Stays fast at any depth. */
  async listAfter(filters: UserFilters, cursor: string | null, limit: number): Promise<CursorPage<User>> {
    const db = this.db.reader;
    const sql = db.sql;
    const after = cursor === null ? null : decodeCursor(cursor, UserCursor)[0];
    const rows = await db.many<User>(
      'users.listAfter',
      sql`
        select ${sql(USER_COLUMNS)}
        from users
        ${this.where(filters)}
        ${after === null ? sql`` : sql`and id < ${after}`}
        order by id desc
        limit ${limit + 1}
      `,
    );
    return cursorPage(rows, limit, (u) => [u.id]);
  }

  /**
   * Case-insensitive substring search of email or username, served by the trigram
   * GIN indexes (a BitmapOr of ix_users_email_trgm and ix_users_username_trgm).
   *
   * The matches are collected first (a MATERIALIZED CTE), then ordered and cut. With
   * `order by id limit n` on the table itself, PostgreSQL may instead walk the primary
   * key and filter every row until n match (the LIMIT trap): fast when most rows
   * match, but a rare name — the usual search — then reads most of the table, and
   * which plan wins flips with the statistics (seen in bench/: 4 ms against 1 ms at
   * 100k users). Collected first, a selective term always uses the trigram indexes,
   * and the worst case (a term most users match) is one sequential scan.
   */
  async search(term: string, limit: number): Promise<User[]> {
    const db = this.db.reader;
    const sql = db.sql;
    const pattern = likeContains(term);
    return db.many<User>(
      'users.search',
      sql`
        with matches as materialized (
          select ${sql(USER_COLUMNS)}
          from users
          where email ilike ${pattern} or username ilike ${pattern}
        )
        select * from matches
        order by id
        limit ${limit}
      `,
    );
  }

  /** IBKR-connected users signed in since `since`, most recent first (the original's "active traders"). */
  async listIbkrConnectedActiveSince(since: Date, limit: number): Promise<User[]> {
    const db = this.db.reader;
    const sql = db.sql;
    return db.many<User>(
      'users.listIbkrConnectedActiveSince',
      sql`
        select ${sql(USER_COLUMNS)}
        from users
        where is_ibkr_connected
          and last_login_at >= ${since}
        order by last_login_at desc, id desc
        limit ${limit}
      `,
    );
  }

  /**
   * The user and its newest `limit` scripts (newest first) in one query: the
   * eager-loading case. `scripts_next` is the cursor of GET /scripts (sort
   * `-created_at`) that continues after the last one shown, or null when there are
   * no more.
   */
  async findWithScripts(id: number, limit: number): Promise<UserWithScripts | null> {
    const sql = this.sql;
    const row = await this.db.maybeOne<User & { scripts: Record<string, unknown>[] }>(
      'users.findWithScripts',
      sql`
        select ${sql(USER_COLUMNS.map((c) => `u.${c}`))},
          coalesce(
            (select json_agg(s order by s.created_at desc, s.id desc)
             from (
               select ${sql(SCRIPT_COLUMNS)}, created_at::text as sort_key
               from scripts
               where user_id = u.id
               order by created_at desc, id desc
               limit ${limit + 1}
             ) as s),
            '[]'
          ) as scripts
        from users as u
        where u.id = ${id}
      `,
    );
    if (row === null) return null;
    const page = cursorPage(row.scripts, limit, (s) => ['-created_at', s.sort_key, s.id]);
    return {
      ...row,
      scripts: page.items.map(({ sort_key: _key, ...s }) => scriptFromJson(s)),
      scripts_cursor: page.next_cursor,
    };
  }

  private where(f: UserFilters): Fragment {
    const sql = this.sql;
    return sql`
      where true
      ${f.auth_provider === undefined ? sql`` : sql`and auth_provider = ${f.auth_provider}`}
      ${f.is_active === undefined ? sql`` : sql`and is_active = ${f.is_active}`}
      ${f.ibkr_connected === undefined ? sql`` : sql`and is_ibkr_connected = ${f.ibkr_connected}`}
      ${f.last_login_since === undefined ? sql`` : sql`and last_login_at >= ${f.last_login_since}`}
      ${f.created_since === undefined ? sql`` : sql`and created_at >= ${f.created_since}`}
    `;
  }
}

function orNotFound(user: User | null): User {
  if (user === null) throw new NotFoundError('user');
  return user;
}
