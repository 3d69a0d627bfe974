/**
 * PostgreSQL error → domain error, in one place (slonik's pattern). Decisions key
 * on the SQLSTATE and the constraint name, never on message text. Applied by
 * Database.query/transaction, so repositories only ever see domain errors.
 *
 * SQLSTATEs: https://www.postgresql.org/docs/current/errcodes-appendix.html
 */
import postgres from 'postgres';
import {
  ConflictError,
  DatabaseUnavailableError,
  type DomainError,
  ForeignKeyError,
  InvalidStateError,
  NotFoundError,
  ValidationError,
} from '../domain/errors.ts';

/** Unique constraints → the API's conflict code and message. */
const UNIQUE_VIOLATIONS: Record<string, { code: string; message: string }> = {
  uq_users_email: { code: 'EMAIL_TAKEN', message: 'an account with this email already exists' },
  uq_users_google_id: {
    code: 'GOOGLE_ACCOUNT_TAKEN',
    message: 'this Google account is linked to another user',
  },
  uq_users_ibkr_user_id: {
    code: 'IBKR_ACCOUNT_TAKEN',
    message: 'this Interactive Brokers account is linked to another user',
  },
};

/** Foreign keys → which parent was missing (all our FKs cascade, so "still in use" cannot happen). */
const FOREIGN_KEYS: Record<string, string> = {
  fk_scripts_user: 'user',
  fk_api_tokens_user: 'user',
  fk_script_schedules_script: 'script',
  fk_script_runs_script: 'script',
  fk_run_log_chunks_run: 'run',
};

/** Check constraints → the field and the rule, for a readable 400. */
const CHECKS: Record<string, { path: string; message: string }> = {
  ck_users_email_format: { path: '/email', message: 'must be an email address' },
  ck_users_email_lower_case: { path: '/email', message: 'must be trimmed and lower-case' },
  ck_users_username_format: {
    path: '/username',
    message: 'must be 3 to 100 characters of letters, digits, underscore or hyphen',
  },
  ck_users_hashed_password_argon2id: { path: '/hashed_password', message: 'must be an argon2id hash' },
  ck_users_email_user_has_password: { path: '/password', message: 'an email user needs a password' },
  ck_users_google_user_has_google_id: { path: '/google_id', message: 'a Google user needs a google_id' },
  ck_users_ibkr_user_id_length: { path: '/ibkr_user_id', message: 'must be 1 to 100 characters' },
  ck_scripts_positive_file_size: { path: '/file', message: 'must not be empty' },
  ck_scripts_file_extension: { path: '/file', message: 'must be a .py, .js or .ts file' },
  ck_scripts_execution_time_non_negative: {
    path: '/execution_time_seconds',
    message: 'must not be negative',
  },
  ck_scripts_memory_usage_non_negative: { path: '/memory_usage_mb', message: 'must not be negative' },
  ck_script_schedules_cron_format: {
    path: '/cron',
    message: 'must have 5 fields (minute hour day-of-month month day-of-week)',
  },
  ck_script_schedules_timezone_format: { path: '/timezone', message: 'must be an IANA time zone name' },
};

/** Data exceptions (class 22) a client's input can cause, in words. */
const DATA_EXCEPTIONS: Record<string, string> = {
  '22001': 'is too long',
  '22003': 'is a number out of range',
  '22007': 'is not a valid date or time',
  '22008': 'is a date or time out of range',
  '22021': 'contains a character that cannot be stored (NUL, or invalid UTF-8)',
  '22P02': 'has the wrong format for its type',
  '22P05': 'contains a character that cannot be stored (NUL, or invalid UTF-8)',
};

/** 22021 character_not_in_repertoire, 22P05 untranslatable_character: from a JS string, only NUL. */
const UNSTORABLE_CHARACTER: ReadonlySet<string> = new Set(['22021', '22P05']);
const hasNul = (value: string): boolean => value.includes('\u0000');

/** The parameters postgres.js attaches to the errors of a query (serialized: strings, or null). */
function parametersOf(error: object): string[] {
  const parameters = (error as { parameters?: unknown }).parameters;
  return Array.isArray(parameters) ? parameters.filter((p): p is string => typeof p === 'string') : [];
}

/**
 * SQLSTATEs after which the same transaction, run again, may succeed.
 * 40001 serialization_failure: a SERIALIZABLE/REPEATABLE READ transaction lost a race.
 * 40P01 deadlock_detected: PostgreSQL chose this transaction as the deadlock victim.
 */
export const RETRYABLE_SQLSTATES: ReadonlySet<string> = new Set(['40001', '40P01']);

