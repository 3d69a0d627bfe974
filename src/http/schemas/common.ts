/**
 * Schemas shared by every resource. Shared objects carry an `$id`, are added to
 * the app once (see app.ts) and referenced with Type.Ref, so the OpenAPI document
 * has named components instead of copies.
 */
import { type Static, type TSchema, Type } from '@sinclair/typebox';

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

/** The error answers of a route: each status maps to the Problem schema. */
export function problems<const S extends readonly number[]>(...statuses: S) {
  const ref = Type.Ref(Problem);
  return Object.fromEntries(statuses.map((s) => [s, ref])) as { [K in S[number]]: typeof ref };
}

export const IdParams = Type.Object(
  { id: Type.Integer({ minimum: 1, maximum: 2 ** 53 - 1 }) },
  {
    additionalProperties: false,
  },
);

export const PageQuery = {
  page: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, default: 1 })),
  per_page: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
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
