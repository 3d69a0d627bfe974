/**
 * The Fastify application: `build()` wires plugins and routes around an
 * AppContext and returns the app without listening (tests use `inject`;
 * src/main.ts listens). Health, docs and metrics live at the root, the API under
 * /api/v1.
 */
import { randomUUID } from 'node:crypto';
import cookie from '@fastify/cookie';
import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import underPressure from '@fastify/under-pressure';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import { corsOrigins, type TrustProxy } from '../config.ts';
import type { AppContext } from './context.ts';
import { handleError, installErrorHandlers, problem } from './errors.ts';
import type { FollowLimits } from './followers.ts';
import { installGracefulClose } from './graceful-close.ts';
import { authPlugin } from './plugins/auth.ts';
import { metricsPlugin } from './plugins/metrics.ts';
import { readScopePlugin } from './plugins/read-scope.ts';
import { securityHeaders, staticHeaders } from './plugins/security-headers.ts';
import { answerUnderPressure } from './pressure.ts';
import { sharedRateLimitStore } from './rate-limit-store.ts';
import { requestLoggerFactory } from './request-logger.ts';
import { authRoutes } from './routes/auth.ts';
import { executionRoutes } from './routes/execution.ts';
import { healthRoutes } from './routes/health.ts';
import { meRoutes } from './routes/me.ts';
import { scheduleRoutes } from './routes/schedules.ts';
import { scriptRoutes } from './routes/scripts.ts';
import { STATS_SCHEMAS, statsRoutes } from './routes/stats.ts';
import { userRoutes } from './routes/users.ts';
import { authenticatedRoute, completeResponses, SHARED_SCHEMAS } from './schemas/common.ts';
import { RUN_SCHEMAS } from './schemas/run.ts';
import { SCHEDULE_SCHEMAS } from './schemas/schedule.ts';
import { SCRIPT_SCHEMAS } from './schemas/script.ts';
import { USER_SCHEMAS } from './schemas/user.ts';
import { CSRF_HEADER, SESSION_COOKIE } from './session-cookies.ts';
import { refuseUnexpectedBody, validatorCompiler } from './validation.ts';

export interface BuildOptions {
  ctx: AppContext;
  logger: Logger;
  /** The pool's activity counter (see Database), for readiness. */
  activity?: { inFlight: number };
  /**
   * The proxies whose X-Forwarded-For is believed (a hop count or their addresses),
   * so rate limits see the client; never `true`, which lets a client pick its address.
   */
  trustProxy?: TrustProxy;
  /** Limits on open log streams; by default derived from the configuration (followers.ts). */
  followLimits?: FollowLimits;
  /**
   * How long after the app is ready a busy event loop does not shed load (by default two
   * sample windows): the first window measures start-up (schema compilation, the routes),
   * not requests, and shedding on it refused a freshly started process's first requests.
   */
  sheddingWarmUpMs?: number;
}

/** Load shedding's sample window (@fastify/under-pressure's `sampleInterval`). */
const PRESSURE_SAMPLE_MS = 1000;
/** under-pressure's names of the event loop's pressures, which start-up also causes. */
const LOOP_PRESSURE = new Set(['eventLoopDelay', 'eventLoopUtilization']);

/**
 * Routes load shedding never refuses: liveness and metrics must answer when the
 * process is busiest, or an orchestrator restarts a healthy process for being loaded.
 */
const NEVER_SHED = new Set(['/health', '/metrics']);

/**
 * Relative: the document describes whichever deployment serves it. `x-internal` is the
 * OWASP ruleset's inventory marker (API9): this API is meant for outside clients.
 */
const SERVERS = [
  {
    url: '/',
    description: 'the deployment serving this document (production, staging or local)',
    'x-internal': false,
  },
];

/** Trust the `hops` nearest hops: the last `hops` addresses of X-Forwarded-For are proxies. */
function hopsTrusted(hops: number): (address: string, hop: number) => boolean {
  return (_address, hop) => hop < hops;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/** Where the API documents (Swagger UI, the OpenAPI document) are served. */
const DOCS_PREFIX = '/docs';

/**
 * The security headers of the API's answers (plugins/security-headers.ts): a policy that
 * allows nothing, no framing, nosniff, HSTS, Cross-Origin-Resource-Policy, and nothing
 * stored; helmet's headers for HTML documents are off.
 */
const API_HEADERS = {
  ...staticHeaders({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] },
    },
    xFrameOptions: { action: 'deny' },
    crossOriginOpenerPolicy: false,
    originAgentCluster: false,
    referrerPolicy: false,
    xDnsPrefetchControl: false,
    xDownloadOptions: false,
    xPermittedCrossDomainPolicies: false,
    xXssProtection: false,
  }),
  'cache-control': 'no-store',
};

