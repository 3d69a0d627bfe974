/**
 * Users: accounts, their profile, role and state, one user at a time (the IBKR link:
 * ibkr-link-repository.ts; pages, search and a user with its scripts: user-listings.ts).
 * Every statement returns only the public columns (USER_COLUMNS); password hash
 * and IBKR tokens are read by the dedicated methods that need them.
 */
import type { Database } from '../db/database.ts';
import type { AuthProvider, UserRole } from '../domain/enums.ts';
import { NotFoundError } from '../domain/errors.ts';
import { assertValid, normalizeEmail, USER_COLUMNS, type User, usernameProblem } from '../domain/user.ts';

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

export interface Credentials {
  id: number;
  hashed_password: string | null;
  is_active: boolean;
}

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
}

function orNotFound(user: User | null): User {
  if (user === null) throw new NotFoundError('user');
  return user;
}
