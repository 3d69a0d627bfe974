/**
 * The domain's errors. Repositories and services throw these; the HTTP layer
 * maps each `code` to a status (src/http/errors.ts). Nothing here knows HTTP,
 * and nothing anywhere decides by an error's message text.
 */

/** One invalid field: a JSON-pointer-like path and what is wrong with it. */
export interface FieldError {
  path: string;
  message: string;
}

export abstract class DomainError extends Error {
  /** Stable machine-readable code, part of the API contract. */
  abstract readonly code: string;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Input breaks a rule (format, range, length). */
export class ValidationError extends DomainError {
  readonly code: string;
  readonly errors: FieldError[];
  /**
   * Set when the database refused a value without saying where it came from (a NUL
   * character in any text parameter): tells the offending value apart, so the layer
   * that knows the input (HTTP) can name the field that carried it.
   */
  readonly offending?: (value: string) => boolean;
  constructor(
    errors: FieldError[],
    options?: ErrorOptions & {
      code?: string;
      message?: string;
      offending?: (value: string) => boolean;
    },
  ) {
    super(
      options?.message ?? errors.map((e) => (e.path ? `${e.path}: ${e.message}` : e.message)).join('; '),
      options,
    );
    this.errors = errors;
    this.code = options?.code ?? 'VALIDATION_FAILED';
    if (options?.offending) this.offending = options.offending;
  }
  static field(path: string, message: string, code?: string): ValidationError {
    return new ValidationError([{ path, message }], { code });
  }
}

/** The row does not exist, or is not visible to the caller (the two look the same on purpose). */
export class NotFoundError extends DomainError {
  readonly code = 'NOT_FOUND';
  readonly resource: string;

  constructor(resource: string, message = `${resource} not found`, options?: ErrorOptions) {
    super(message, options);
    this.resource = resource;
  }
}

/** A uniqueness rule: `code` names which (EMAIL_TAKEN, IBKR_ACCOUNT_TAKEN, ...). */
export class ConflictError extends DomainError {
  readonly code: string;
  readonly constraint?: string;

  constructor(code: string, message: string, constraint?: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.constraint = constraint;
  }
}

/** A row referenced by another cannot go, or a referenced row does not exist. */
export class ForeignKeyError extends DomainError {
  readonly code = 'REFERENCE_VIOLATION';
  readonly constraint?: string;

  constructor(message: string, constraint?: string, options?: ErrorOptions) {
    super(message, options);
    this.constraint = constraint;
  }
}

/** A state transition that the status machine does not allow from the row's current state. */
export class InvalidStateError extends DomainError {
  readonly code = 'INVALID_STATE';
  readonly current?: string;

  constructor(message: string, current?: string, options?: ErrorOptions) {
    super(message, options);
    this.current = current;
  }
}

/** A per-user limit on queued + running scripts. */
export class TooManyRunningError extends DomainError {
  readonly code = 'TOO_MANY_RUNNING';
  readonly limit: number;

  constructor(limit: number) {
    super(`at most ${limit} scripts may be queued or running at once`);
    this.limit = limit;
  }
}

/** An account keeps MAX_SCRIPTS_PER_USER scripts already: delete one to upload another (409). */
export class ScriptQuotaError extends DomainError {
  readonly code = 'SCRIPT_QUOTA_EXCEEDED';
  readonly limit: number;

  constructor(limit: number) {
    super(`an account may keep at most ${limit} scripts; delete one to upload another`);
    this.limit = limit;
  }
}

/** The upload would take an account's scripts past MAX_STORAGE_BYTES_PER_USER bytes (413). */
export class StorageQuotaError extends DomainError {
  readonly code = 'STORAGE_QUOTA_EXCEEDED';
  readonly limit: number;
  readonly used: number;

  constructor(limit: number, used: number) {
    super(`an account's scripts may take at most ${limit} bytes together; ${used} are in use`);
    this.limit = limit;
    this.used = used;
  }
}

/** Too many sign-in attempts for one email: it is locked for a while (a 429 with Retry-After). */
export class TooManyLoginAttemptsError extends DomainError {
  readonly code = 'TOO_MANY_LOGIN_ATTEMPTS';
  readonly retryAfterSeconds: number;

  constructor(retryAfterSeconds: number) {
    super(
      `too many sign-in attempts for this account; try again in ${retryAfterSeconds} s (or reset the password)`,
    );
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

export class UnauthenticatedError extends DomainError {
  readonly code: string;
  constructor(message: string, code = 'UNAUTHENTICATED', options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

export class ForbiddenError extends DomainError {
  readonly code: string;
  constructor(message: string, code = 'FORBIDDEN') {
    super(message);
    this.code = code;
  }
}

export class PayloadTooLargeError extends DomainError {
  readonly code = 'PAYLOAD_TOO_LARGE';
}

export class UnsupportedFileTypeError extends DomainError {
  readonly code = 'UNSUPPORTED_FILE_TYPE';
}

/** A service we depend on (Google's signing keys) did not answer in time. Retrying later may work. */
export class UpstreamUnavailableError extends DomainError {
  readonly code: string;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** The database cannot be reached, timed out, or is shutting down. Retrying later may work. */
export class DatabaseUnavailableError extends DomainError {
  readonly code = 'DATABASE_UNAVAILABLE';
}