export async function build(options: BuildOptions): Promise<FastifyInstance> {
  const { ctx } = options;
  const app = Fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    // Each request's pino child is made when the request first logs (request-logger.ts).
    childLoggerFactory: requestLoggerFactory,
    // A well-formed X-Request-Id from a proxy is kept, so one id follows a request across services.
    genReqId: (req) => {
      const header = req.headers['x-request-id'];
      return typeof header === 'string' && REQUEST_ID.test(header) ? header : randomUUID();
    },
    requestIdHeader: false,
    logController: new LogController({ requestIdLogLabel: 'request_id' }),
    // A hop count as the function Fastify makes of one (its types take no number).
    trustProxy:
      typeof options.trustProxy === 'number'
        ? hopsTrusted(options.trustProxy)
        : (options.trustProxy ?? false),
    bodyLimit: 1024 * 1024,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // Answered as a problem by the onRequest hook below, not with Fastify's plain JSON.
    return503OnClosing: false,
    // Malformed URLs are refused before routing, outside setErrorHandler and every hook: answer
    // them as problems too, with the headers the hooks give every other answer.
    frameworkErrors: (error, request, reply) =>
      handleError(error, request, reply.headers(API_HEADERS).header('x-request-id', request.id)),
  }).withTypeProvider<TypeBoxTypeProvider>();

  installErrorHandlers(app);
  // First of the onRequest hooks: every answer has the security headers, even one that a
  // later hook gives at once (shutting down, load shedding, authentication). Before the
  // documents' routes, which it sees being added. Swagger UI (staticCSP) sets its own CSP.
  await app.register(securityHeaders, {
    api: API_HEADERS,
    documents: { prefix: DOCS_PREFIX, headers: staticHeaders({}) },
  });
  // While closing, in-flight requests finish; a request that still arrives (on a kept-alive
  // connection) is refused, and its connection closed, so the client retries elsewhere; idle
  // connections are closed once nothing unread is left on them (graceful-close.ts).
  installGracefulClose(app);
  // Before any route: every documented route lists the failures any request may meet.
  app.addHook('onRoute', completeResponses);
  app.addHook('onRoute', refuseUnexpectedBody);
  app.addHook('onSend', (request, reply, payload, done) => {
    reply.header('x-request-id', request.id);
    done(null, payload);
  });
  const schemas = [
    ...SHARED_SCHEMAS,
    ...USER_SCHEMAS,
    ...SCRIPT_SCHEMAS,
    ...RUN_SCHEMAS,
    ...SCHEDULE_SCHEMAS,
    ...STATS_SCHEMAS,
  ];
  for (const schema of schemas) app.addSchema(schema);
  // Fastify's default Ajv coerces JSON bodies and strips unknown properties silently; ours does neither.
  app.setValidatorCompiler(validatorCompiler(schemas));

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'DollarClub API',
        version: '1.0.0',
        description: 'Accounts, trading-strategy scripts, their runs, and platform statistics.',
      },
      // Relative: the document describes whichever host serves it.
      servers: SERVERS,
      tags: [
        { name: 'health', description: 'liveness and readiness' },
        { name: 'auth', description: 'registration, sign-in and sessions' },
        { name: 'me', description: 'the signed-in user and its IBKR link' },
        { name: 'users', description: 'accounts (admin, or the user itself)' },
        { name: 'scripts', description: 'uploaded trading-strategy scripts' },
        { name: 'runs', description: 'executions of scripts, their output and outcome' },
        { name: 'schedules', description: 'cron schedules that queue runs' },
        { name: 'stats', description: 'platform statistics (admin)' },
      ],
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer' },
          cookieAuth: {
            type: 'apiKey',
            in: 'cookie',
            name: SESSION_COOKIE,
            description:
              'browser session (`cookie: true`); POST, PUT, PATCH and DELETE also need X-CSRF-Token',
          },
        },
      },
    },
    // Named components (User, Script, Problem, ...) instead of def-0, def-1.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });
  await app.register(swaggerUi, { routePrefix: DOCS_PREFIX, staticCSP: true });
  // Not before the first sample window that starts after the app is ready (see sheddingWarmUpMs);
  // every pressure handler asks (answerUnderPressure).
  let shedsFrom = Number.POSITIVE_INFINITY;
  app.addHook('onReady', (done) => {
    shedsFrom = performance.now() + (options.sheddingWarmUpMs ?? 2 * PRESSURE_SAMPLE_MS);
    done();
  });
  app.decorate('sheddingWarmsUp', (type: string) => LOOP_PRESSURE.has(type) && performance.now() < shedsFrom);
  await app.register(underPressure, {
    // Delay, not utilisation, by default: a process serving as fast as it can is busy all the
    // time (utilisation ~1) without being late, and shedding on that answered cheap 503s as
    // fast as clients asked again, which kept it busy: with 16 connections, no request at all
    // was served (bench/http.ts). The loop's delay grows only when work queues up. A window
    // without any delay sample (the loop stalled for all of it) counts as an infinite delay.
    maxEventLoopDelay: ctx.config.MAX_EVENT_LOOP_DELAY_MS,
    maxEventLoopUtilization: ctx.config.MAX_EVENT_LOOP_UTILIZATION,
    // The last window's utilisation, when it is used: the default ('cumulative') averages
    // since start-up, so a busy start shed the first requests, and an overload after a quiet
    // hour went unnoticed for as long.
    eventLoopUtilizationMode: 'interval',
    sampleInterval: PRESSURE_SAMPLE_MS,
    retryAfter: 5,
    pressureHandler: answerUnderPressure((request, reply, type) => {
      if (NEVER_SHED.has(request.routeOptions.url ?? '')) return undefined;
      request.log.warn({ type }, 'under pressure: refusing a request');
      reply.code(503).header('retry-after', '5').type('application/problem+json');
      return problem(503, 'SERVER_OVERLOADED', 'the server is overloaded; try again shortly', {
        request_id: request.id,
      });
    }),
  });
  await registerCors(app, corsOrigins(ctx.config));
  await app.register(cookie, { hook: 'onRequest' });
  // Counters in PostgreSQL: shared by every API process.
  await app.register(rateLimit, { global: false, store: sharedRateLimitStore(ctx.rateLimits) });
  await app.register(metricsPlugin, { ctx });
  await app.register(authPlugin, { auth: ctx.auth });
  await app.register(readScopePlugin, { router: ctx.readRouter });

  await app.register(healthRoutes, { ctx, activity: options.activity });
  await app.register(
    async (api) => {
      await api.register(authRoutes, { ctx, prefix: '/auth' });
      await api.register(async (secured) => {
        secured.addHook('onRoute', authenticatedRoute);
        secured.addHook('onRequest', secured.authenticate);
        await secured.register(meRoutes, { ctx });
        await secured.register(userRoutes, { ctx });
        await secured.register(scriptRoutes, { ctx });
        await secured.register(executionRoutes, { ctx, followLimits: options.followLimits });
        await secured.register(statsRoutes, { ctx });
        await secured.register(scheduleRoutes, { ctx });
      });
    },
    { prefix: '/api/v1' },
  );
  return app;
}

