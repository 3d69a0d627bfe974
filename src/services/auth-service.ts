/**
 * Accounts and bearer tokens: register, login, logout, and the check every
 * authenticated request makes. Passwords are argon2id; tokens are random and
 * stored hashed; verified tokens are cached briefly (AuthCache).
 */
import {
  ConflictError,
  ForbiddenError,
  NotFoundError,
  TooManyLoginAttemptsError,
  UnauthenticatedError,
  ValidationError,
} from '../domain/errors.ts';
import { assertValid, normalizeEmail, passwordProblem, type User, usernameProblem } from '../domain/user.ts';
import type { Repositories } from '../repositories/index.ts';
import type { LoginLimit } from '../repositories/login-attempt-repository.ts';
import type { AuthCache, AuthIdentity } from './auth-cache.ts';
import { type GoogleIdentity, InvalidIdTokenError } from './google-id-token.ts';
import { hashPassword, isLegacyHash, verifyPassword } from './passwords.ts';
import { hashOfKey, newToken, tokenHash, tokenKey } from './tokens.ts';

export interface Session {
  user: User;
  token: string;
  /** When the token expires (a session cookie expires with it). */
  expires_at: Date;
}

/** A checked password change, ready to write (AuthService.preparePasswordChange). */
export interface PasswordChange {
  /** The stored hash the current password was verified against. */
  checked: string;
  /** The new password's hash. */
  hashed: string;
}

/** The identity of an authenticated request, and which token it used (its `tokenKey`). */
export interface Principal extends AuthIdentity {
  token_key: string;
}

/** Whose rows a caller may reach: its own, or everyone's (undefined) for an admin. */
export function scopeOf(principal: Pick<Principal, 'role' | 'user_id'>): number | undefined {
  return principal.role === 'admin' ? undefined : principal.user_id;
}

/**
 * Written out, not `{ ...identity, token_key }`: on Node 20 a spread followed by another
 * property takes V8's slow path, ~1 µs on every authenticated request (Node 24: ~40 ns).
 */
function principalOf(identity: AuthIdentity, key: string): Principal {
  return { user_id: identity.user_id, role: identity.role, token_key: key };
}

export class AuthService {
  private readonly repos: Repositories;
  private readonly cache: AuthCache;
  private readonly tokenTtlMs: number;
  /** Sign-in attempts per email (every process shares the count); unlimited when absent. */
  private readonly loginLimit?: LoginLimit;

  constructor(repos: Repositories, cache: AuthCache, tokenTtlMs: number, loginLimit?: LoginLimit) {
    this.repos = repos;
    this.cache = cache;
    this.tokenTtlMs = tokenTtlMs;
    this.loginLimit = loginLimit;
  }

  /** Creates an email account and signs it in. EMAIL_TAKEN when the email is registered. */
  async register(input: { email: string; username: string; password: string }): Promise<Session> {
    // Every cheap check before the expensive hash.
    const email = normalizeEmail(input.email);
    assertValid([
      ['/username', usernameProblem(input.username)],
      ['/password', passwordProblem(input.password)],
    ]);
    const hashed = await hashPassword(input.password);
    return this.repos.transaction(async (tx) => {
      const user = await tx.users.create({ email, username: input.username, hashed_password: hashed });
      return this.issue(tx, user);
    });
  }

  /**
   * Signs in by email and password. Unknown email and wrong password are the same
   * 401 and cost the same time; a deactivated account is 403 (only once the password
   * is proven, so it reveals nothing to a guesser). Every attempt counts against the
   * email's limit before the password is checked (so parallel guesses cannot all
   * pass), known email or not; past it, 429 TOO_MANY_LOGIN_ATTEMPTS until the lock
   * ends, even with the right password. A successful sign-in clears the count.
   */
  async login(email: string, password: string): Promise<Session> {
    const key = email.trim().toLowerCase();
    if (this.loginLimit !== undefined) {
      const verdict = await this.repos.loginAttempts.attempt(key, this.loginLimit);
      if (!verdict.allowed) throw new TooManyLoginAttemptsError(verdict.retry_after_seconds);
    }
    const credentials = await this.repos.users.findCredentials(email);
    const checked = credentials?.hashed_password ?? null;
    const ok = await verifyPassword(checked, password);
    if (credentials === null || checked === null || !ok)
      throw new UnauthenticatedError('wrong email or password');
    if (!credentials.is_active) throw new ForbiddenError('this account is deactivated', 'ACCOUNT_INACTIVE');
    // An imported bcrypt hash becomes argon2id now that the password is known.
    const upgraded = isLegacyHash(checked) ? await hashPassword(password) : null;
    return this.repos.transaction(async (tx) => {
      // The password was checked outside the transaction (hashing is slow): the sign-in
      // counts only if it is still the account's password and the account still active.
      const user = await tx.users.touchLogin(credentials.id, checked);
      if (user === null) throw new UnauthenticatedError('wrong email or password');
      if (upgraded !== null) await tx.users.replacePassword(user.id, checked, upgraded);
      if (this.loginLimit !== undefined) await tx.loginAttempts.clear(key);
      return this.issue(tx, user);
    });
  }

