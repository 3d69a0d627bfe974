/**
 * One error handler for the whole API: domain errors and Fastify's own 4xx become
 * RFC 9457 problem+json with a stable `code`; anything else is a bug, logged with
 * the request id and answered with a generic 500 that reveals nothing.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  ConflictError,
  DatabaseUnavailableError,
  DomainError,
  type FieldError,
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
} from '../domain/errors.ts';
import type { ProblemBody } from './schemas/common.ts';

const STATUS_OF: Array<[abstract new (...args: never[]) => DomainError, number]> = [
  [ValidationError, 400],
  [UnauthenticatedError, 401],
  [ForbiddenError, 403],
  [NotFoundError, 404],
  [ConflictError, 409],
  [InvalidStateError, 409],
  [ForeignKeyError, 409],
  [ScriptQuotaError, 409],
  [PayloadTooLargeError, 413],
  [StorageQuotaError, 413],
  [UnsupportedFileTypeError, 415],
  [TooManyRunningError, 429],
  [TooManyLoginAttemptsError, 429],
  [DatabaseUnavailableError, 503],
  [UpstreamUnavailableError, 503],
];

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  409: 'Conflict',
  413: 'Content Too Large',
  414: 'URI Too Long',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** Codes for Fastify's and its plugins' own client errors, by status. */
const GENERIC_CODES: Record<number, string> = {
  400: 'BAD_REQUEST',
  401: 'UNAUTHENTICATED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  406: 'UNSUPPORTED_MEDIA_TYPE',
  413: 'PAYLOAD_TOO_LARGE',
  414: 'URI_TOO_LONG',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  429: 'RATE_LIMITED',
};

export function problem(
  status: number,
  code: string,
  detail: string,
  extra: Partial<ProblemBody> = {},
): ProblemBody {
  return {
    type: `https://dollarclub.dev/problems/${code.toLowerCase().replaceAll('_', '-')}`,
    title: TITLES[status] ?? 'Error',
    status,
    detail,
    code,
    ...extra,
  };
}

/** The answer to a request that arrives while the server shuts down. */
export function shuttingDown(request_id: string): ProblemBody {
  return problem(503, 'SERVICE_UNAVAILABLE', 'the server is shutting down; try again', { request_id });
}

export function sendProblem(reply: FastifyReply, body: ProblemBody): FastifyReply {
  return reply.code(body.status).type('application/problem+json').send(body);
}

function toProblem(
  error: FastifyError | Error,
  request: FastifyRequest,
): { body: ProblemBody; log: boolean } {
  const request_id = request.id;
  if (error instanceof DomainError) {
    const status = STATUS_OF.find(([type]) => error instanceof type)?.[1] ?? 500;
    const errors =
      error instanceof ValidationError && error.errors.length > 0 ? namedFields(error, request) : undefined;
    return { body: problem(status, error.code, error.message, { request_id, errors }), log: status >= 500 };
  }
  const fastifyError = error as FastifyError;
  if (fastifyError.validation) {
    const errors = fastifyError.validation.map((v) => ({
      // The same pointer a domain rule would give (`/password`, `/per_page`): which part of the
      // request it is in is clear from the field, and one field never has two names.
      path: `${v.instancePath}${
        v.keyword === 'required' || v.keyword === 'additionalProperties'
          ? `/${String((v.params as Record<string, unknown>).missingProperty ?? (v.params as Record<string, unknown>).additionalProperty)}`
          : ''
      }`,
      message: v.keyword === 'additionalProperties' ? 'is not allowed' : (v.message ?? 'is invalid'),
    }));
    return {
      body: problem(400, 'VALIDATION_FAILED', 'the request is not valid', { request_id, errors }),
      log: false,
    };
  }
  const status = fastifyError.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    const code = GENERIC_CODES[status] ?? 'BAD_REQUEST';
    // Fastify's client-error messages describe the request, never the server.
    return {
      body: problem(status === 406 ? 415 : status, code, fastifyError.message, { request_id }),
      log: false,
    };
  }
  if (status === 503) {
    return {
      body: problem(503, 'SERVICE_UNAVAILABLE', 'the service is unavailable; try again shortly', {
        request_id,
      }),
      log: true,
    };
  }
  return {
    body: problem(500, 'INTERNAL', 'something went wrong on our side; it has been logged', { request_id }),
    log: true,
  };
}

/**
 * A ValidationError from the database may not say which field it is about (PostgreSQL
 * refuses a NUL character in any text parameter without naming a column). It then carries
 * a test for the offending value, and the field is the part of the request that holds such
 * a value: body, query string or path parameter, by the same pointer as the schema's errors.
 */
function namedFields(error: ValidationError, request: FastifyRequest): FieldError[] {
  const test = error.offending;
  if (test === undefined || error.errors.some((e) => e.path !== '')) return error.errors;
  const { message } = error.errors[0] as FieldError;
  const paths = new Set<string>();
  for (const input of [request.body, request.query, request.params]) findValues(input, '', test, paths, 0);
  return paths.size === 0 ? error.errors : [...paths].map((path) => ({ path, message }));
}

function findValues(
  value: unknown,
  path: string,
  test: (value: string) => boolean,
  found: Set<string>,
  depth: number,
): void {
  if (typeof value === 'string') {
    if (path !== '' && test(value)) found.add(path);
  } else if (value !== null && typeof value === 'object' && depth < 8 && !Buffer.isBuffer(value)) {
    for (const [key, inner] of Object.entries(value)) {
      findValues(inner, `${path}/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`, test, found, depth + 1);
    }
  }
}

/**
 * The error handler; also Fastify's `frameworkErrors` option, since a malformed URL
 * (FST_ERR_BAD_URL) or an over-long path parameter never reaches a route or setErrorHandler.
 */
export function handleError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const { body, log } = toProblem(error, request);
  if (log) request.log.error({ err: error }, 'request failed');
  else request.log.info({ code: body.code, status: body.status, detail: body.detail }, 'request refused');
  if (body.status === 401) reply.header('www-authenticate', 'Bearer');
  if (body.status === 503) reply.header('retry-after', '5');
  if (error instanceof TooManyLoginAttemptsError)
    reply.header('retry-after', String(error.retryAfterSeconds));
  return sendProblem(reply, body);
}

export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler(handleError);
  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      reply,
      problem(404, 'NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`, {
        request_id: request.id,
      }),
    ),
  );
}
