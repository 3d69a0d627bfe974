/**
 * Schemas shared by every resource. Shared objects carry an `$id`, are added to
 * the app once (see app.ts) and referenced with Type.Ref, so the OpenAPI document
 * has named components instead of copies.
 */
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import type { FastifySchema } from 'fastify';

/** A timestamp: a Date in TypeScript, an ISO 8601 string in JSON. */
export const DateTime = () => Type.Unsafe<Date>({ type: 'string', format: 'date-time' });
export const NullableDateTime = () =>
  Type.Unsafe<Date | null>({ type: ['string', 'null'], format: 'date-time' });

/** `T | null` as a JSON type union (not anyOf), which the serializer handles natively. */
export function Nullable<T extends TSchema & { type: string }>(schema: T) {
  return Type.Unsafe<Static<T> | null>({ ...schema, type: [schema.type, 'null'] });
}

export const FieldError = Type.Object(
  { path: Type.String(), message: Type.String() },
  { $id: 'FieldError', additionalProperties: false },
);

export const Problem = Type.Object(
  {
    type: Type.String({ description: 'a URI naming the kind of problem' }),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String({ description: 'stable, machine-readable: VALIDATION_FAILED, NOT_FOUND, ...' }),
    request_id: Type.Optional(Type.String()),
    errors: Type.Optional(Type.Array(Type.Ref(FieldError))),
  },
  { $id: 'Problem', description: 'RFC 9457 problem details (application/problem+json)' },
);
export type ProblemBody = Static<typeof Problem>;

/**
 * A Problem answer, under its own media type: the OpenAPI document says
 * application/problem+json, and Fastify serialises a reply of that type (sendProblem)
 * with this schema.
 */
function problemResponse() {
  return Type.Unsafe<ProblemBody>({
    description: 'RFC 9457 problem details',
    content: { 'application/problem+json': { schema: Type.Ref(Problem) } },
  });
}

/** The error answers of a route: each status maps to the Problem schema. */
export function problems<const S extends readonly number[]>(...statuses: S) {
  const response = problemResponse();
  return Object.fromEntries(statuses.map((s) => [s, response])) as {
    [K in S[number]]: typeof response;
  };
}

/** Methods whose requests Fastify reads a body of (a GET or HEAD body is ignored). */
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** Whether Fastify reads request bodies for a route of `method` (one or several). */
export function readsBody(method: string | string[]): boolean {
  return [method].flat().some((m) => BODY_METHODS.has(m.toUpperCase()));
}

/**
 * An onRoute hook: adds the Problem answers any request of a documented route may
 * get, whatever its handler does, when the route does not declare them itself —
 * 500 (a bug) and 503 (database unavailable, overloaded, shutting down) everywhere;
 * 400 (malformed body), 413 (body over the limit) and 415 (a content type without a
 * parser) wherever Fastify reads a body, even a route that expects none. So the
 * OpenAPI document lists every status a route answers. Hidden routes are left alone.
 */
export function completeResponses(route: {
  method: string | string[];
  url: string;
  schema?: FastifySchema;
}): void {
  const schema = route.schema as (FastifySchema & { hide?: boolean; operationId?: string }) | undefined;
  if (schema === undefined || schema.hide === true) return;
  const response: Record<string, unknown> = { ...(schema.response as Record<string, unknown> | undefined) };
  const statuses = [500, 503];
  if (readsBody(route.method)) statuses.push(400, 413, 415);
  for (const status of statuses) response[status] ??= problemResponse();
  route.schema = {
    ...schema,
    response,
    operationId: schema.operationId ?? operationId(route.method, route.url),
    // Public unless the authenticated scope (app.ts) says otherwise, which it does after this hook.
    security: schema.security ?? [],
  };
}

/**
 * A route that needs a session: documents its schemes (bearer token or session cookie) and the 401 that any
 * request of it may get (no, expired or revoked token).
 */
export function authenticatedRoute(route: { schema?: FastifySchema }): void {
  const schema = route.schema as FastifySchema | undefined;
  if (schema === undefined) return;
  const response: Record<string, unknown> = { ...(schema.response as Record<string, unknown> | undefined) };
  response[401] ??= problemResponse();
  route.schema = { ...schema, response, security: [{ bearerAuth: [] }, { cookieAuth: [] }] };
}

/** `GET /api/v1/scripts/:id/logs` → `getScriptsByIdLogs`: stable, unique per route. */
function operationId(method: string | string[], url: string): string {
  const words = url
    .replace(/^\/api\/v\d+/, '')
    .split('/')
    .filter(Boolean)
    .map((part) => (part.startsWith(':') ? `by-${part.slice(1)}` : part))
    .flatMap((part) => part.split(/[^A-Za-z0-9]+/))
    .filter(Boolean);
  const verb = [method].flat()[0]?.toLowerCase() ?? 'get';
  return verb + words.map((w) => w[0]?.toUpperCase() + w.slice(1)).join('');
}

export const IdParams = Type.Object(
  { id: Type.Integer({ format: 'int64', minimum: 1, maximum: 2 ** 53 - 1 }) },
  {
    additionalProperties: false,
  },
);

export const PageQuery = {
  page: Type.Optional(Type.Integer({ format: 'int32', minimum: 1, maximum: 1_000_000, default: 1 })),
  per_page: Type.Optional(Type.Integer({ format: 'int32', minimum: 1, maximum: 100, default: 20 })),
};

export const CursorQuery = {
  cursor: Type.Optional(
    Type.String({
      maxLength: 512,
      description: 'keyset pagination: empty for the first page, then the previous next_cursor',
    }),
  ),
};

export const NoContent = Type.Null({ description: 'no content' });

export const SHARED_SCHEMAS = [FieldError, Problem];