/**
 * The server ended the connection the statement was on (57P01 admin_shutdown: a
 * pg_terminate_backend or a fast shutdown; 57P02 crash_shutdown). The statement did not
 * commit: the server reports it before the statement's CommandComplete or not at all.
 * The driver (postgres 3.4.9) also hands this error, stale, to the first statement sent
 * after that connection reconnects, which never reached the server: running such a
 * statement once more, on a connection of the pool, is safe either way.
 */
export function wasTerminated(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 3; depth++) {
    const code = sqlstate(e);
    if (code === '57P01' || code === '57P02') return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/** The database is not there or not answering; the request may succeed later. */
const UNAVAILABLE_SQLSTATE_CLASSES = ['08', '53', '57P'] as const; // connection, resources, operator intervention
const UNAVAILABLE_CLIENT_CODES: ReadonlySet<string> = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/** A serialization failure or deadlock that outlived its retries. */
export class ConcurrentUpdateError extends ConflictError {
  constructor(options?: ErrorOptions) {
    super('CONCURRENT_UPDATE', 'the row was changed concurrently; try again', undefined, options);
  }
}

function sqlstate(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** True for a (mapped or raw) error that a retried transaction may not hit again. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof ConcurrentUpdateError) return true;
  const code = sqlstate(error);
  return code !== undefined && RETRYABLE_SQLSTATES.has(code);
}

/**
 * Maps a thrown value to a DomainError when it is a database condition the
 * domain knows; returns anything else unchanged (a bug, answered as 500).
 */
export function mapPostgresError(error: unknown): unknown {
  if (error instanceof Error && 'code' in error && !(error instanceof postgres.PostgresError)) {
    const code = sqlstate(error);
    if (code !== undefined && UNAVAILABLE_CLIENT_CODES.has(code))
      return new DatabaseUnavailableError('the database is unavailable', { cause: error });
    return error;
  }
  if (!(error instanceof postgres.PostgresError)) return error;
  const code = error.code;
  const constraint = error.constraint_name;
  const options = { cause: error };
  let mapped: DomainError | undefined;
  if (code === '23505' && constraint === 'uq_script_runs_live_per_script') {
    mapped = new InvalidStateError('the script already has a queued or running run', undefined, options);
  } else if (code === '23505') {
    const known = constraint === undefined ? undefined : UNIQUE_VIOLATIONS[constraint];
    mapped = known
      ? new ConflictError(known.code, known.message, constraint, options)
      : new ConflictError('CONFLICT', 'a row with these values already exists', constraint, options);
  } else if (code === '23503') {
    const parent = constraint === undefined ? undefined : FOREIGN_KEYS[constraint];
    mapped = parent
      ? new NotFoundError(parent, undefined, options)
      : new ForeignKeyError('a referenced row does not exist or is still referenced', constraint, options);
  } else if (code === '23514') {
    if (constraint === 'ck_scripts_status_transition') {
      mapped = new InvalidStateError('the script is not in a state that allows this', undefined, options);
    } else if (constraint === 'ck_script_runs_status_transition') {
      mapped = new InvalidStateError('the run is not in a state that allows this', undefined, options);
    } else {
      const known = constraint === undefined ? undefined : CHECKS[constraint];
      mapped = new ValidationError(
        [known ?? { path: '', message: `violates rule ${constraint ?? 'unknown'}` }],
        {
          ...options,
        },
      );
    }
  } else if (code === '23502') {
    mapped = new ValidationError([{ path: `/${error.column_name ?? ''}`, message: 'is required' }], options);
  } else if (code.startsWith('22')) {
    // Data exceptions: a value out of range, too long, or not of the column's type. PostgreSQL
    // names the column only sometimes; the kind of problem it always gives. When it does not,
    // and the culprit can be told apart by its value (a NUL is refused in any text parameter,
    // before any column is involved), the error carries that test so that the layer holding
    // the input can name the field (src/http/errors.ts).
    const message = DATA_EXCEPTIONS[code] ?? 'is not a valid value';
    const offending =
      !error.column_name && UNSTORABLE_CHARACTER.has(code) && parametersOf(error).some(hasNul)
        ? hasNul
        : undefined;
    mapped = new ValidationError([{ path: error.column_name ? `/${error.column_name}` : '', message }], {
      ...options,
      offending,
    });
  } else if (RETRYABLE_SQLSTATES.has(code)) {
    mapped = new ConcurrentUpdateError(options);
  } else if (code === '57014') {
    // query_canceled: statement_timeout, or our client-side cancel.
    mapped = new DatabaseUnavailableError('the database did not answer in time', options);
  } else if (UNAVAILABLE_SQLSTATE_CLASSES.some((prefix) => code.startsWith(prefix))) {
    mapped = new DatabaseUnavailableError('the database is unavailable', options);
  }
  return mapped ?? error;
}
