/**
 * Scripts: upload, list, read, download, delete. A user reaches only its own
 * scripts (someone else's id is a 404); admins reach all.
 * Execution routes (execute, cancel, logs, running) are in execution.ts.
 */

import type { Readable } from 'node:stream';
import multipart from '@fastify/multipart';
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import contentDisposition from 'content-disposition';
import { ValidationError } from '../../domain/errors.ts';
import { pageBody } from '../../domain/paging.ts';
import { SCRIPT_SORTS } from '../../domain/script.ts';
import type { RouteOptions } from '../context.ts';
import { ownerScope, principalOf } from '../plugins/auth.ts';
import { CursorQuery, IdParams, NoContent, PageQuery, problems } from '../schemas/common.ts';
import { Script, ScriptOwner, ScriptStatus } from '../schemas/script.ts';

const ScriptPage = Type.Union([
  Type.Object(
    {
      scripts: Type.Array(Type.Ref(Script)),
      total: Type.Integer(),
      page: Type.Integer(),
      per_page: Type.Integer(),
      pages: Type.Integer(),
    },
    { additionalProperties: false, title: 'offset page' },
  ),
  Type.Object(
    { scripts: Type.Array(Type.Ref(Script)), next_cursor: Type.Union([Type.String(), Type.Null()]) },
    { additionalProperties: false, title: 'cursor page' },
  ),
]);

const ScriptWithOwner = Type.Object(
  { ...Script.properties, user: Type.Ref(ScriptOwner) },
  { additionalProperties: false },
);

