/**
 * Request validation: two Ajv instances instead of Fastify's one.
 * - JSON bodies are validated as sent: no type coercion (`{"password": 12345678}`
 *   is a number, not a password), no silent removal of unknown properties (400).
 * - Query strings and path parameters are text, so they are coerced to the
 *   schema's types ("20" → 20, "true" → true, a lone value → an array).
 * Both refuse what Ajv lets through but a JS value cannot be: a date-time JS cannot
 * read (a leap second, `23:59:60Z`), and a number coerced to Infinity ("1e400"),
 * which skips minimum/maximum (ajv-validator/ajv#2212, fastify/fastify#6718).
 */
import { Ajv, type ErrorObject, type Options, type ValidateFunction } from 'ajv';
import formats from 'ajv-formats';
import type { FastifyRequest, FastifySchema, FastifySchemaCompiler, RouteOptions } from 'fastify';
import { ValidationError } from '../domain/errors.ts';
import { readsBody } from './schemas/common.ts';

const BASE: Options = {
  useDefaults: true,
  removeAdditional: false,
  addUsedSchema: false,
  // allErrors would let one request make the validator do unbounded work.
  allErrors: false,
};

function createAjv(options: Options, schemas: readonly object[]): Ajv {
  const ajv = new Ajv({ ...BASE, ...options });
  // ajv-formats is CommonJS with a `default` export; under NodeNext its callable is that property.
  (formats as unknown as { default: (ajv: Ajv) => void }).default(ajv);
  const dateTime = ajv.formats['date-time'] as { validate: (value: string) => boolean };
  ajv.addFormat('date-time', {
    type: 'string',
    validate: (value: string) => dateTime.validate(value) && !Number.isNaN(Date.parse(value)),
  });
  // TypeBox's metadata keywords, which Ajv's strict mode would otherwise refuse.
  ajv.addKeyword('kind').addKeyword('modifier');
  for (const schema of schemas) ajv.addSchema(schema);
  return ajv;
}

/** A Fastify validator compiler over the given shared ($id) schemas. */
export function validatorCompiler(schemas: readonly object[]): FastifySchemaCompiler<FastifySchema> {
  const strict = createAjv({ coerceTypes: false }, schemas);
  const coercing = createAjv({ coerceTypes: 'array' }, schemas);
  return ({ schema, httpPart }) => {
    const validate = (httpPart === 'body' ? strict : coercing).compile(schema as object);
    return httpPart === 'body' ? validate : finiteOnly(validate);
  };
}

/** Wraps a coercing validator so that a number coerced to ±Infinity is an error. */
function finiteOnly(validate: ValidateFunction): ValidateFunction {
  const wrapped = ((data: unknown) => {
    if (!validate(data)) {
      wrapped.errors = validate.errors;
      return false;
    }
    const path = nonFinitePath(data);
    wrapped.errors =
      path === null
        ? null
        : [
            {
              instancePath: path,
              schemaPath: '',
              keyword: 'finite',
              params: {},
              message: 'must be a finite number',
            } as ErrorObject,
          ];
    return path === null;
  }) as ValidateFunction;
  return wrapped;
}

/** The JSON pointer of the first non-finite number in a value, or null. */
function nonFinitePath(value: unknown, path = ''): string | null {
  if (typeof value === 'number') return Number.isFinite(value) ? null : path;
  if (value === null || typeof value !== 'object') return null;
  for (const [key, item] of Object.entries(value)) {
    const found = nonFinitePath(item, `${path}/${key}`);
    if (found !== null) return found;
  }
  return null;
}

function isEmptyObject(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    !Buffer.isBuffer(value) &&
    Object.keys(value).length === 0
  );
}

/**
 * An onRoute hook: a route that reads bodies but declares none (execute, cancel,
 * logout, the deletes) refuses a body with 400 VALIDATION_FAILED instead of ignoring
 * it, as every other unknown property is refused. No body, or `{}`, is fine.
 */
export function refuseUnexpectedBody(route: RouteOptions): void {
  if (route.schema?.body !== undefined) return;
  if (!readsBody(route.method)) return;
  const refuse = async (request: FastifyRequest) => {
    const { body } = request;
    if (body === undefined || body === null || isEmptyObject(body)) return;
    throw ValidationError.field('', 'this route takes no request body');
  };
  route.preValidation = [route.preValidation ?? []].flat().concat(refuse);
}
