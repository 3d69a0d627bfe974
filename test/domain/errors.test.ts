/**
 * The domain's errors: each has the stable `code` the HTTP layer maps (part of the API
 * contract), its class name as `name`, the fields its handler reads, and its cause.
 */
import t from 'tap';
import {
  ConflictError,
  DatabaseUnavailableError,
  DomainError,
  ForbiddenError,
  ForeignKeyError,
  InvalidStateError,
  NotFoundError,
  PayloadTooLargeError,
  ScriptQuotaError,
  StorageQuotaError,
  TooManyLoginAttemptsError,
  TooManyRunningError,
  UnauthenticatedError,
  UnsupportedFileTypeError,
  UpstreamUnavailableError,
  ValidationError,
} from '../../src/domain/errors.ts';

t.test('ValidationError lists every field in its message; VALIDATION_FAILED unless told', async (t) => {
  const error = new ValidationError([
    { path: '/email', message: 'must be an email address' },
    { path: '', message: 'the body is empty' },
    { path: '/password', message: 'too short' },
  ]);
  t.equal(error.message, '/email: must be an email address; the body is empty; /password: too short');
  t.equal(error.code, 'VALIDATION_FAILED');
  t.equal(error.name, 'ValidationError');
  t.equal(error.errors.length, 3);
  t.equal(error.offending, undefined, 'no offending-value test unless given');
  t.ok(error instanceof DomainError && error instanceof Error);
});

t.test('ValidationError takes a code, a message, a cause and an offending-value test', async (t) => {
  const cause = new Error('22021: invalid byte sequence');
  const offending = (value: string) => value.includes('\u0000');
  const error = new ValidationError([{ path: '', message: 'contains NUL' }], {
    code: 'INVALID_TEXT',
    message: 'text may not contain NUL',
    cause,
    offending,
  });
  t.equal(error.code, 'INVALID_TEXT');
  t.equal(error.message, 'text may not contain NUL', 'the message given wins over the list');
  t.equal(error.cause, cause);
  t.equal(error.offending?.('a\u0000b'), true);
  t.equal(error.offending?.('ab'), false);
});

t.test('ValidationError.field: one field, an optional code', async (t) => {
  const plain = ValidationError.field('/cron', 'never fires');
  t.same(plain.errors, [{ path: '/cron', message: 'never fires' }]);
  t.equal(plain.message, '/cron: never fires');
  t.equal(plain.code, 'VALIDATION_FAILED');
  t.equal(ValidationError.field('/cursor', 'bad', 'INVALID_CURSOR').code, 'INVALID_CURSOR');
});

t.test('NotFoundError names the resource; its message defaults from it', async (t) => {
  const error = new NotFoundError('script');
  t.match(error, {
    code: 'NOT_FOUND',
    resource: 'script',
    message: 'script not found',
    name: 'NotFoundError',
  });
  const cause = new Error('x');
  const custom = new NotFoundError('run', 'no such run here', { cause });
  t.match(custom, { resource: 'run', message: 'no such run here' });
  t.equal(custom.cause, cause);
});

t.test('integrity errors carry their code and the constraint', async (t) => {
  const cause = new Error('23505');
  const conflict = new ConflictError('EMAIL_TAKEN', 'taken', 'uq_users_email', { cause });
  t.match(conflict, {
    code: 'EMAIL_TAKEN',
    message: 'taken',
    constraint: 'uq_users_email',
    name: 'ConflictError',
  });
  t.equal(conflict.cause, cause);
  t.equal(new ConflictError('X', 'y').constraint, undefined);

  const fk = new ForeignKeyError('still referenced', 'fk_scripts_user', { cause });
  t.match(fk, { code: 'REFERENCE_VIOLATION', constraint: 'fk_scripts_user', message: 'still referenced' });
  t.equal(fk.cause, cause);
  t.equal(new ForeignKeyError('gone').constraint, undefined);
});

t.test('InvalidStateError says the state the row was in', async (t) => {
  const cause = new Error('P0001');
  const error = new InvalidStateError('the script already has a running run', 'running', { cause });
  t.match(error, { code: 'INVALID_STATE', current: 'running', name: 'InvalidStateError' });
  t.equal(error.cause, cause);
  t.equal(new InvalidStateError('no').current, undefined);
});

t.test('limit errors carry their limit and say it', async (t) => {
  t.match(new TooManyRunningError(3), {
    code: 'TOO_MANY_RUNNING',
    limit: 3,
    message: 'at most 3 scripts may be queued or running at once',
  });
  t.match(new ScriptQuotaError(50), {
    code: 'SCRIPT_QUOTA_EXCEEDED',
    limit: 50,
    message: /at most 50 scripts/,
  });
  t.match(new StorageQuotaError(1000, 900), {
    code: 'STORAGE_QUOTA_EXCEEDED',
    limit: 1000,
    used: 900,
    message: /at most 1000 bytes together; 900 are in use/,
  });
  t.match(new TooManyLoginAttemptsError(42), {
    code: 'TOO_MANY_LOGIN_ATTEMPTS',
    retryAfterSeconds: 42,
    message: /try again in 42 s/,
  });
});

t.test('authentication and permission errors: a default code, or the one given', async (t) => {
  t.match(new UnauthenticatedError('who?'), { code: 'UNAUTHENTICATED', message: 'who?' });
  const cause = new Error('expired');
  const expired = new UnauthenticatedError('expired', 'TOKEN_EXPIRED', { cause });
  t.equal(expired.code, 'TOKEN_EXPIRED');
  t.equal(expired.cause, cause);
  t.match(new ForbiddenError('admins only'), {
    code: 'FORBIDDEN',
    message: 'admins only',
    name: 'ForbiddenError',
  });
  t.equal(new ForbiddenError('no', 'NOT_YOURS').code, 'NOT_YOURS');
});

t.test('payload, file type, upstream and database errors have their fixed codes', async (t) => {
  t.match(new PayloadTooLargeError('too big'), { code: 'PAYLOAD_TOO_LARGE', name: 'PayloadTooLargeError' });
  t.match(new UnsupportedFileTypeError('.exe'), { code: 'UNSUPPORTED_FILE_TYPE', message: '.exe' });
  const cause = new Error('ETIMEDOUT');
  const upstream = new UpstreamUnavailableError('GOOGLE_UNAVAILABLE', 'later', { cause });
  t.match(upstream, { code: 'GOOGLE_UNAVAILABLE', message: 'later', name: 'UpstreamUnavailableError' });
  t.equal(upstream.cause, cause);
  const down = new DatabaseUnavailableError('the database is unavailable', { cause });
  t.match(down, { code: 'DATABASE_UNAVAILABLE', name: 'DatabaseUnavailableError' });
  t.equal(down.cause, cause);
});

t.test('a subclass of a domain error is named after itself', async (t) => {
  class ScheduleGoneError extends NotFoundError {}
  const error = new ScheduleGoneError('schedule');
  t.equal(error.name, 'ScheduleGoneError');
  t.equal(error.code, 'NOT_FOUND');
  t.ok(error instanceof NotFoundError);
});
