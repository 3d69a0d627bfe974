/**
 * Users: the row as the database returns it, and the rules a user's fields obey.
 * The same rules are CHECK constraints in sql/schema/10-users.sql; these give the
 * clear message first.
 */
import type { AuthProvider, UserRole } from './enums.ts';
import { type FieldError, ValidationError } from './errors.ts';

/** A user as the API may show it: no password hash, no IBKR token. */
export interface User {
  id: number;
  email: string;
  username: string;
  auth_provider: AuthProvider;
  role: UserRole;
  is_active: boolean;
  is_verified: boolean;
  is_ibkr_connected: boolean;
  ibkr_user_id: string | null;
  ibkr_connected_at: Date | null;
  created_at: Date;
  updated_at: Date;
  last_login_at: Date | null;
}

/** The public columns, in order; every query that returns a `User` selects these. */
export const USER_COLUMNS = [
  'id',
  'email',
  'username',
  'auth_provider',
  'role',
  'is_active',
  'is_verified',
  'is_ibkr_connected',
  'ibkr_user_id',
  'ibkr_connected_at',
  'created_at',
  'updated_at',
  'last_login_at',
] as const satisfies readonly (keyof User)[];

export const EMAIL_MAX_LENGTH = 254;
export const USERNAME_PATTERN = /^[A-Za-z0-9_-]{3,100}$/;
export const PASSWORD_MIN_LENGTH = 8;
export const PASSWORD_MAX_LENGTH = 256;
export const IBKR_USER_ID_MAX_LENGTH = 100;
// Deliberately simple: one @, no spaces, a dot in the domain. The same expression is
// ck_users_email_format; deliverability is proven by verification, not by a regex.
const EMAIL_PATTERN = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;

/** Trims and lower-cases an email, or explains why it is not one. */
export function normalizeEmail(input: string, path = '/email'): string {
  const email = input.trim().toLowerCase();
  if (email.length === 0) throw ValidationError.field(path, 'must not be empty');
  if (email.length > EMAIL_MAX_LENGTH)
    throw ValidationError.field(path, `must be at most ${EMAIL_MAX_LENGTH} characters`);
  if (!EMAIL_PATTERN.test(email)) throw ValidationError.field(path, 'must be an email address');
  return email;
}

export function usernameProblem(username: string): string | null {
  return USERNAME_PATTERN.test(username)
    ? null
    : 'must be 3 to 100 characters of letters, digits, underscore or hyphen';
}

export function passwordProblem(password: string): string | null {
  // Length in code points, so that a password of emoji counts as a person would count it.
  const length = [...password].length;
  if (length < PASSWORD_MIN_LENGTH) return `must be at least ${PASSWORD_MIN_LENGTH} characters`;
  if (length > PASSWORD_MAX_LENGTH) return `must be at most ${PASSWORD_MAX_LENGTH} characters`;
  return null;
}

/** Throws one ValidationError listing every problem among the given fields. */
export function assertValid(checks: Array<[path: string, problem: string | null]>): void {
  const errors: FieldError[] = [];
  for (const [path, problem] of checks) if (problem !== null) errors.push({ path, message: problem });
  if (errors.length > 0) throw new ValidationError(errors);
}
