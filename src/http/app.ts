/**
 * The Fastify application: `build()` wires plugins and routes around an
 * AppContext and returns the app without listening (tests use `inject`;
 * src/main.ts listens). Health, docs and metrics live at the root, the API under
 * /api/v1.
 */
import { randomUUID } from 'node:crypto';
import helmet from '@fastify/helmet';
import multipart from '@fastify/multipart';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import underPressure from '@fastify/under-pressure';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import { ValidationError } from '../domain/errors.js';
import type { AppContext } from './context.js';
import { handleError, installErrorHandlers, problem, sendProblem } from './errors.js';
import { authPlugin } from './plugins/auth.js';
import { metricsPlugin } from './plugins/metrics.js';
import { authRoutes } from './routes/auth.js';
import { executionRoutes } from './routes/execution.js';
import { healthRoutes } from './routes/health.js';
import { meRoutes } from './routes/me.js';
import { scriptRoutes } from './routes/scripts.js';
import { STATS_SCHEMAS, statsRoutes } from './routes/stats.js';
import { userRoutes } from './routes/users.js';
import { SHARED_SCHEMAS } from './schemas/common.js';
import { SCRIPT_SCHEMAS } from './schemas/script.js';
import { USER_SCHEMAS } from './schemas/user.js';

export interface BuildOptions {
  ctx: AppContext;
  logger: Logger;
  /** The pool's activity counter (see Database), for readiness. */
  activity?: { inFlight: number };
  /** Trust X-Forwarded-For (behind a reverse proxy), so rate limits see the client. */
  trustProxy?: boolean;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

export async function build(options: BuildOptions): Promise<FastifyInstance> {
  const { ctx } = options;
  const app = Fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    // A well-formed X-Request-Id from a proxy is kept, so one id follows a request across services.
    genReqId: (req) => {
      const header = req.headers['x-request-id'];
      return typeof header === 'string' && REQUEST_ID.test(header) ? header : randomUUID();
    },
    requestIdHeader: false,
    logController: new LogController({ requestIdLogLabel: 'request_id' }),
    trustProxy: options.trustProxy ?? false,
    bodyLimit: 1024 * 1024,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
    // Malformed URLs are refused before routing, outside setErrorHandler: answer them as problems too.
    frameworkErrors: handleError,
    // Fastify's default Ajv strips unknown properties and says nothing; we refuse them (400).
    ajv: {
      customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false },
      // ajv-formats accepts a leap second (`23:59:60Z`) as a date-time, but a JS Date cannot hold it
      // (Invalid Date, a 500 once it reaches the driver): such a value is invalid input.
      onCreate: (ajv) => {
        const dateTime = ajv.formats['date-time'] as { validate: (value: string) => boolean };
        ajv.addFormat('date-time', {
          type: 'string',
          validate: (value: string) => dateTime.validate(value) && !Number.isNaN(Date.parse(value)),
        });
      },
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  installErrorHandlers(app);
  // Ajv coerces "Infinity" and "1e400" to Infinity and then skips minimum/maximum
  // (ajv-validator/ajv#2212, fastify/fastify#6718): refuse what the validators let through.
  app.addHook('preHandler', async (request) => {
    for (const [part, value] of [
      ['querystring', request.query],
      ['params', request.params],
      ['body', request.body],
    ] as const) {
      const path = nonFinitePath(value);
      if (path !== null) throw ValidationError.field(`/${part}${path}`, 'must be a finite number');
    }
  });
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  for (const schema of [...SHARED_SCHEMAS, ...USER_SCHEMAS, ...SCRIPT_SCHEMAS, ...STATS_SCHEMAS])
    app.addSchema(schema);

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'DollarClub API',
        version: '1.0.0',
        description: 'Accounts, trading-strategy scripts, their runs, and platform statistics.',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } } },
    },
    // Named components (User, Script, Problem, ...) instead of def-0, def-1.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true });
  await app.register(helmet, {
    contentSecurityPolicy: {
      directives: {
        defaultSrc: ["'self'"],
        imgSrc: ["'self'", 'data:', 'validator.swagger.io'],
        scriptSrc: ["'self'", ...app.swaggerCSP.script],
        styleSrc: ["'self'", 'https:', ...app.swaggerCSP.style],
      },
    },
  });
  await app.register(underPressure, {
    // Generous by default: start-up (module compilation) alone can stall a busy 2-core machine for seconds.
    maxEventLoopDelay: ctx.config.MAX_EVENT_LOOP_DELAY_MS,
    retryAfter: 5,
    pressureHandler: (request, reply, type) => {
      request.log.warn({ type }, 'under pressure: refusing a request');
      void sendProblem(
        reply.header('retry-after', '5'),
        problem(503, 'SERVER_OVERLOADED', 'the server is overloaded; try again shortly', {
          request_id: request.id,
        }),
      );
    },
  });
  await app.register(rateLimit, { global: false });
  await app.register(multipart, {
    limits: { fileSize: ctx.config.MAX_UPLOAD_BYTES, files: 1, fields: 0, parts: 1 },
  });
  await app.register(metricsPlugin, { ctx });
  await app.register(authPlugin, { auth: ctx.auth });

  await app.register(healthRoutes, { ctx, activity: options.activity });
  await app.register(
    async (api) => {
      await api.register(authRoutes, { ctx, prefix: '/auth' });
      await api.register(async (secured) => {
        secured.addHook('onRoute', (route) => {
          route.schema = { ...route.schema, security: [{ bearerAuth: [] }] };
        });
        secured.addHook('onRequest', secured.authenticate);
        await secured.register(meRoutes, { ctx });
        await secured.register(userRoutes, { ctx });
        await secured.register(scriptRoutes, { ctx });
        await secured.register(executionRoutes, { ctx });
        await secured.register(statsRoutes, { ctx });
      });
    },
    { prefix: '/api/v1' },
  );
  return app;
}

/** The JSON pointer of the first non-finite number in a validated request part, or null. */
function nonFinitePath(value: unknown, path = ''): string | null {
  if (typeof value === 'number') return Number.isFinite(value) ? null : path;
  if (value === null || typeof value !== 'object') return null;
  for (const [key, item] of Object.entries(value)) {
    const found = nonFinitePath(item, `${path}/${key}`);
    if (found !== null) return found;
  }
  return null;
}