export const scriptRoutes: FastifyPluginAsyncTypebox<RouteOptions> = async (app, { ctx }) => {
  // The multipart parser (and its hooks: one on every request, one on every response)
  // only where a multipart body is read; elsewhere a multipart body is a 415.
  await app.register(uploadRoute, { ctx });
  app.get(
    '/scripts',
    {
      schema: {
        tags: ['scripts'],
        summary: 'Own scripts, newest first; admins may ask for one user (`user_id`) or everyone (`all`)',
        querystring: Type.Object(
          {
            ...PageQuery,
            ...CursorQuery,
            status: Type.Optional(Type.Ref(ScriptStatus)),
            min_execution_time: Type.Optional(Type.Number({ minimum: 0, maximum: 1e7 })),
            created_since: Type.Optional(Type.String({ format: 'date-time', maxLength: 64 })),
            sort: Type.Optional(
              Type.Union(
                SCRIPT_SORTS.map((s) => Type.Literal(s)),
                { default: '-created_at' },
              ),
            ),
            user_id: Type.Optional(Type.Integer({ format: 'int64', minimum: 1, maximum: 2 ** 53 - 1 })),
            all: Type.Optional(Type.Boolean()),
          },
          { additionalProperties: false },
        ),
        response: { 200: ScriptPage, ...problems(400, 401, 403, 503) },
      },
    },
    async (request) => {
      const { created_since, ...rest } = request.query;
      const page = await ctx.scripts.list(principalOf(request), {
        ...rest,
        created_since: created_since === undefined ? undefined : new Date(created_since),
      });
      return pageBody('scripts', page);
    },
  );

  app.get(
    '/scripts/recent',
    {
      // Before validation: a user learns nothing of an admin route's input rules.
      onRequest: app.requireAdmin,
      schema: {
        tags: ['scripts'],
        summary: 'Scripts of the last `days`, newest first, each with its owner (admin)',
        querystring: Type.Object(
          {
            days: Type.Optional(Type.Integer({ format: 'int32', minimum: 1, maximum: 3650, default: 7 })),
            limit: Type.Optional(Type.Integer({ format: 'int32', minimum: 1, maximum: 1000, default: 100 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ scripts: Type.Array(ScriptWithOwner) }, { additionalProperties: false }),
          ...problems(400, 401, 403, 503),
        },
      },
    },
    async (request) => ({ scripts: await ctx.scripts.listRecent(request.query) }),
  );

  app.get(
    '/scripts/:id',
    {
      schema: {
        tags: ['scripts'],
        summary: 'One script',
        params: IdParams,
        response: { 200: Type.Ref(Script), ...problems(400, 401, 404, 503) },
      },
    },
    async (request) => ctx.scripts.get(principalOf(request), request.params.id),
  );

  app.patch(
    '/scripts/:id',
    {
      schema: {
        tags: ['scripts'],
        summary: "Whether the script's runs get the owner's IBKR credentials",
        description:
          'With `ibkr_access: true`, each run of the script started while the owner has a linked ' +
          'IBKR account gets IBKR_USER_ID, IBKR_ACCESS_TOKEN, IBKR_REFRESH_TOKEN and ' +
          "IBKR_TOKEN_EXPIRES_AT in its environment (read when the run starts). Only the script's " +
          'owner may turn it on.',
        params: IdParams,
        body: Type.Object({ ibkr_access: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
        response: { 200: Type.Ref(Script), ...problems(400, 401, 403, 404, 503) },
      },
    },
    async (request) => {
      const script = await ctx.scripts.update(principalOf(request), request.params.id, request.body);
      request.log.info({ script_id: script.id, ibkr_access: script.ibkr_access }, 'script updated');
      return script;
    },
  );

  app.get(
    '/scripts/:id/content',
    {
      schema: {
        tags: ['scripts'],
        summary: 'The uploaded file, as an attachment under its original name',
        params: IdParams,
        produces: ['application/octet-stream'],
        response: {
          200: Type.Unsafe<Readable>({ type: 'string', format: 'binary', description: 'the file' }),
          ...problems(400, 401, 404, 503),
        },
      },
    },
    async (request, reply) => {
      const file = await ctx.scripts.content(request.params.id, ownerScope(request));
      return reply
        .type('application/octet-stream')
        .header('content-disposition', contentDisposition(file.filename))
        .header('content-length', file.size)
        .send(file.stream);
    },
  );

  app.delete(
    '/scripts/:id',
    {
      schema: {
        tags: ['scripts'],
        summary: 'Delete a script and its file; refused while it is queued or running',
        params: IdParams,
        response: { 204: NoContent, ...problems(400, 401, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      await ctx.scripts.delete(request.params.id, ownerScope(request));
      request.log.info({ script_id: request.params.id }, 'script deleted');
      return reply.code(204).send(null);
    },
  );
};

/** POST /scripts, in a scope of its own with the multipart parser. */
const uploadRoute: FastifyPluginAsyncTypebox<RouteOptions> = async (app, { ctx }) => {
  await app.register(multipart, {
    limits: { fileSize: ctx.config.MAX_UPLOAD_BYTES, files: 1, fields: 0, parts: 1 },
  });
  app.post(
    '/scripts',
    {
      // The body is a multipart stream read by the handler; its schema is documentation only.
      validatorCompiler: () => () => true,
      // Per account (the caller is authenticated by then: instance hooks run before this
      // route's), counted in PostgreSQL so every API process shares the limit.
      config: {
        rateLimit: {
          max: ctx.config.UPLOAD_RATE_LIMIT_MAX,
          timeWindow: ctx.config.UPLOAD_RATE_LIMIT_WINDOW_SECONDS * 1000,
          keyGenerator: (request) => `user:${principalOf(request).user_id}`,
        },
      },
      schema: {
        tags: ['scripts'],
        summary: 'Upload a script (.py, .js or .ts) as the multipart field `file`',
        description:
          `At most ${ctx.config.MAX_UPLOAD_BYTES} bytes per script (413 PAYLOAD_TOO_LARGE). An account ` +
          `keeps at most ${ctx.config.MAX_SCRIPTS_PER_USER} scripts (409 SCRIPT_QUOTA_EXCEEDED) of at most ` +
          `${ctx.config.MAX_STORAGE_BYTES_PER_USER} bytes together (413 STORAGE_QUOTA_EXCEEDED); deleting ` +
          `scripts frees both. At most ${ctx.config.UPLOAD_RATE_LIMIT_MAX} uploads per ` +
          `${ctx.config.UPLOAD_RATE_LIMIT_WINDOW_SECONDS} s per account (429 RATE_LIMITED, with Retry-After).`,
        consumes: ['multipart/form-data'],
        body: Type.Object({
          file: Type.String({ format: 'binary', maxLength: ctx.config.MAX_UPLOAD_BYTES }),
        }),
        response: { 201: Type.Ref(Script), ...problems(400, 401, 409, 413, 415, 429, 503) },
      },
    },
    async (request, reply) => {
      const part = await request
        .file({
          limits: { fileSize: ctx.config.MAX_UPLOAD_BYTES, files: 1, fields: 0, parts: 1, headerPairs: 100 },
        })
        .catch((error: Error & { statusCode?: number; code?: string }) => {
          // A text field where the file should be is a bad request, not a too large one.
          if (error.code === 'FST_FIELDS_LIMIT' || error.code === 'FST_PARTS_LIMIT')
            throw ValidationError.field(
              '/file',
              'the body must hold one part: the file `file`',
              'FILE_REQUIRED',
            );
          // The multipart parser's own errors carry no status: they describe a malformed body.
          if (error.statusCode !== undefined) throw error;
          throw ValidationError.field('/file', 'the body is not valid multipart data', 'MALFORMED_UPLOAD');
        });
      if (part === undefined) throw ValidationError.field('/file', 'a file is required', 'FILE_REQUIRED');
      if (part.fieldname !== 'file') {
        part.file.resume();
        throw ValidationError.field(
          `/${part.fieldname.slice(0, 50)}`,
          'the file must be sent as the field `file`',
        );
      }
      const script = await ctx.scripts.upload(principalOf(request).user_id, {
        filename: part.filename,
        stream: part.file,
      });
      request.log.info({ script_id: script.id, size: script.file_size }, 'script uploaded');
      return reply.code(201).send(script);
    },
  );
};