/** Headers a browser script of an allowed origin may read. */
const EXPOSED_HEADERS = ['x-request-id', 'location', 'retry-after', 'content-disposition'];
const PREFLIGHT_MAX_AGE_SECONDS = 600;

/**
 * CORS for the origins of CORS_ORIGINS only, with credentials (cookies): an allowed
 * origin is echoed with Access-Control-Allow-Credentials; any other origin, and a
 * request without one, gets no CORS header at all (its preflight a 404). With no
 * origins listed, CORS is not installed.
 */
async function registerCors(app: FastifyInstance, origins: string[]): Promise<void> {
  if (origins.length === 0) return;
  const allowed = new Set(origins);
  await app.register(cors, {
    origin: (origin, callback) =>
      callback(null, origin !== undefined && allowed.has(origin) ? origin : false),
    credentials: true,
    methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
    allowedHeaders: ['authorization', 'content-type', CSRF_HEADER, 'x-request-id', 'last-event-id'],
    exposedHeaders: EXPOSED_HEADERS,
    maxAge: PREFLIGHT_MAX_AGE_SECONDS,
    hideOptionsRoute: true,
  });
  // A log stream is a hijacked response that writes its own head, so headers kept by Fastify
  // never reach it: log-stream.ts copies the CORS headers to the raw response when it hijacks.
}