  /**
   * Signs in the user with this Google account (`sub`), creating it on first
   * sign-in (`auth_provider: 'google'`, verified). Never by email alone: an email
   * already owned by another account is EMAIL_TAKEN, whoever owns it.
   */
  async signInWithGoogle(identity: GoogleIdentity): Promise<Session & { created: boolean }> {
    let email: string;
    try {
      email = normalizeEmail(identity.email);
    } catch (error) {
      if (error instanceof ValidationError) throw new InvalidIdTokenError('the ID token has no usable email');
      throw error;
    }
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.repos.transaction(async (tx) => {
          // Each statement sees what is committed when it starts, so a concurrent first sign-in of
          // this account may commit its user between any two of them: every look-up that finds a
          // row goes through this one, which signs in to an active user and refuses an inactive one.
          const byGoogleId = async (): Promise<(Session & { created: boolean }) | null> => {
            const found = await tx.users.findByGoogleId(identity.sub);
            if (found === null) return null;
            const user = found.is_active ? await tx.users.touchGoogleLogin(identity.sub) : null;
            if (user === null) throw new ForbiddenError('this account is deactivated', 'ACCOUNT_INACTIVE');
            return { ...(await this.issue(tx, user)), created: false };
          };
          const known = await tx.users.touchGoogleLogin(identity.sub);
          if (known !== null) return { ...(await this.issue(tx, known)), created: false };
          const raced = await byGoogleId();
          if (raced !== null) return raced;
          if ((await tx.users.findByEmail(email)) !== null) {
            // The email's owner may be this very account, committed since the look-up above.
            const late = await byGoogleId();
            if (late !== null) return late;
            throw new EmailTakenError();
          }
          await tx.users.create({
            email,
            username: usernameFor(identity),
            auth_provider: 'google',
            google_id: identity.sub,
            is_verified: true,
          });
          const created = await tx.users.touchGoogleLogin(identity.sub);
          if (created === null) throw new Error('a user created in this transaction is gone');
          return { ...(await this.issue(tx, created)), created: true };
        });
      } catch (error) {
        // The insert met a row committed meanwhile, most likely by a concurrent first sign-in of
        // the same Google account (on its email or its google_id, whichever index PostgreSQL checks
        // first): once more, to sign in to that one. A genuine email owner is found by the check above.
        const raced = error instanceof ConflictError && !(error instanceof EmailTakenError);
        if (attempt === 1 && raced && (error.code === 'GOOGLE_ACCOUNT_TAKEN' || error.code === 'EMAIL_TAKEN'))
          continue;
        throw error;
      }
    }
  }

  /** Revokes the token in use. */
  async logout(principal: Principal): Promise<void> {
    await this.repos.tokens.revoke(hashOfKey(principal.token_key));
    this.cache.evictKey(principal.token_key);
  }

  /** Who presents this bearer token; UnauthenticatedError when nobody valid does. */
  async authenticate(token: string): Promise<Principal> {
    const key = tokenKey(token);
    if (key === null) throw new UnauthenticatedError('invalid or expired token');
    return this.known(key) ?? this.lookUp(key);
  }

  /**
   * Who presents this bearer token when the cache knows it, without a promise or a query:
   * the path of nearly every authenticated request (src/http/plugins/auth.ts). Null when
   * it must be looked up (`authenticate`), which also refuses what cannot be a token.
   */
  cached(token: string): Principal | null {
    const key = tokenKey(token);
    return key === null ? null : this.known(key);
  }

  private known(key: string): Principal | null {
    const identity = this.cache.get(key);
    return identity === null ? null : principalOf(identity, key);
  }

  private async lookUp(key: string): Promise<Principal> {
    // Taken before the query: an eviction while it runs means its answer may be stale (AuthCache).
    const generation = this.cache.generation();
    const identity = await this.repos.tokens.authenticate(hashOfKey(key));
    if (identity === null) throw new UnauthenticatedError('invalid or expired token');
    const principal = { user_id: identity.user_id, role: identity.role };
    this.cache.set(key, principal, identity.expires_at, generation);
    return principalOf(principal, key);
  }

  /**
   * Sets a new password after checking the current one, and ends every other
   * session of the user (the one in use stays signed in). PASSWORD_CHANGED (409)
   * when another request changed the password between the check and the write.
   */
  async changePassword(principal: Principal, current: string | undefined, next: string): Promise<void> {
    const change = await this.preparePasswordChange(principal, current, next);
    await this.repos.transaction((tx) => this.applyPasswordChange(tx, principal, change));
    this.cache.evictUser(principal.user_id);
  }

  /**
   * The slow half of a password change, to run outside any transaction: checks the
   * rules and the current password, and hashes the new one. The hash the check was
   * made against comes back too: `applyPasswordChange` writes only over that one.
   */
  async preparePasswordChange(
    principal: Principal,
    current: string | undefined,
    next: string,
  ): Promise<PasswordChange> {
    assertValid([['/new_password', passwordProblem(next)]]);
    if (current === undefined) assertValid([['/current_password', 'is required to set a new password']]);
    const credentials = await this.repos.users.findCredentialsById(principal.user_id);
    const checked = credentials?.hashed_password ?? null;
    if (checked === null)
      assertValid([['/current_password', 'this account signs in with Google and has no password']]);
    if (!(await verifyPassword(checked, current ?? '')))
      assertValid([['/current_password', 'is not the current password']]);
    return { checked: checked!, hashed: await hashPassword(next) };
  }

  /**
   * The write of a password change, inside the caller's transaction `tx`: the new
   * hash replaces the checked one only if it is still stored (a concurrent change
   * makes this a ConflictError PASSWORD_CHANGED, and the transaction rolls back),
   * and every other token of the user is revoked with it. The caller evicts the
   * user's cached tokens after the commit (`evictUser`).
   */
  async applyPasswordChange(tx: Repositories, principal: Principal, change: PasswordChange): Promise<void> {
    if (!(await tx.users.replacePassword(principal.user_id, change.checked, change.hashed))) {
      if ((await tx.users.findCredentialsById(principal.user_id)) === null) throw new NotFoundError('user');
      throw new ConflictError(
        'PASSWORD_CHANGED',
        'the password was changed by another request in the meantime; nothing was changed',
      );
    }
    await tx.tokens.revokeAllForUser(principal.user_id, hashOfKey(principal.token_key));
  }

  /** Forget cached tokens of a user whose role, state or existence changed (other processes hear it by NOTIFY). */
  evictUser(userId: number): void {
    this.cache.evictUser(userId);
  }

  private async issue(tx: Repositories, user: User): Promise<Session> {
    const token = newToken();
    const { expires_at } = await tx.tokens.create(
      user.id,
      tokenHash(token)!,
      new Date(Date.now() + this.tokenTtlMs),
    );
    return { user, token, expires_at };
  }
}

/** EMAIL_TAKEN found by looking, not by a racing insert: final, never retried. */
class EmailTakenError extends ConflictError {
  constructor() {
    super('EMAIL_TAKEN', 'an account with this email already exists; sign in the way it was created');
  }
}

/** A username for a new Google user: its name (or the email's local part) in the allowed characters. */
export function usernameFor(identity: Pick<GoogleIdentity, 'name' | 'email'>): string {
  const base = (identity.name ?? identity.email.split('@')[0] ?? '')
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .trim()
    .replace(/[^A-Za-z0-9_-]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, 100);
  return base.length >= 3 ? base : `user_${base}`.slice(0, 100).padEnd(3, '_');
}
